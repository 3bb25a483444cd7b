"""The thin trio driver of one call: runs its :class:`~sipconf.core.callflow.CallFlow` against
the engine, the webhook worker, the sound library and the rooms.

Every decision is the flow's; this module only carries its commands out and feeds the results
back, under the call's cancel scope (cancelled when the call ends or the node stops) and
``Faults.guard``: a fault ends only that call, after its exit/action events, then the call is
hung up (500 + Warning if it was not answered yet).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from sipconf import audio_stream
from sipconf.call_recording import record_call
from sipconf.core import room as roomstate
from sipconf.core.answer import Document, Play, Speak
from sipconf.core.answer import Stream as StreamVerb
from sipconf.core.callflow import (
    CLOSED,
    CallFlow,
    CallInfo,
    FlowSettings,
)
from sipconf.core.callmessages import (
    Answer,
    Answered,
    AwaitDrained,
    CallGone,
    CollectKeys,
    Command,
    DigitsSent,
    Drained,
    End,
    Fetch,
    Fetched,
    FetchFailed,
    Hangup,
    JoinRoom,
    KeyPressed,
    LeaveRoom,
    LeftRoom,
    LimitHit,
    Listen,
    PlayToCall,
    RecordCall,
    RingDial,
    RoomRefused,
    ScheduleHangup,
    SendDigits,
    Sleep,
    SoundFailed,
    SoundFinished,
    StartStream,
    Stopped,
    StreamEnded,
    Submit,
    WaitOver,
    has_result,
)
from sipconf.core.digits import DigitCollector
from sipconf.engine import Dtmf, Engine, IncomingCall
from sipconf.media.sounds import SoundError, SoundLimit
from sipconf.webhooks import FetchError, call_params, hangup_cause, hangup_params

if TYPE_CHECKING:
    from sipconf.node import Node
    from sipconf.rooms import RoomRun

log = logging.getLogger("sipconf.node")

FINAL_HANGUP_S = 5.0  # how long the last hang-up of a call may take
MAX_KEYS = 128  # key presses kept for a GetDigits that has not listened yet
PAUSES = {"w": 0.5, "W": 1.0}  # in sendDigits / <DTMF>
DIGIT_S = 0.25  # about how long one sent digit takes (tone and gap)


@dataclass
class Keypad:
    """The caller's key presses while a GetDigits runs: one press however many ways the phone
    sends it (``DigitCollector``), kept (bounded) until the flow listens."""

    collector: DigitCollector = field(default_factory=DigitCollector)
    pressed: deque[KeyPressed] = field(default_factory=lambda: deque(maxlen=MAX_KEYS))
    ready: trio.Event = field(default_factory=trio.Event)

    def feed(self, ev: Dtmf) -> None:
        press = self.collector.feed(ev.digit, ev.source, ev.at)
        if press is not None:
            self.pressed.append(KeyPressed(press.digit, press.source))
            self.ready.set()

    async def next(self) -> KeyPressed:
        while not self.pressed:
            self.ready = trio.Event()
            await self.ready.wait()
        return self.pressed.popleft()


async def send_digits(engine: Engine, call_uuid: str, digits: str) -> None:
    """Digits to a caller, ``w``/``W`` pausing 0.5 s / 1 s (Plivo's sendDigits); returns
    about when the last one has gone out (the stack sends them over time)."""
    run = ""
    for c in digits:
        if c in PAUSES:
            if run:
                await _send_run(engine, call_uuid, run)
                run = ""
            await trio.sleep(PAUSES[c])
        else:
            run += c
    if run:
        await _send_run(engine, call_uuid, run)


async def _send_run(engine: Engine, call_uuid: str, run: str) -> None:
    await engine.send_digits(call_uuid, run, True)
    await trio.sleep(DIGIT_S * len(run))


@dataclass
class CallSession:
    """One call: its flow (the decisions) and what the trio side keeps for it."""

    incoming: IncomingCall
    flow: CallFlow
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    room: RoomRun | None = None
    member: roomstate.Member | None = None
    left_room: trio.Event = field(default_factory=trio.Event)
    unmixed: trio.Event | None = None  # set once the engine has taken it out of its last room
    leave_reason: str = ""
    media_rate: int | None = None
    nursery: trio.Nursery | None = None
    digits: DigitCollector | None = None  # while in a room
    keypad: Keypad | None = None  # while a GetDigits runs
    room_uuid: str = ""
    record_params: dict[str, str] = field(default_factory=dict)  # of the room run it was in
    fault: bool = False  # one of its engine events faulted
    # for the hangup request (Plivo's hangup_url): wall-clock times, who ended the call
    started_at: float = field(default_factory=time.time)
    answered_at: float | None = None
    caller_hung_up: bool = False  # the call ended before the node hung it up
    hangup_code: int = 0  # the final response the node ended an unanswered call with
    media_timeout: bool = False  # the engine hung up: no RTP for rtp_timeout seconds
    bridged: str = ""  # the callee of its last <Dial>: hung up when this call ends
    agent: bool = False  # an AI agent member (no SIP call): no hangup request
    tasks: list = field(default_factory=list)  # started in the call's nursery (an agent's socket)
    # the call's <Stream>s hear its key presses (one press however many ways it came)
    stream_keys: list[trio.MemorySendChannel] = field(default_factory=list)
    stream_collector: DigitCollector = field(default_factory=DigitCollector)

    @property
    def uuid(self) -> str:
        return self.incoming.uuid

    @property
    def ended(self) -> bool:
        return self.flow.ended

    @property
    def answered(self) -> bool:
        return self.flow.answered

    @property
    def outcome(self) -> str:
        return self.flow.outcome

    def gone(self, media_timeout: bool = False) -> None:
        """The call ended (BYE, CANCEL, failure, or the node's BYE for want of RTP): stop
        whatever it is doing."""
        self.media_timeout = media_timeout
        if not self.flow.ended and not media_timeout:
            self.caller_hung_up = True
        self.flow.handle(CallGone(), trio.current_time())
        self.scope.cancel()

    def params(self, status: str = "in-progress", event: str | None = None) -> dict[str, str]:
        """The call's parameters (Plivo's), e.g. for the sound documents of its room."""
        c = self.flow.call
        return call_params(c.uuid, c.from_uri, c.to, c.caller_name, status, event,
                           c.sip_headers, c.outbound)

    def stream_key(self, ev: Dtmf) -> None:
        """A key press for the call's streams' ``dtmf`` messages."""
        if not self.stream_keys:
            return
        press = self.stream_collector.feed(ev.digit, ev.source, ev.at)
        if press is not None:
            for ch in self.stream_keys:
                try:
                    ch.send_nowait(press.digit)
                except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

    def key(self, ev: Dtmf) -> bool:
        """A key press for the call's GetDigits, if one runs (else False: the room's)."""
        if self.keypad is None:
            return False
        self.keypad.feed(ev)
        return True

    def left(self) -> LeftRoom:
        """How the call left its room, for the flow (the rooms set the fields)."""
        member, self.member = self.member, None
        return LeftRoom(self.leave_reason, member.member_id if member else "", self.room_uuid,
                        self.record_params)


def flow_settings(node: Node) -> FlowSettings:
    cfg = node.config
    return FlowSettings(answer_url=cfg.answer_url or None, answer_method=cfg.answer_method,
                        answer_timeout=cfg.answer_timeout,
                        max_documents_per_call=cfg.max_documents_per_call, limits=node.limits)


def new_session(node: Node, inc: IncomingCall, document: Document | None = None
                ) -> CallSession:
    """A taken call's session; with ``document``, a dial-out's (answered, running it)."""
    info = CallInfo(inc.uuid, inc.from_uri, inc.to_user, inc.to_uri, inc.caller_name,
                    inc.sip_headers, outbound=document is not None)
    return CallSession(inc, CallFlow(info, flow_settings(node), document))


async def overlay(node: Node, s: CallSession, clip, loops: int) -> None:
    """A clip to this caller alone (over whatever the caller hears), ``loops`` times or until
    cancelled when 0; taken off again at the end, so it never replays later."""
    await node.engine.play_to_call(s.uuid, clip, loops)
    try:
        if loops == 0:
            await trio.sleep_forever()
        await trio.sleep(clip.duration * loops)
    finally:
        if not s.ended:
            with trio.CancelScope(shield=True):
                await node.engine.stop_call_sound(s.uuid)


class CallDriver:
    """Runs calls for a node (its engine, webhook worker, sounds, rooms, faults, metrics)."""

    def __init__(self, node: Node):
        self.node = node

    async def main(self, s: CallSession) -> None:
        """One call, supervised: a fault ends this call alone, after its exit/action events."""
        node, inc = self.node, s.incoming
        log.info("call %s from %s to %s", s.uuid, inc.from_uri, inc.to_uri,
                 extra={"call_uuid": s.uuid, "event": "call-incoming"})
        final: list[Command] = []
        try:
            if not await node.faults.guard("call", self._run, s, call_uuid=s.uuid):
                s.fault = True
        finally:
            node.faults.call_soon("call", self._finish, s, final, call_uuid=s.uuid)
            if s.flow.state != CLOSED:  # finishing faulted: the call still gets its hang-up
                final += [c for c in s.flow.handle(Stopped(s.fault), trio.current_time())
                          if isinstance(c, (Answer, Hangup))]
        if final and node.accepting:
            with trio.CancelScope(shield=True), trio.move_on_after(FINAL_HANGUP_S):
                await node.faults.guard("call", self._commands, s, final, call_uuid=s.uuid)
        if s.bridged in node.calls and node.accepting:  # its <Dial> callee goes with it
            with trio.CancelScope(shield=True), trio.move_on_after(FINAL_HANGUP_S):
                await node.faults.guard("call", node.engine.hangup, s.bridged,
                                        call_uuid=s.bridged)

    async def _run(self, s: CallSession) -> None:
        with s.scope:
            async with trio.open_nursery() as call_nursery:
                s.nursery = call_nursery
                for task in s.tasks:
                    call_nursery.start_soon(task)
                cmds = s.flow.start(trio.current_time())
                while True:
                    event = await self._commands(s, cmds)
                    if event is None:
                        break
                    cmds = s.flow.handle(event, trio.current_time())

    async def _commands(self, s: CallSession, cmds: list[Command]) -> object | None:
        event = None
        for i, cmd in enumerate(cmds):
            assert i == len(cmds) - 1 or not has_result(cmd), cmds
            event = await self._do(s, cmd)
        return event

    def _finish(self, s: CallSession, final: list[Command]) -> None:
        """The call's task is over: out of its room (exit event), then its action is reported
        if it was still in a Conference; the final hang-up goes to ``final``."""
        node, now = self.node, trio.current_time()
        ended = False
        try:
            cmds = s.flow.handle(Stopped(s.fault), now)
            while cmds:
                final += [c for c in cmds if isinstance(c, (Answer, Hangup))]
                todo, cmds = [c for c in cmds if not isinstance(c, (Answer, Hangup))], []
                for cmd in todo:
                    if isinstance(cmd, LeaveRoom):
                        node.room_runs.leave_room(s)
                        cmds = s.flow.handle(s.left(), now)
                    elif isinstance(cmd, Submit):
                        node.webhooks.submit(s.uuid, cmd.url, cmd.method, cmd.params)
                    elif isinstance(cmd, End):
                        ended = True
                        node.metrics.calls_total[cmd.outcome] += 1
                    else:
                        raise AssertionError(f"unexpected {cmd!r} at the end of a call")
        finally:
            # the hangup request, last of the call's events, even if finishing faulted
            node.faults.call_soon("webhook", self._hangup_request, s, final, call_uuid=s.uuid)
            node.calls.pop(s.uuid, None)
            if not ended:
                node.metrics.calls_total[s.outcome or ("answered" if s.answered
                                                       else "unanswered")] += 1

    def _hangup_request(self, s: CallSession, final: list[Command]) -> None:
        """Plivo's hangup request (``hangup_url``), after the call's other events."""
        cfg = self.node.config
        if not cfg.hangup_url or s.agent:
            return
        code = next((c.code for c in final if isinstance(c, (Answer, Hangup)) and c.code),
                    s.hangup_code)
        cause, source = hangup_cause(s.answered, s.caller_hung_up, s.outcome, code,
                                     self.node.stopping, s.media_timeout)
        c = s.flow.call
        self.node.webhooks.submit(s.uuid, cfg.hangup_url, cfg.hangup_method, hangup_params(
            c.uuid, c.from_uri, c.to, c.caller_name, started=s.started_at,
            answered=s.answered_at, ended=time.time(), cause=cause, source=source,
            headers=c.sip_headers, outbound=c.outbound))

    async def _do(self, s: CallSession, cmd: Command) -> object | None:
        node = self.node
        if isinstance(cmd, Fetch):
            return await self._fetch(s, cmd)
        if isinstance(cmd, Answer):
            if cmd.code == 200:
                ok = bool(await node.engine.answer(s.uuid, 200))
                if ok and s.answered_at is None:
                    s.answered_at = time.time()
                return Answered(ok)
            s.hangup_code = s.hangup_code or cmd.code
            await node.engine.answer(s.uuid, cmd.code, cmd.reason, cmd.warning)
        elif isinstance(cmd, Hangup):
            s.hangup_code = s.hangup_code or cmd.code
            if cmd.code:
                await node.engine.hangup(s.uuid, cmd.code, cmd.reason)
            else:
                await node.engine.hangup(s.uuid)
        elif isinstance(cmd, PlayToCall):
            try:
                clip = await self._clip(cmd.verb)
            except SoundError as exc:
                return SoundFailed(str(exc), exc.option if isinstance(exc, SoundLimit) else None)
            await overlay(node, s, clip, cmd.loops)
            return SoundFinished()
        elif isinstance(cmd, Listen):
            return await self._listen(s, cmd)
        elif isinstance(cmd, RingDial):
            return await node.dials.ring(s, cmd.dial)
        elif isinstance(cmd, StartStream):
            if cmd.stream.keep_call_alive:
                return StreamEnded(await self._stream(s, cmd.stream))
            s.nursery.start_soon(functools.partial(
                node.faults.guard, "stream", self._stream, s, cmd.stream, call_uuid=s.uuid))
        elif isinstance(cmd, RecordCall):
            beep = None
            if cmd.record.play_beep:
                async def beep() -> None:
                    await overlay(node, s, await node.sounds.resolve("beep:1"), 1)
            return await record_call(node, s, cmd.record, beep)
        elif isinstance(cmd, CollectKeys):
            s.keypad = Keypad() if cmd.on else None
        elif isinstance(cmd, SendDigits):
            if cmd.wait:
                await send_digits(node.engine, s.uuid, cmd.digits)
                return DigitsSent()
            s.nursery.start_soon(send_digits, node.engine, s.uuid, cmd.digits)
        elif isinstance(cmd, ScheduleHangup):
            s.nursery.start_soon(self._hangup_at, s, cmd.at)
        elif isinstance(cmd, Sleep):
            await trio.sleep_until(cmd.until)
            return WaitOver()
        elif isinstance(cmd, JoinRoom):
            refused = await node.room_runs.join(s, cmd.conference)
            if refused is not None:
                return RoomRefused(refused)
            await s.left_room.wait()
            if s.unmixed is not None and not s.unmixed.is_set():
                # out of the old room's mixer (its leave runs in that run's order) before the
                # call goes on: its next room's join, or a <Play> the leave would take off
                await s.unmixed.wait()
            return s.left()
        elif isinstance(cmd, AwaitDrained):
            with trio.move_on_at(cmd.until) as waited:
                await node.webhooks.drained(s.uuid)
            return Drained(not waited.cancelled_caught)
        elif isinstance(cmd, Submit):
            node.webhooks.submit(s.uuid, cmd.url, cmd.method, cmd.params)
        elif isinstance(cmd, LimitHit):
            node.faults.limit(cmd.option)
        else:
            raise AssertionError(f"unexpected {cmd!r} while a call runs")
        return None

    async def _clip(self, sound: Play | Speak | str):
        """The audio of a Play, a Speak or a built-in sound (``beep:1``)."""
        sounds = self.node.sounds
        if isinstance(sound, Play):
            return await sounds.audio(sound.url)
        if isinstance(sound, Speak):
            return await sounds.speech(sound.text, sound.voice, sound.language)
        return await sounds.resolve(sound)

    async def _listen(self, s: CallSession, cmd: Listen) -> object:
        """A prompt (or silence) until a key, its end or ``until``: see :class:`Listen`."""
        keypad = s.keypad
        if keypad is None:  # (the flow always collects keys first)
            keypad = s.keypad = Keypad()
        if cmd.flush:
            keypad.pressed.clear()
        if keypad.pressed:
            return keypad.pressed.popleft()
        clip = None
        if cmd.prompt is not None:
            try:
                clip = await self._clip(cmd.prompt)
            except SoundError as exc:
                return SoundFailed(str(exc), exc.option if isinstance(exc, SoundLimit) else None)
            if keypad.pressed:  # pressed while the prompt was fetched or rendered
                return keypad.pressed.popleft()
        result: object = WaitOver()
        with trio.CancelScope(deadline=math.inf if cmd.until is None else cmd.until):
            async with trio.open_nursery() as nursery:
                async def play() -> None:
                    nonlocal result
                    await overlay(self.node, s, clip, cmd.loops)
                    result = SoundFinished()
                    nursery.cancel_scope.cancel()

                async def key() -> None:
                    nonlocal result
                    result = await keypad.next()
                    nursery.cancel_scope.cancel()

                if clip is not None:
                    nursery.start_soon(play)
                nursery.start_soon(key)
        return result

    async def _stream(self, s: CallSession, verb: StreamVerb) -> str:
        """A <Stream> of this call, from its pipe (``audio_stream.run``); why it ended."""
        from mixer_ext import streams

        node = self.node
        track = verb.audio_track
        want = ((streams.IN if track in ("inbound", "both") else 0)
                | (streams.OUT if track in ("outbound", "both") else 0))
        pipe = await node.engine.pipe(s.uuid, want)
        st = audio_stream.StreamRun(s.uuid, verb, pipe)
        if pipe is None:
            st.reason = "the call has no media, or streams already (one <Stream> per call)"
            log.warning("call %s: <Stream> to %s not started: %s", s.uuid, verb.url, st.reason)
            audio_stream.status(node, st, "DroppedStream", st.reason)
            return st.reason
        keys_in, keys_out = trio.open_memory_channel[str](64)
        s.stream_keys.append(keys_in)
        try:
            return await audio_stream.run(node, st, keys_out,
                                          functools.partial(send_digits, node.engine, s.uuid))
        finally:
            s.stream_keys.remove(keys_in)
            if not s.ended:
                with trio.CancelScope(shield=True), trio.move_on_after(FINAL_HANGUP_S):
                    await node.engine.unpipe(s.uuid)

    async def _hangup_at(self, s: CallSession, at: float) -> None:
        """``<Hangup schedule>``: the call ends at ``at`` (its BYE then ends its flow)."""
        await trio.sleep_until(at)
        if not s.ended:
            log.info("call %s: scheduled hang-up", s.uuid)
            await self.node.engine.hangup(s.uuid)

    async def _fetch(self, s: CallSession, cmd: Fetch) -> Fetched | FetchFailed:
        t0 = trio.current_time()
        try:
            return Fetched(await self.node.webhooks.fetch(cmd.url, cmd.method, cmd.params))
        except FetchError as exc:
            return FetchFailed(exc.reason, exc.retry, exc.option)
        finally:
            if cmd.purpose == "answer":
                self.node.metrics.answer_latency.observe(trio.current_time() - t0)
