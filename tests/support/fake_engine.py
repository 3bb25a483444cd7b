"""A stand-in for the pjsua2 adapter (``sipconf.sip.engine.SipEngine``): the
:class:`sipconf.engine.Engine` Protocol in plain trio, with no SIP, RTP or mixer.

It records every command the node gives it (``engine.log``), keeps each call's state the way the
real engine does (answered, ended, its room, its overlay sound, the digits relayed to it), answers
False / None for calls and rooms that are gone, and lets a test act as the callers:
``incoming`` (an INVITE), ``hang_up`` (the caller's BYE), ``digit`` (a key press).

Faults can be injected: ``engine.fail("answer", when=lambda uuid, code, *a: code == 200)`` makes
that command raise (once, or ``times=N``), to test the node's supervision.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio

from sipconf.engine import CallEnded, DialProgress, Dtmf, Floor, IncomingCall, MediaUp


class InjectedFault(RuntimeError):
    """What an injected engine failure raises (a bug in the engine, as the node sees it)."""


@dataclass
class FakeCall:
    uuid: str
    to_user: str
    from_uri: str
    responses: list[tuple[int, str, str]] = field(default_factory=list)  # (code, reason, warning)
    answered: bool = False  # 200 sent
    final: int | None = None  # the INVITE's final response code (200 or an error), if any
    ended: bool = False
    ended_by: str = ""  # "node" (hangup / error answer) or "caller" (BYE)
    hangup: tuple[int, str] | None = None  # the node's hangup(code, reason)
    room: str | None = None
    muted: bool = False
    deaf: bool = False
    overlay: tuple[Any, int] | None = None  # (clip, loops) played to this caller alone
    played: list[tuple[float, int]] = field(default_factory=list)  # (seconds, loops)
    digits_sent: list[tuple[str, bool]] = field(default_factory=list)
    outbound: bool = False  # a dial-out

    @property
    def warning(self) -> str:
        return next((w for c, _, w in reversed(self.responses) if w), "")

    @property
    def half_open(self) -> bool:
        """Neither a final response nor, once answered, an end: what must never be left."""
        return self.final is None or (self.final == 200 and not self.ended)


@dataclass
class FakeTap:
    """A recording tap on a room's mix: like the mixer's, it has buffered 16 kHz samples for
    the time since the last read (silence here), up to when it was detached."""

    room_key: str
    last: float = 0.0
    closed_at: float | None = None
    reads: int = 0
    dropped: int = 0

    def read(self) -> np.ndarray:
        now = trio.current_time() if self.closed_at is None else self.closed_at
        n = max(0, int(round((now - self.last) * 16000)))
        self.last = max(self.last, now)
        self.reads += 1
        return np.zeros(min(n, 16000 * 10), np.int16)


@dataclass
class _Failure:
    when: Callable[..., bool] | None
    times: int
    exc: BaseException


class FakeEngine:
    """The Engine Protocol, in memory. Made by the node: ``FakeEngine(config, emit)``."""

    def __init__(self, config: Any, emit: Callable[[object], None]):
        self.config = config
        self.emit = emit
        self.calls: dict[str, FakeCall] = {}
        self.rooms: dict[str, set[str]] = {}  # mixer room key -> call uuids in it
        self.room_sounds: dict[int, tuple[str, float]] = {}  # id -> (room key, seconds)
        self.room_sounds_played: list[tuple[str, float]] = []
        self.max_room_sounds_seen: dict[str, int] = {}
        self.taps: list[FakeTap] = []
        self.log: list[tuple] = []  # every command, in order: (name, *args)
        self.timeline: list[tuple[float, tuple]] = []  # (trio time, command) for each
        self.broken: str | None = None
        self.started = False
        self.stopped = 0
        self.stop_delay = 0.0  # the real stop joins the SIP thread: it takes a moment
        self._failures: dict[str, list[_Failure]] = {}
        # calls whose caller gives up (CANCEL/BYE) just before the node's next command reaches
        # the SIP stack: that command finds the call gone (False), the CallEnded is queued
        self.gone_before: dict[str, str] = {}  # call uuid -> command name
        self._ids = itertools.count(1)
        self._call_ids = itertools.count(1)

    # --- driving it (the callers) ----------------------------------------------------------------

    def incoming(self, uuid: str | None = None, to_user: str = "room",
                 from_uri: str = "sip:alice@127.0.0.1", caller_name: str = "Alice",
                 sip_headers: tuple[tuple[str, str], ...] = ()) -> str:
        uuid = uuid or f"call-{next(self._call_ids)}"
        self.calls[uuid] = FakeCall(uuid, to_user, from_uri)
        self.emit(IncomingCall(uuid, from_uri, f"sip:{to_user}@127.0.0.1", to_user, caller_name,
                               f"sip-{uuid}", sip_headers))
        return uuid

    def hang_up(self, uuid: str, status: int = 200, reason: str = "Normal call clearing") -> None:
        """The caller hangs up (BYE; or CANCEL before an answer)."""
        call = self.calls[uuid]
        if call.ended:
            return
        if call.final is None:
            call.final = 487  # CANCEL: the INVITE ends with 487 Request Terminated
        self._end(call, "caller", status, reason)

    def dial_progress(self, uuid: str, status: str, code: int = 180) -> None:
        """The callee of a dial-out rings (``ringing``) or answers (``answered``)."""
        if status == "answered":
            self.calls[uuid].answered = True
            self.calls[uuid].final = code
        self.emit(DialProgress(uuid, status, code, f"sip-{uuid}"))

    def dial_fails(self, uuid: str, status: int, reason: str = "Busy Here") -> None:
        """The callee of a dial-out ends the INVITE with this final response."""
        call = self.calls[uuid]
        call.final = status
        self._end(call, "callee", status, reason)

    def digit(self, uuid: str, digit: str, source: str = "rfc2833",
              at: float | None = None) -> None:
        self.emit(Dtmf(uuid, digit, source, trio.current_time() if at is None else at))

    def media_up(self, uuid: str, rate: int = 16000) -> None:
        self.emit(MediaUp(uuid, rate))

    def floor(self, room_key: str, uuid: str) -> None:
        self.emit(Floor(room_key, uuid))

    def fail(self, command: str, when: Callable[..., bool] | None = None, times: int = 1,
             exc: BaseException | None = None) -> None:
        """Make ``command`` raise (``times`` times) when ``when(*args)`` holds."""
        self._failures.setdefault(command, []).append(
            _Failure(when, times, exc or InjectedFault(f"injected failure in {command}")))

    # --- queries for tests -----------------------------------------------------------------------

    def commands(self, name: str, uuid: str | None = None) -> list[tuple]:
        return [c for c in self.log if c[0] == name and (uuid is None or c[1] == uuid)]

    def room_of(self, uuid: str) -> str | None:
        call = self.calls.get(uuid)
        return call.room if call else None

    # --- the Engine Protocol ---------------------------------------------------------------------

    async def _command(self, name: str, *args: Any) -> None:
        await trio.lowlevel.checkpoint()
        self.log.append((name, *args))
        self.timeline.append((trio.current_time(), (name, *args)))
        for f in self._failures.get(name, []):
            if f.times > 0 and (f.when is None or f.when(*args)):
                f.times -= 1
                raise f.exc

    def _live(self, uuid: str, command: str = "") -> FakeCall | None:
        call = self.calls.get(uuid)
        if call is not None and command and self.gone_before.get(uuid) == command:
            del self.gone_before[uuid]
            self.hang_up(uuid)
        return None if call is None or call.ended else call

    def _end(self, call: FakeCall, by: str, status: int, reason: str) -> None:
        call.ended, call.ended_by = True, by
        self._unplace(call)
        call.overlay = None
        self.emit(CallEnded(call.uuid, status, reason))

    def _unplace(self, call: FakeCall) -> None:
        if call.room is not None:
            members = self.rooms.get(call.room)
            if members is not None:
                members.discard(call.uuid)
                if not members:
                    del self.rooms[call.room]
                    for sid in [s for s, (k, _) in self.room_sounds.items() if k == call.room]:
                        del self.room_sounds[sid]
            call.room = None

    async def start(self) -> None:
        await trio.lowlevel.checkpoint()
        self.started = True

    async def stop(self) -> None:
        """Like the real one: every call still up ends (BYE, or 503 if not answered)."""
        self.stopped += 1
        if self.stop_delay:
            await trio.sleep(self.stop_delay)
        else:
            await trio.lowlevel.checkpoint()
        for call in self.calls.values():
            if not call.ended:
                if call.final is None:
                    call.final = 503
                    call.responses.append((503, "Node shutting down", ""))
                self._end(call, "node-stop", 200, "Node shutting down")

    async def housekeeping(self) -> None:
        await trio.sleep_forever()

    def health(self) -> str | None:
        return self.broken

    async def answer(self, call_uuid: str, code: int = 200, reason: str = "",
                     warning: str = "") -> bool:
        await self._command("answer", call_uuid, code, reason, warning)
        call = self._live(call_uuid, "answer")
        if call is None:
            return False
        call.responses.append((code, reason, warning))
        if code == 200:
            call.answered = True
            call.final = call.final or 200
        elif code >= 300:
            call.final = call.final or code
            self._end(call, "node", code, reason)
        return True

    async def dial(self, call_uuid: str, to_uri: str, local_uri: str = "",
                   caller_name: str = "", headers: tuple[tuple[str, str], ...] = ()
                   ) -> str | None:
        await self._command("dial", call_uuid, to_uri, local_uri, caller_name, headers)
        self.calls[call_uuid] = FakeCall(call_uuid, to_uri, local_uri, outbound=True)
        return None

    async def pipe(self, call_uuid: str, want: int) -> Any:
        await self._command("pipe", call_uuid, want)
        return None  # the fake has no mixer: a <Stream> reports DroppedStream

    async def unpipe(self, call_uuid: str) -> None:
        await self._command("unpipe", call_uuid)

    async def add_agent(self, call_uuid: str) -> Any:
        await self._command("add_agent", call_uuid)
        self.calls[call_uuid] = FakeCall(call_uuid, "", "agent", outbound=True, answered=True)
        return None

    async def hangup(self, call_uuid: str, code: int = 0, reason: str = "") -> bool:
        await self._command("hangup", call_uuid, code, reason)
        call = self._live(call_uuid, "hangup")
        if call is None:
            return False
        call.hangup = (code, reason)
        if call.final is None and call.outbound:
            call.final = 487  # a dial-out's CANCEL: its INVITE ends with 487
            self._end(call, "node", 487, "Request Terminated")
            return True
        if call.final is None:
            # pjsua: hangup() of an unanswered INVITE sends its final response (603 if none given)
            call.final = code if code >= 300 else 603
            call.responses.append((call.final, reason, ""))
        self._end(call, "node", code, reason)
        return True

    async def join(self, call_uuid: str, room_key: str, muted: bool = False,
                   deaf: bool = False) -> bool:
        await self._command("join", call_uuid, room_key, muted, deaf)
        call = self._live(call_uuid)
        if call is None:
            return False
        if call.room != room_key:
            self._unplace(call)
            call.room = room_key
            self.rooms.setdefault(room_key, set()).add(call_uuid)
        call.muted, call.deaf = muted, deaf
        return True

    async def leave(self, call_uuid: str, room_key: str) -> bool:
        await self._command("leave", call_uuid, room_key)
        call = self.calls.get(call_uuid)
        if call is None or call.room is None or call.room != room_key:
            return False  # like the real one: only out of that room
        self._unplace(call)
        call.muted = call.deaf = False
        call.overlay = None
        return True

    async def set_coach(self, call_uuid: str, private: bool, target: str | None) -> bool:
        await self._command("set_coach", call_uuid, private, target)
        return True

    async def set_member(self, call_uuid: str, muted: bool, deaf: bool = False,
                         volume_in: float = 0.0, volume_out: float = 0.0,
                         denoise: bool = False, agc: bool = False) -> bool:
        await self._command("set_member", call_uuid, muted, deaf)
        call = self.calls.get(call_uuid)
        if call is None:
            return False
        call.muted, call.deaf = muted, deaf
        return True

    async def play_to_call(self, call_uuid: str, clip: Any, loops: int = 1) -> bool:
        await self._command("play_to_call", call_uuid,
                            None if clip is None else round(clip.duration, 3), loops)
        call = self._live(call_uuid, "play_to_call")
        if call is None:
            return False
        call.overlay = (clip, loops) if clip is not None else None
        if clip is not None:
            call.played.append((clip.duration, loops))
        return True

    async def stop_call_sound(self, call_uuid: str) -> bool:
        await self._command("stop_call_sound", call_uuid)
        call = self._live(call_uuid, "stop_call_sound")
        if call is None:
            return False
        call.overlay = None
        return True

    async def play_to_room(self, room_key: str, clip: Any, loops: int = 1) -> int | None:
        await self._command("play_to_room", room_key, round(clip.duration, 3), loops)
        if room_key not in self.rooms:
            return None
        sid = next(self._ids)
        self.room_sounds[sid] = (room_key, clip.duration)
        self.room_sounds_played.append((room_key, clip.duration))
        playing = sum(1 for k, _ in self.room_sounds.values() if k == room_key)
        self.max_room_sounds_seen[room_key] = max(self.max_room_sounds_seen.get(room_key, 0),
                                                  playing)
        return sid

    async def stop_room_sound(self, sound_id: int) -> bool:
        await self._command("stop_room_sound", sound_id)
        return self.room_sounds.pop(sound_id, None) is not None

    async def send_digits(self, call_uuid: str, digits: str, tones: bool = True) -> bool:
        await self._command("send_digits", call_uuid, digits, tones)
        call = self._live(call_uuid)
        if call is None:
            return False
        call.digits_sent.append((digits, tones))
        return True

    async def tap_room(self, room_key: str, tracks: int = 0) -> Any:
        await self._command("tap_room", room_key)
        solo = room_key.startswith("solo:") and self._live(room_key[5:]) is not None
        if room_key not in self.rooms and not solo:
            return None
        tap = FakeTap(room_key, last=trio.current_time())
        self.taps.append(tap)
        return tap

    async def untap(self, tap: Any) -> None:
        await self._command("untap", tap.room_key)
        tap.closed_at = trio.current_time()

    async def reload_tls(self, cert: str, key: str) -> str | None:
        await self._command("reload_tls", cert, key)
        return "the fake engine has no TLS listener"

    async def stats(self, rtp: bool = False) -> dict:
        await self._command("stats", rtp)
        legs = {u: {"talking": False, "rx_empty": 0, "rate": 16000}
                for u, c in self.calls.items() if c.answered and not c.ended}
        out = {
            "calls": sum(1 for c in self.calls.values() if not c.ended),
            "rooms": {k: {"tick_ns_max": 0, "members": len(v)} for k, v in self.rooms.items()},
            "legs": legs,
            "clock": {"ticks": 0, "late": 0, "room_tick_buckets_s": [0.001, 0.01],
                      "room_tick_hist": [0, 0], "room_tick_s": 0.0, "room_ticks": 0},
            "refused": {},
            "registration": None,
        }
        if rtp:
            out["rtp"] = {u: {"rx_packets": 0, "rx_lost": 0, "rx_discarded": 0, "jitter_s": 0.0,
                              "jitter_max_s": 0.0, "peer_lost": 0, "concealed": 0,
                              "jb_discarded": 0, "jb_empty": 0, "jb_delay_s": 0.0,
                              "jb_delay_max_s": 0.0, "playout_s": None, "target_s": None}
                          for u in legs}
        return out
