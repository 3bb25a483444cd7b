"""``SipEngine``: the trio side of the pjsua2 adapter (the node's ``sipconf.engine.Engine``).

It starts and stops the SIP thread (``thread.SipThread``), watches its health, and turns each
async method into a typed command (``commands``) queued to that thread; the answer comes back
through ``trio``'s ``run_sync_soon`` and is awaited for at most COMMAND_TIMEOUT_S. Nothing here
touches a pjsua2 object.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import trio

from sipconf.config import NodeConfig
from sipconf.engine import Emit, EngineError
from sipconf.sip import commands as c
from sipconf.sip import pjlog
from sipconf.sip.thread import SipThread

log = logging.getLogger("sipconf.sip")

COMMAND_TIMEOUT_S = 10.0  # a command the SIP thread has not answered by then has failed
STUCK_S = 3.0  # the SIP loop turns every POLL_MS; not turning for this long = stuck
CLOCK_STALL_S = 1.0  # a mixer clock with no tick for this long has stalled


class SipEngine:
    """Runs pjsua2 on its own thread; the trio side calls the async methods."""

    def __init__(self, config: NodeConfig, on_event: Emit):
        self.config = config
        self._cmds: queue.SimpleQueue = queue.SimpleQueue()
        self._sip = SipThread(config, on_event, self._cmds)
        self._thread: threading.Thread | None = None
        self._stopping = False

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        sip = self._sip
        sip.token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(target=sip.main, name="sipconf-sip", daemon=True)
        self._thread.start()
        await trio.to_thread.run_sync(sip.ready.wait)
        if sip.start_error is not None:
            self._thread.join()
            self._thread = None
            raise EngineError(str(sip.start_error)) from sip.start_error

    async def stop(self, grace: float = 2.0) -> None:
        """BYE every call, then destroy the stack and join the thread (a stuck thread is
        given up on after a bound: the process is exiting)."""
        if self._thread is None:
            return
        self._stopping = True
        self._cmds.put((c.Stop(grace), None))
        thread = self._thread
        await trio.to_thread.run_sync(thread.join, grace + 5.0, abandon_on_cancel=False)
        if thread.is_alive():
            log.error("the SIP thread did not stop: leaving it behind")
        self._thread = None

    def health(self) -> str | None:
        """Why the engine cannot go on, if it cannot: its thread died or is stuck, or a mixer
        clock stalled. Reads no lock (the watchdog must not hang on what it watches)."""
        thread = self._thread
        if thread is None or self._stopping:
            return None
        if not thread.is_alive():
            return "the SIP thread died"
        stuck = time.monotonic() - self._sip.heartbeat
        if stuck > STUCK_S:
            return f"the SIP thread has not run for {stuck:.1f} s"
        media = self._sip.media
        stall = media.streams.clock_stall_seconds() if media is not None else 0.0
        if stall > CLOCK_STALL_S:
            return f"a mixer clock has not ticked for {stall:.1f} s"
        return None

    async def housekeeping(self) -> None:
        """The trio side's share of the work: pjlib's log lines, drained from their ring."""
        await pjlog.pump()

    # --- commands ------------------------------------------------------------------------------

    async def _run(self, cmd: c.Command) -> Any:
        """Queue ``cmd`` to the SIP thread and wait for its answer (or its exception)."""
        done = trio.Event()
        box: list = []

        def deliver(ok: bool, value: Any) -> None:
            box.append((ok, value))
            done.set()

        if self._thread is None or not self._thread.is_alive():
            raise EngineError("SIP engine is not running")
        self._cmds.put((cmd, deliver))
        with trio.move_on_after(COMMAND_TIMEOUT_S):
            await done.wait()
        if not box:
            raise EngineError(
                f"the SIP thread did not answer {c.name(cmd)} in {COMMAND_TIMEOUT_S:g} s")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    async def answer(self, call_uuid: str, code: int = 200, reason: str = "",
                     warning: str = "") -> bool:
        """Send a final or provisional response; False if the call is already gone."""
        return await self._run(c.Answer(call_uuid, code, reason, warning))

    async def hangup(self, call_uuid: str, code: int = 0, reason: str = "") -> bool:
        return await self._run(c.Hangup(call_uuid, code, reason))

    async def dial(self, call_uuid: str, to_uri: str, local_uri: str = "",
                   caller_name: str = "", headers: tuple[tuple[str, str], ...] = ()
                   ) -> str | None:
        """An outbound INVITE: None once sent, else why not (DialProgress/CallEnded follow)."""
        return await self._run(c.Dial(call_uuid, to_uri, local_uri, caller_name, headers))

    async def pipe(self, call_uuid: str, want: int) -> Any:
        """A <Stream>'s pipe on the call's leg (mixer_ext.streams.Pipe), or None."""
        return await self._run(c.Pipe(call_uuid, want))

    async def unpipe(self, call_uuid: str) -> None:
        await self._run(c.Unpipe(call_uuid))

    async def add_agent(self, call_uuid: str) -> Any:
        """An AI agent member with this UUID (joined, muted, hung up like a call): its
        Pipe (16 kHz) carries what it hears up and its voice down."""
        return await self._run(c.AddAgent(call_uuid))

    async def join(self, call_uuid: str, room_key: str, muted: bool = False,
                   deaf: bool = False) -> bool:
        """Put the call's audio in a mixer room (now, or as soon as its stream exists)."""
        return await self._run(c.Join(call_uuid, room_key, muted, deaf))

    async def leave(self, call_uuid: str, room_key: str) -> bool:
        """Take the call out of conference room ``room_key`` (back to its own, silent, solo
        room); nothing if it is in another room by now."""
        return await self._run(c.Leave(call_uuid, room_key))

    async def set_member(self, call_uuid: str, muted: bool, deaf: bool = False,
                         volume_in: float = 0.0, volume_out: float = 0.0,
                         denoise: bool = False, agc: bool = False) -> bool:
        return await self._run(c.SetMember(call_uuid, muted, deaf, volume_in, volume_out,
                                           denoise, agc))

    async def set_coach(self, call_uuid: str, private: bool, target: str | None) -> bool:
        return await self._run(c.SetCoach(call_uuid, private, target))

    async def play_to_call(self, call_uuid: str, clip: Any, loops: int = 1) -> bool:
        """Play a clip (sounds.Clip) to this caller alone; loops < 1 = until stopped."""
        return await self._run(c.PlayToCall(call_uuid, clip, loops))

    async def stop_call_sound(self, call_uuid: str) -> bool:
        return await self._run(c.StopCallSound(call_uuid))

    async def play_to_room(self, room_key: str, clip: Any, loops: int = 1) -> int | None:
        """Mix a clip into a room for everyone; returns an id for stop_room_sound."""
        return await self._run(c.PlayToRoom(room_key, clip, loops))

    async def stop_room_sound(self, sound_id: int) -> bool:
        return await self._run(c.StopRoomSound(sound_id))

    async def send_digits(self, call_uuid: str, digits: str, tones: bool = True) -> bool:
        """Relay digits to a call: RFC 2833 events, or (if ``tones``) in-band tones when it
        has none."""
        return await self._run(c.SendDigits(call_uuid, digits, tones))

    async def tap_room(self, room_key: str, tracks: int = 0) -> Any:
        """A recording tap on a conference room's mix (None if the room has no mixer yet);
        with ``tracks``, that many per-member tracks aligned to it."""
        return await self._run(c.TapRoom(room_key, tracks))

    async def untap(self, tap: Any) -> None:
        await self._run(c.Untap(tap))

    async def stats(self, rtp: bool = False) -> dict:
        """The mixer's figures; with ``rtp``, each leg's RTP statistics from pjsua too."""
        return await self._run(c.Stats(rtp))

    async def reload_tls(self, cert: str, key: str) -> str | None:
        """The SIP TLS listener takes ``cert`` and ``key`` (read again from disk): None if
        taken, else why not."""
        return await self._run(c.ReloadTls(cert, key))
