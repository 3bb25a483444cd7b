"""The adapter's typed commands (sipconf.sip.commands): one per Engine method, each with a
handler, dispatched by type; and production code never imports the offline mixer harness."""

import ast
import inspect
import pathlib
from dataclasses import FrozenInstanceError, fields, is_dataclass
from typing import get_args

import pytest

from sipconf.engine import Engine
from sipconf.sip import commands
from sipconf.sip.engine import SipEngine

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_every_command_is_frozen_and_handled():
    kinds = get_args(commands.Command)
    assert set(kinds) == set(commands.HANDLERS)
    for kind in kinds:
        assert is_dataclass(kind)
        cmd = kind(*[None] * len(fields(kind)))
        with pytest.raises(FrozenInstanceError):
            setattr(cmd, fields(kind)[0].name, 1)
    assert commands.Stop not in commands.HANDLERS  # the loop ends on it, it has no answer


def test_each_engine_method_has_its_command():
    methods = {n for n, _ in inspect.getmembers(Engine, inspect.isfunction)
               if not n.startswith("_")} - {"start", "stop", "housekeeping", "health"}
    names = {commands.name(kind(*[None] * len(fields(kind))))
             for kind in get_args(commands.Command)}
    assert names == methods
    for m in methods:  # the adapter keeps the Protocol's signatures
        assert inspect.signature(getattr(SipEngine, m)) == inspect.signature(getattr(Engine, m))


def test_execute_dispatches_by_type():
    seen = []

    class Thread:  # only what _stop_room_sound / _play_to_room touch
        class media:  # noqa: N801
            @staticmethod
            def stop_room_sound(sound_id):
                seen.append(("stop", sound_id))
                return True

            @staticmethod
            def play_to_room(key, clip, loops):
                seen.append(("play", key, clip, loops))
                return 7

    assert commands.execute(Thread, commands.StopRoomSound(3)) is True
    assert commands.execute(Thread, commands.PlayToRoom("r", "clip", 2)) == 7
    assert seen == [("stop", 3), ("play", "r", "clip", 2)]


def test_production_code_never_imports_the_mixer_test_harness():
    offenders = []
    for path in (ROOT / "sipconf").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = []
            if isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            if any(m == "mixer_ext.mixer" for m in mods):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_volume_in_db_becomes_the_mixers_q12_gain():
    from sipconf.sip.media import q12

    assert q12(0) == 4096
    assert q12(-6.0206) == 2048
    assert abs(q12(-12) - 4096 * 10 ** (-12 / 20)) <= 0.5
    assert q12(12) == round(4096 * 10 ** 0.6) and q12(12) < 32768
    assert q12(-200) == 0
