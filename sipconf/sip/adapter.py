"""The pjsua2 adapter: one dedicated thread owns every pjsua2 object.

pjsua2 aborts the process when a thread it does not know touches (or merely garbage-collects) one
of its objects, and when objects outlive ``libDestroy()``. So a single thread creates, drives and
destroys all of them: it polls ``libHandleEvents`` and runs commands queued by the trio side, and
it reports what happens as plain event objects, delivered into trio without blocking.

Media never passes through here: in ``onStreamCreated`` the call's stream is handed to
``mixer_ext.streams`` and the conference bridge gets a placeholder port.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import trio
from mixer_ext.mixer import DEAF, MUTED, dtmf_tone

from sipconf.config import NodeConfig
from sipconf.core import sipmsg
from sipconf.core.access import TrustedSources
from sipconf.core.registration import Registrar, dialled_user
from sipconf.engine import (  # noqa: F401 - the events are part of this adapter's interface
    CallEnded,
    Dtmf,
    Emit,
    EngineError,
    Floor,
    IncomingCall,
    MediaError,
    MediaUp,
)
from sipconf.sip import pjlog

log = logging.getLogger("sipconf.sip")

# Codec priorities: wideband first; everything else is switched off.
CODEC_PRIORITY = {"opus/48000/2": 250, "G722/16000/1": 240, "PCMU/8000/1": 230, "PCMA/8000/1": 220}
POLL_MS = 5
DTMF_TONE_MS = 100  # in-band relay: each digit's tone pair, then a gap
DTMF_GAP_MS = 60
FREE_DELAY_S = 2.0  # a detached leg is released this long after its stream went away
UNREGISTER_WAIT_S = 1.0  # at shutdown, how long the PBX gets to confirm the unregistration


COMMAND_TIMEOUT_S = 10.0  # a command the SIP thread has not answered by then has failed
STUCK_S = 3.0  # the SIP loop turns every POLL_MS; not turning for this long = stuck
CLOCK_STALL_S = 1.0  # a mixer clock with no tick for this long has stalled


@dataclass
class _CallRec:
    uuid: str
    call: Any  # the pjsua2 Call
    leg: Any = None  # mixer_ext.streams.Leg
    room_key: str | None = None  # the conference room's mixer, None = the call's own solo room
    mix_key: str | None = None  # the mixer room the leg is in now
    flags: int = 0
    overlay: tuple[Any, int] | None = None  # (clip, loops) played to this caller alone
    rfc2833: bool | None = None  # the peer takes telephone-events (None: not tried yet)
    answered: bool = False
    ended: bool = False
    offer_ok: bool = True


@dataclass
class _MixRoomRec:
    mix: Any  # mixer_ext.streams.MixRoom
    members: set[str] = field(default_factory=set)
    sources: set[int] = field(default_factory=set)


class SipEngine:
    """Runs pjsua2 on its own thread; the trio side calls the async methods."""

    def __init__(self, config: NodeConfig, on_event: Emit):
        self.config = config
        self._on_event = on_event  # called on the trio thread; queues, never raises
        self._token: trio.lowlevel.TrioToken | None = None
        self._cmds: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._stopping = False
        # Owned by the SIP thread:
        self._calls: dict[str, _CallRec] = {}
        self._rooms: dict[str, _MixRoomRec] = {}
        self._graveyard: list[tuple[float, Any]] = []
        self._sounds: dict[int, tuple[Any, str]] = {}
        self._next_sound = 0
        self._dead_calls: list[Any] = []
        self._leg_calls: dict[int, str] = {}  # mixer leg id -> call uuid
        self._room_keys: dict[int, str] = {}  # mixer room id -> room key
        self.reg: Any = None  # the pjsua2 Account that registers on a PBX, if any
        self._refused: dict[str, int] = {}  # calls refused before the trio side saw them
        self.registrar = Registrar()
        self._reg_retry_at: float | None = None
        self._own_users = {"sipconf"}
        self._unregistering = False
        self._heartbeat = time.monotonic()  # the SIP loop's last turn
        self._stopping = False

    # --- lifecycle (trio side) -----------------------------------------------------------------

    async def start(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(target=self._main, name="sipconf-sip", daemon=True)
        self._thread.start()
        await trio.to_thread.run_sync(self._ready.wait)
        if self._start_error is not None:
            self._thread.join()
            self._thread = None
            raise EngineError(str(self._start_error)) from self._start_error

    async def stop(self, grace: float = 2.0) -> None:
        """BYE every call, then destroy the stack and join the thread (a stuck thread is
        given up on after a bound: the process is exiting)."""
        if self._thread is None:
            return
        self._stopping = True
        self._cmds.put(("stop", (grace,), None))
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
        stuck = time.monotonic() - self._heartbeat
        if stuck > STUCK_S:
            return f"the SIP thread has not run for {stuck:.1f} s"
        streams = getattr(self, "streams", None)
        stall = streams.clock_stall_seconds() if streams is not None else 0.0
        if stall > CLOCK_STALL_S:
            return f"a mixer clock has not ticked for {stall:.1f} s"
        return None

    async def housekeeping(self) -> None:
        """The trio side's share of the work: pjlib's log lines, drained from their ring."""
        await pjlog.pump()

    # --- commands (trio side) ------------------------------------------------------------------

    async def _run(self, name: str, *args: Any) -> Any:
        done = trio.Event()
        box: list = []

        def deliver(ok: bool, value: Any) -> None:
            box.append((ok, value))
            done.set()

        if self._thread is None or not self._thread.is_alive():
            raise EngineError("SIP engine is not running")
        self._cmds.put((name, args, deliver))
        with trio.move_on_after(COMMAND_TIMEOUT_S):
            await done.wait()
        if not box:
            raise EngineError(f"the SIP thread did not answer {name} in {COMMAND_TIMEOUT_S:g} s")
        ok, value = box[0]
        if not ok:
            raise value
        return value

    async def answer(self, call_uuid: str, code: int = 200, reason: str = "",
                     warning: str = "") -> bool:
        """Send a final or provisional response; False if the call is already gone."""
        return await self._run("answer", call_uuid, code, reason, warning)

    async def hangup(self, call_uuid: str, code: int = 0, reason: str = "") -> bool:
        return await self._run("hangup", call_uuid, code, reason)

    async def join(self, call_uuid: str, room_key: str, muted: bool = False,
                   deaf: bool = False) -> bool:
        """Put the call's audio in a mixer room (now, or as soon as its stream exists)."""
        return await self._run("join", call_uuid, room_key, muted, deaf)

    async def leave(self, call_uuid: str) -> bool:
        """Take the call out of its conference room (back to its own, silent, solo room)."""
        return await self._run("leave", call_uuid)

    async def set_member(self, call_uuid: str, muted: bool, deaf: bool = False) -> bool:
        return await self._run("set_member", call_uuid, muted, deaf)

    async def play_to_call(self, call_uuid: str, clip: Any, loops: int = 1) -> bool:
        """Play a clip (sounds.Clip) to this caller alone; loops < 1 = until stopped."""
        return await self._run("play_to_call", call_uuid, clip, loops)

    async def stop_call_sound(self, call_uuid: str) -> bool:
        return await self._run("play_to_call", call_uuid, None, 0)

    async def play_to_room(self, room_key: str, clip: Any, loops: int = 1) -> int | None:
        """Mix a clip into a room for everyone; returns an id for stop_room_sound."""
        return await self._run("play_to_room", room_key, clip, loops)

    async def stop_room_sound(self, sound_id: int) -> bool:
        return await self._run("stop_room_sound", sound_id)

    async def send_digits(self, call_uuid: str, digits: str, tones: bool = True) -> bool:
        """Relay digits to a call: RFC 2833 events, or (if ``tones``) in-band tones when it
        has none."""
        return await self._run("send_digits", call_uuid, digits, tones)

    async def tap_room(self, room_key: str) -> Any:
        """A recording tap on a conference room's mix (None if the room has no mixer yet)."""
        return await self._run("tap_room", room_key)

    async def untap(self, tap: Any) -> None:
        await self._run("untap", tap)

    async def stats(self, rtp: bool = False) -> dict:
        """The mixer's figures; with ``rtp``, each leg's RTP statistics from pjsua too."""
        return await self._run("stats", rtp)

    # --- SIP thread ----------------------------------------------------------------------------

    def _emit(self, event: object) -> None:
        """An event for the node: queued into its channel on the trio thread (the callback
        only queues and cannot raise; a task drains the channel)."""
        try:
            self._token.run_sync_soon(self._on_event, event)
        except trio.RunFinishedError:
            pass

    def _main(self) -> None:
        import pjsua2 as pj  # imported here: the module is only ever used on this thread

        self.pj = pj
        try:
            self._init(pj)
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._start_error = exc
            self._destroy(pj)
            self._ready.set()
            return
        self._ready.set()
        try:
            self._loop()
        except BaseException:
            log.critical("the SIP thread failed", exc_info=True)
            raise
        finally:
            self._destroy(pj)

    def _init(self, pj) -> None:
        cfg = self.config
        # pjlib's lines go to a lock-free ring that sipconf.sip.pjlog drains into Python logging (so
        # --log-format json covers them too); never to a Python callback, which would make a
        # thread holding a pjlib or mixer lock wait for the GIL. From the first line on:
        pjlog.install(cfg.pj_log_level, pj.PJ_LOG_HAS_SENDER)
        ep = self.ep = pj.Endpoint()
        ep.libCreate()
        epc = pj.EpConfig()
        epc.uaConfig.threadCnt = 0
        epc.uaConfig.mainThreadOnly = False
        epc.uaConfig.maxCalls = cfg.max_calls
        epc.uaConfig.userAgent = "sipconf/0.1"
        epc.logConfig.level = cfg.pj_log_level
        epc.logConfig.consoleLevel = cfg.pj_log_level
        epc.logConfig.msgLogging = cfg.pj_log_level >= 4
        epc.logConfig.decor = pj.PJ_LOG_HAS_SENDER
        # Inside libInit pjsua makes its own writer pjlib's log function, which hands lines to
        # this one (Python, on this thread: no clock thread exists yet); after libInit the ring
        # takes over for good and this writer is never called again.
        self._init_log_writer = _init_log_writer_class(pj)()
        self._init_log_writer.__disown__()  # libDestroy deletes it
        epc.logConfig.writer = self._init_log_writer
        mc = epc.medConfig
        mc.noVad = True
        mc.ecTailLen = 0
        mc.clockRate = 16000
        mc.sndClockRate = 16000
        mc.channelCount = 1
        mc.audioFramePtime = 20
        mc.ptime = 20
        mc.threadCnt = cfg.media_threads
        mc.jbInit = cfg.jb_init_ms
        mc.jbMinPre = cfg.jb_min_ms
        mc.jbMaxPre = cfg.jb_max_ms
        ep.libInit(epc)
        pjlog.install(cfg.pj_log_level, pj.PJ_LOG_HAS_SENDER)
        # No sound device: nothing clocks the conference bridge (our mixer clocks the streams).
        ep.audDevManager().setNoDev()

        tc = pj.TransportConfig()
        tc.port = cfg.sip_port
        tc.boundAddress = cfg.sip_host
        kinds = [("udp", pj.PJSIP_TRANSPORT_UDP)]
        if cfg.sip_tcp:
            kinds.append(("tcp", pj.PJSIP_TRANSPORT_TCP))
        for name, kind in kinds:
            try:
                ep.transportCreate(kind, tc)
            except pj.Error as exc:
                raise EngineError(
                    f"cannot listen for SIP on {name} {cfg.sip_host}:{cfg.sip_port}: {exc.reason}"
                ) from None

        for ci in ep.codecEnum2():
            ep.codecSetPriority(ci.codecId, CODEC_PRIORITY.get(ci.codecId, 0))
        try:
            oc = ep.getCodecOpusConfig()
            # Fullband: at 16 kHz Opus codes in SILK (a speech model) and smears a room mix of
            # several voices or tones (measured: sidebands 19 dB down). The mixer gets 16 kHz
            # through a per-leg resampler (mixer_ext.streams) instead.
            oc.sample_rate = 48000
            oc.channel_cnt = 1
            oc.frm_ptime = 20
            oc.bit_rate = cfg.opus_bitrate
            ep.setCodecOpusConfig(oc)
        except pj.Error as exc:
            log.warning("opus unavailable: %s", exc.reason)
        ep.libStart()

        from mixer_ext import sipguard, streams

        sipguard.install(cfg.sip_host)

        self.streams = streams
        streams.start(cfg.mixer_clocks)

        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:sipconf@{cfg.sip_host}:{cfg.sip_port}"
        acfg.regConfig.registerOnAdd = False
        mt = acfg.mediaConfig.transportConfig
        mt.port = cfg.rtp_port_min
        mt.portRange = cfg.rtp_port_max - cfg.rtp_port_min + 1
        mt.boundAddress = cfg.sip_host
        mt.publicAddress = cfg.sip_host
        acfg.mediaConfig.rtcpMuxEnabled = False
        self._call_cls = _call_class(pj)
        self.acc = _account_class(pj)(self)
        self.acc.create(acfg, True)
        target = cfg.register_target
        self._trust = TrustedSources(cfg.trust, (target.host,) if target else ())
        log.info("SIP listening on udp %s:%d, RTP %d-%d; calls taken from %s", cfg.sip_host,
                 cfg.sip_port, cfg.rtp_port_min, cfg.rtp_port_max,
                 ", ".join(str(n) for n in self._trust.networks))
        if target is not None:
            racfg = pj.AccountConfig()
            racfg.idUri = target.uri
            racfg.mediaConfig = acfg.mediaConfig
            rc = racfg.regConfig
            rc.registrarUri = target.registrar_uri
            rc.registerOnAdd = True
            rc.timeoutSec = cfg.register_expires
            rc.retryIntervalSec = 0  # failures are retried by us, with backoff
            rc.unregWaitMsec = int(UNREGISTER_WAIT_S * 1000)
            cred = pj.AuthCredInfo("digest", "*", cfg.auth_user or target.user, 0,
                                   cfg.auth_password)
            racfg.sipConfig.authCreds.append(cred)
            self._own_users.add(target.user)
            self.reg = _account_class(pj)(self)
            self.reg.create(racfg)
            log.info("registering %s at %s (expires %d s)", target.uri, target.registrar_uri,
                     cfg.register_expires)

    def _loop(self) -> None:
        ep = self.ep
        while True:
            self._heartbeat = time.monotonic()
            while True:
                try:
                    name, args, deliver = self._cmds.get_nowait()
                except queue.Empty:
                    break
                if name == "stop":
                    self._shutdown_calls(args[0])
                    return
                try:
                    result = getattr(self, "_cmd_" + name)(*args)
                    ok = True
                except Exception as exc:  # noqa: BLE001 - returned to the caller
                    result, ok = exc, False
                if deliver is not None:
                    try:
                        self._token.run_sync_soon(deliver, ok, result)
                    except trio.RunFinishedError:
                        pass
            ep.libHandleEvents(POLL_MS)
            self._mixer_events()
            self._reap()
            if self._reg_retry_at is not None and time.monotonic() >= self._reg_retry_at:
                self._reg_retry_at = None
                self._register(True)

    def _register(self, on: bool) -> None:
        try:
            self.reg.setRegistration(on)
        except self.pj.Error as exc:
            if on:
                self.on_reg_state(503, exc.reason, 0)

    def _mixer_events(self) -> None:
        """What the mixer ticks detected: in-band digits and floor changes."""
        streams = self.streams
        for kind, leg_id, digit, room_id in streams.poll_events():
            call_uuid = self._leg_calls.get(leg_id)
            if call_uuid is None:
                continue
            if kind == streams.DIGIT:
                self._emit(Dtmf(call_uuid, digit, "inband", time.monotonic()))
            elif kind == streams.FLOOR:
                key = self._room_keys.get(room_id)
                if key is not None and not key.startswith("solo:"):
                    self._emit(Floor(key, call_uuid))

    def _reap(self) -> None:
        # Call objects are dropped here, outside their own callbacks.
        if self._dead_calls:
            self._dead_calls.clear()
        if self._graveyard:
            now = time.monotonic()
            keep = []
            for t, leg in self._graveyard:
                if now - t >= FREE_DELAY_S:
                    leg.free()
                else:
                    keep.append((t, leg))
            self._graveyard = keep

    def _shutdown_calls(self, grace: float) -> None:
        self._reg_retry_at = None
        unregistering = self._unregistering = self.reg is not None and self.registrar.registered
        if unregistering:
            self._register(False)
        for rec in list(self._calls.values()):
            self._detach(rec)
            if not rec.ended:
                try:
                    rec.call.hangup(self._op(503 if not rec.answered else 0, "Node shutting down"))
                except self.pj.Error:
                    pass
        deadline = time.monotonic() + grace
        while any(not r.ended for r in self._calls.values()) and time.monotonic() < deadline:
            self._heartbeat = time.monotonic()
            self.ep.libHandleEvents(POLL_MS)
        deadline = time.monotonic() + UNREGISTER_WAIT_S
        while unregistering and self.registrar.registered and time.monotonic() < deadline:
            self.ep.libHandleEvents(POLL_MS)

    def _destroy(self, pj) -> None:
        for rec in list(self._calls.values()):
            self._detach(rec)
            self._drop_call(rec)
        self._calls.clear()
        self._dead_calls.clear()
        gc.collect()  # any stray pjsua2 object must go now, on this thread
        for src, _ in self._sounds.values():
            src.free()
        self._sounds.clear()
        for rr in self._rooms.values():
            rr.mix.destroy()
        self._rooms.clear()
        streams = getattr(self, "streams", None)
        if streams is not None:
            streams.stop()
        for _, leg in self._graveyard:
            leg.free()
        self._graveyard.clear()
        for name in ("reg", "acc"):
            acc = getattr(self, name, None)
            if acc is not None:
                try:
                    acc.shutdown()
                except pj.Error:
                    pass
                delattr(self, name)
        ep = getattr(self, "ep", None)
        if ep is not None:
            try:
                ep.libDestroy()
            except pj.Error:
                pass
            del self.ep
        pjlog.drain()  # libDestroy's lines, in case the pump has already stopped

    # --- helpers on the SIP thread -------------------------------------------------------------

    def _op(self, code: int, reason: str = "", warning: str = ""):
        pj = self.pj
        prm = pj.CallOpParam(True)
        prm.statusCode = code
        if reason:
            prm.reason = reason
        if warning:
            h = pj.SipHeader()
            h.hName = "Warning"
            text = warning.replace("\\", "\\\\").replace('"', '\\"')[:200]
            h.hValue = f'399 {self.config.sip_host} "{text}"'
            prm.txOption.headers.append(h)
        return prm

    def _drop_call(self, rec: _CallRec) -> None:
        """Release the pjsua2 Call on this thread, outside its own callback (next loop turn):
        the rec <-> call cycle is broken so no garbage collector frees it elsewhere, later."""
        if rec.call is not None:
            rec.call.rec = None
            self._dead_calls.append(rec.call)
            rec.call = None

    def _detach(self, rec: _CallRec) -> None:
        """Take the call's stream out of the mixer before pjsua can destroy it."""
        if rec.leg is not None:
            self._leg_calls.pop(rec.leg.id, None)
            rec.leg.leave()
            self._graveyard.append((time.monotonic(), rec.leg))
            rec.leg = None

    def _room_for(self, key: str) -> _MixRoomRec:
        rr = self._rooms.get(key)
        if rr is None:
            rr = self._rooms[key] = _MixRoomRec(mix=self.streams.MixRoom())
            self._room_keys[rr.mix.id] = key
        return rr

    def _release_room(self, key: str, call_uuid: str) -> None:
        rr = self._rooms.get(key)
        if rr is None:
            return
        rr.members.discard(call_uuid)
        if not rr.members:
            for sid in list(rr.sources):
                self._cmd_stop_room_sound(sid)
            self._room_keys.pop(rr.mix.id, None)
            rr.mix.destroy()
            del self._rooms[key]

    def _place(self, rec: _CallRec) -> None:
        """Put the call's leg where it belongs: its conference room, or its own solo room (so
        a caller who is not in a conference still gets RTP, and can be played sounds)."""
        key = rec.room_key or f"solo:{rec.uuid}"
        if rec.mix_key != key:
            if rec.mix_key is not None:
                if rec.leg is not None:
                    rec.leg.leave()
                self._release_room(rec.mix_key, rec.uuid)
            rec.mix_key = key
            self._room_for(key).members.add(rec.uuid)
        if rec.leg is None:
            return
        rec.leg.set_flags(rec.flags)
        if rec.overlay is not None:
            clip, loops = rec.overlay
            rec.leg.play(clip.at_rate(rec.leg.rate), loops)
        else:
            rec.leg.stop()
        self._rooms[key].mix.add(rec.leg)

    def _unplace(self, rec: _CallRec) -> None:
        if rec.mix_key is not None:
            if rec.leg is not None:
                rec.leg.leave()
            self._release_room(rec.mix_key, rec.uuid)
            rec.mix_key = None

    # --- commands, on the SIP thread -----------------------------------------------------------

    def _cmd_answer(self, call_uuid: str, code: int, reason: str, warning: str) -> bool:
        rec = self._calls.get(call_uuid)
        if rec is None or rec.ended:
            return False
        rec.call.answer(self._op(code, reason, warning))
        if code == 200:
            rec.answered = True
            self._place(rec)
        return True

    def _cmd_hangup(self, call_uuid: str, code: int, reason: str) -> bool:
        rec = self._calls.get(call_uuid)
        if rec is None or rec.ended:
            return False
        self._detach(rec)
        rec.call.hangup(self._op(code, reason))
        return True

    def _cmd_join(self, call_uuid: str, room_key: str, muted: bool, deaf: bool) -> bool:
        rec = self._calls.get(call_uuid)
        if rec is None or rec.ended:
            return False
        rec.room_key = room_key
        rec.flags = (MUTED if muted else 0) | (DEAF if deaf else 0)
        self._place(rec)
        return True

    def _cmd_leave(self, call_uuid: str) -> bool:
        rec = self._calls.get(call_uuid)
        if rec is None or rec.room_key is None:
            return False
        rec.room_key = None
        rec.flags = 0
        rec.overlay = None
        self._place(rec)
        return True

    def _cmd_set_member(self, call_uuid: str, muted: bool, deaf: bool) -> bool:
        rec = self._calls.get(call_uuid)
        if rec is None:
            return False
        rec.flags = (MUTED if muted else 0) | (DEAF if deaf else 0)
        if rec.leg is not None:
            rec.leg.set_flags(rec.flags)
        return True

    def _cmd_play_to_call(self, call_uuid: str, clip: Any, loops: int) -> bool:
        rec = self._calls.get(call_uuid)
        if rec is None or rec.ended:
            return False
        rec.overlay = (clip, loops) if clip is not None else None
        if rec.leg is not None:
            if clip is None:
                rec.leg.stop()
            else:
                rec.leg.play(clip.at_rate(rec.leg.rate), loops)
        return True

    def _cmd_play_to_room(self, room_key: str, clip: Any, loops: int) -> int | None:
        rr = self._rooms.get(room_key)
        if rr is None:
            return None
        src = self.streams.Source(16000)
        src.play(clip.at_rate(16000), loops)
        try:
            rr.mix.add(src)
        except ValueError as exc:  # the mixer room is full
            log.warning("room %s: sound not mixed: %s", room_key, exc)
            src.free()
            return None
        self._next_sound += 1
        self._sounds[self._next_sound] = (src, room_key)
        rr.sources.add(self._next_sound)
        return self._next_sound

    def _cmd_stop_room_sound(self, sound_id: int) -> bool:
        entry = self._sounds.pop(sound_id, None)
        if entry is None:
            return False
        src, key = entry
        src.leave()
        src.free()
        rr = self._rooms.get(key)
        if rr is not None:
            rr.sources.discard(sound_id)
        return True

    def _cmd_send_digits(self, call_uuid: str, digits: str, tones: bool) -> bool:
        rec = self._calls.get(call_uuid)
        if rec is None or rec.ended or rec.leg is None:
            return False
        if rec.rfc2833 is not False:
            try:
                rec.call.dialDtmf(digits)
                rec.rfc2833 = True
                return True
            except self.pj.Error:
                rec.rfc2833 = False  # no telephone-event negotiated: tones instead
        if tones and rec.overlay is None:  # never over wait music or a Play
            rate = rec.leg.rate
            gap = np.zeros(rate * DTMF_GAP_MS // 1000, np.int16)
            pcm = np.concatenate([part for d in digits
                                  for part in (dtmf_tone(d, rate, DTMF_TONE_MS), gap)])
            rec.leg.play(pcm, 1)
        return True

    def _cmd_tap_room(self, room_key: str) -> Any:
        rr = self._rooms.get(room_key)
        if rr is None:
            return None
        tap = self.streams.Tap(10)
        tap.attach(rr.mix)
        return tap

    def _cmd_untap(self, tap: Any) -> None:
        tap.detach()

    def _rtp_stats(self, rec: _CallRec) -> dict | None:
        try:
            st = rec.call.getStreamStat(0).rtcp
        except self.pj.Error:
            return None
        rx = st.rxStat
        return {"rx_packets": rx.pkt, "rx_lost": rx.loss, "rx_discarded": rx.discard,
                "jitter_s": rx.jitterUsec.last / 1e6, "jitter_max_s": rx.jitterUsec.max / 1e6,
                "peer_lost": st.txStat.loss}  # what the caller's RTCP reports says it lost

    def _cmd_stats(self, rtp: bool = False) -> dict:
        out = {
            "calls": len(self._calls),
            "rooms": {k: rr.mix.stats() for k, rr in self._rooms.items()},
            "legs": {u: r.leg.stats() for u, r in self._calls.items() if r.leg is not None},
            "clock": self.streams.clock_stats(),
            "refused": dict(self._refused),
            "log_dropped": pjlog.dropped(),
            "registration": None if self.reg is None else {
                "registered": self.registrar.registered,
                "failures": self.registrar.attempts_failed,
                "last_code": self.registrar.last_code,
                "expires": self.registrar.expires},
        }
        if rtp:
            out["rtp"] = {u: st for u, r in self._calls.items()
                          if r.leg is not None and r.answered and not r.ended
                          and (st := self._rtp_stats(r)) is not None}
        return out

    # --- pjsua2 callbacks, on the SIP thread ---------------------------------------------------

    def _refuse(self, rec: _CallRec, code: int, reason: str, warning: str, outcome: str) -> None:
        """A final error before the trio side ever hears of the call (counted for /metrics)."""
        rec.offer_ok = False
        self._refused[outcome] = self._refused.get(outcome, 0) + 1
        try:
            rec.call.answer(self._op(code, reason, warning))
        except self.pj.Error:
            pass

    def on_incoming(self, acc, prm) -> None:
        pj = self.pj
        call = self._call_cls(self, acc, prm.callId)
        rec = _CallRec(uuid=str(uuid.uuid4()), call=call)
        call.rec = rec
        self._calls[rec.uuid] = rec
        src = prm.rdata.srcAddress
        if not self._trust.allows(src):
            log.warning("call %s from %s refused: not a trusted source (--trust) -> 403",
                        rec.uuid, src)
            self._refuse(rec, 403, "Forbidden", "source not trusted", "forbidden")
            return
        msg = prm.rdata.wholeMsg
        try:
            info = call.getInfo()
            _, ruri = sipmsg.request_line(msg)
            to_user = dialled_user(sipmsg.uri_user(ruri), sipmsg.uri_user(info.localUri),
                                   self._own_users)
            body = sipmsg.message_body(msg)
            if body.strip():
                offer = sipmsg.parse_offer(body)
                if not offer.has_audio or not offer.supported:
                    log.info("call %s: no codec in common (offered: %s) -> 488", rec.uuid,
                             ",".join(offer.codecs) or "none")
                    self._refuse(rec, 488, "Not Acceptable Here",
                                 "no codec in common: we take PCMU, PCMA, G722, opus",
                                 "no-codec")
                    return
            call.answer(self._op(180))
        except (ValueError, pj.Error) as exc:
            reason = exc.reason if isinstance(exc, pj.Error) else str(exc)
            log.warning("call %s: bad INVITE (%s) -> 400", rec.uuid, reason)
            self._refuse(rec, 400, "Bad Request", reason, "bad-request")
            return
        self._emit(IncomingCall(
            uuid=rec.uuid,
            from_uri=sipmsg.bare_uri(info.remoteUri),
            to_uri=ruri,
            to_user=to_user,
            caller_name=sipmsg.display_name(info.remoteUri),
            sip_call_id=info.callIdString,
        ))

    def on_reg_state(self, code: int, reason: str, expires: int) -> None:
        target = self.config.register_target
        if self._unregistering:  # the PBX's answer to our unregistration at shutdown
            self.registrar.registered = False
            log.info("unregistered from %s (%d %s)", target.registrar_uri, code, reason)
            return
        was = self.registrar.registered
        delay = self.registrar.outcome(code, reason, expires)
        if delay is None:
            if not was:
                log.info("registered %s at %s (%d %s, expires %d s)", target.uri,
                         target.registrar_uri, code, reason, expires)
            return
        log.warning("registration of %s at %s failed: %d %s; retrying in %g s", target.uri,
                    target.registrar_uri, code, reason, delay)
        self._reg_retry_at = time.monotonic() + delay

    def on_call_state(self, rec: _CallRec) -> None:
        pj = self.pj
        try:
            info = rec.call.getInfo()
        except pj.Error:
            return
        if info.state != pj.PJSIP_INV_STATE_DISCONNECTED or rec.ended:
            return
        rec.ended = True
        self._detach(rec)
        self._unplace(rec)
        self._calls.pop(rec.uuid, None)
        self._drop_call(rec)
        if rec.offer_ok:
            self._emit(CallEnded(rec.uuid, info.lastStatusCode, info.lastReason))

    def on_stream_created(self, rec: _CallRec, prm) -> None:
        try:
            leg = self.streams.Leg(prm.stream)
        except self.streams.StreamError as exc:
            log.error("call %s: media not mixable: %s", rec.uuid, exc)
            self._emit(MediaError(rec.uuid, str(exc)))
            return
        prm.pPort = leg.placeholder
        prm.destroyPort = False
        if rec.leg is not None:
            self._detach(rec)
        rec.leg = leg
        self._leg_calls[leg.id] = rec.uuid
        self._place(rec)
        self._emit(MediaUp(rec.uuid, leg.stats()["rate"]))

    def on_stream_destroyed(self, rec: _CallRec) -> None:
        self._detach(rec)


def _init_log_writer_class(pj):
    class _InitLogWriter(pj.LogWriter):
        def write(self, entry):
            pjlog.line(entry.level, entry.msg)

    return _InitLogWriter


def _account_class(pj):
    class _Account(pj.Account):
        def __init__(self, engine: SipEngine):
            super().__init__()
            self.engine = engine

        def onIncomingCall(self, prm):  # noqa: N802 - pjsua2's name
            try:
                self.engine.on_incoming(self, prm)
            except Exception:  # noqa: BLE001 - never let a callback kill the SIP thread
                log.exception("incoming call handler failed")

        def onRegState(self, prm):  # noqa: N802
            try:
                self.engine.on_reg_state(prm.code, prm.reason, prm.expiration)
            except Exception:  # noqa: BLE001
                log.exception("registration handler failed")

    return _Account


def _call_class(pj):
    class _Call(pj.Call):
        def __init__(self, engine: SipEngine, acc, call_id: int):
            super().__init__(acc, call_id)
            self.engine = engine
            self.rec: _CallRec | None = None

        def onCallState(self, prm):  # noqa: N802
            if self.rec is not None:
                try:
                    self.engine.on_call_state(self.rec)
                except Exception:  # noqa: BLE001
                    log.exception("call state handler failed")

        def onStreamCreated(self, prm):  # noqa: N802
            if self.rec is not None:
                try:
                    self.engine.on_stream_created(self.rec, prm)
                except Exception:  # noqa: BLE001
                    log.exception("stream handler failed")

        def onStreamDestroyed(self, prm):  # noqa: N802
            if self.rec is not None:
                self.engine.on_stream_destroyed(self.rec)

        def onDtmfDigit(self, prm):  # noqa: N802
            if self.rec is not None:
                source = "info" if prm.method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "rfc2833"
                self.engine._emit(Dtmf(self.rec.uuid, str(prm.digit).upper(), source,
                                       time.monotonic()))

    return _Call
