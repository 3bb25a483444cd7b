"""The thin trio driver of one call: runs its :class:`~sipconf.core.callflow.CallFlow` against
the engine, the webhook worker, the sound library and the rooms.

Every decision is the flow's; this module only carries its commands out and feeds the results
back, under the call's cancel scope (cancelled when the call ends or the node stops) and
``Faults.guard``: a fault ends only that call, after its exit/action events, then the call is
hung up (500 + Warning if it was not answered yet).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from sipconf.core import room as roomstate
from sipconf.core.answer import Play
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
    Command,
    Drained,
    End,
    Fetch,
    Fetched,
    FetchFailed,
    Hangup,
    JoinRoom,
    LeaveRoom,
    LeftRoom,
    LimitHit,
    PlayToCall,
    RoomRefused,
    Sleep,
    SoundFailed,
    SoundFinished,
    Stopped,
    Submit,
    WaitOver,
    has_result,
)
from sipconf.core.digits import DigitCollector
from sipconf.engine import IncomingCall
from sipconf.media.sounds import SoundError, SoundLimit
from sipconf.webhooks import FetchError

if TYPE_CHECKING:
    from sipconf.node import Node
    from sipconf.rooms import RoomRun

log = logging.getLogger("sipconf.node")

FINAL_HANGUP_S = 5.0  # how long the last hang-up of a call may take


@dataclass
class CallSession:
    """One call: its flow (the decisions) and what the trio side keeps for it."""

    incoming: IncomingCall
    flow: CallFlow
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    room: RoomRun | None = None
    member: roomstate.Member | None = None
    left_room: trio.Event = field(default_factory=trio.Event)
    leave_reason: str = ""
    media_rate: int | None = None
    nursery: trio.Nursery | None = None
    digits: DigitCollector | None = None  # while in a room
    room_uuid: str = ""
    record_params: dict[str, str] = field(default_factory=dict)  # of the room run it was in
    fault: bool = False  # one of its engine events faulted

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

    def gone(self) -> None:
        """The call ended (BYE, CANCEL, failure): stop whatever it is doing."""
        self.flow.handle(CallGone(), trio.current_time())
        self.scope.cancel()

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


def new_session(node: Node, inc: IncomingCall) -> CallSession:
    info = CallInfo(inc.uuid, inc.from_uri, inc.to_user, inc.to_uri, inc.caller_name)
    return CallSession(inc, CallFlow(info, flow_settings(node)))


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

    async def _run(self, s: CallSession) -> None:
        with s.scope:
            async with trio.open_nursery() as call_nursery:
                s.nursery = call_nursery
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
            node.calls.pop(s.uuid, None)
            if not ended:
                node.metrics.calls_total[s.outcome or ("answered" if s.answered
                                                       else "unanswered")] += 1

    async def _do(self, s: CallSession, cmd: Command) -> object | None:
        node = self.node
        if isinstance(cmd, Fetch):
            return await self._fetch(s, cmd)
        if isinstance(cmd, Answer):
            if cmd.code == 200:
                return Answered(bool(await node.engine.answer(s.uuid, 200)))
            await node.engine.answer(s.uuid, cmd.code, cmd.reason, cmd.warning)
        elif isinstance(cmd, Hangup):
            if cmd.code:
                await node.engine.hangup(s.uuid, cmd.code, cmd.reason)
            else:
                await node.engine.hangup(s.uuid)
        elif isinstance(cmd, PlayToCall):
            verb = cmd.verb
            try:
                if isinstance(verb, Play):
                    clip = await node.sounds.audio(verb.url)
                else:
                    clip = await node.sounds.speech(verb.text, verb.voice, verb.language)
            except SoundError as exc:
                return SoundFailed(str(exc), exc.option if isinstance(exc, SoundLimit) else None)
            await overlay(node, s, clip, cmd.loops)
            return SoundFinished()
        elif isinstance(cmd, Sleep):
            await trio.sleep_until(cmd.until)
            return WaitOver()
        elif isinstance(cmd, JoinRoom):
            refused = await node.room_runs.join(s, cmd.conference)
            if refused is not None:
                return RoomRefused(refused)
            await s.left_room.wait()
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

    async def _fetch(self, s: CallSession, cmd: Fetch) -> Fetched | FetchFailed:
        t0 = trio.current_time()
        try:
            return Fetched(await self.node.webhooks.fetch(cmd.url, cmd.method, cmd.params))
        except FetchError as exc:
            return FetchFailed(exc.reason, exc.retry, exc.option)
        finally:
            if cmd.purpose == "answer":
                self.node.metrics.answer_latency.observe(trio.current_time() - t0)
