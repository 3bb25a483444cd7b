"""Room runs: the trio side of :mod:`sipconf.core.room`.

One task per room run (its record is ``room_run.RoomRun``; the task has its own nursery) owns
the run's engine commands (in order), its time limit, room sounds (``max_room_sounds``), wait
music, the recording of its mix and the transcription after it; :meth:`RoomRuns.apply` carries
out what the room's state machine decided. Calls enter through :meth:`RoomRuns.join` (the
driver in ``calls.py``) and leave through the state machine (hang-up, kick, ``*``, time limit,
end of the run); a run that faults lets its members go on with their documents, other rooms
untouched. The floor (talker detection) and the digits a member presses (``digitsMatch``, DTMF
relay, hangup-on-star) are handled here too.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

import trio

from sipconf import room_recording
from sipconf.calls import CallSession, send_digits
from sipconf.core import room as roomstate
from sipconf.core.answer import Conference
from sipconf.core.digits import DigitCollector
from sipconf.engine import Dtmf, Floor, Talk
from sipconf.media.sounds import SoundError, SoundLimit
from sipconf.room_run import RoomRun
from sipconf.webhooks import conference_params

if TYPE_CHECKING:
    from sipconf.node import Node

log = logging.getLogger("sipconf.node")


class RoomRuns:
    """The node's room runs (``node.rooms``, by room name) and what happens in them."""

    def __init__(self, node: Node):
        self.node = node

    async def join(self, s: CallSession, conf: Conference) -> str | None:
        """Put the call in the room (starting a run if needed); the reason if refused. The
        call's ``left_room`` is set when it leaves. It never waits (no checkpoint): a call
        is in its room, or not, in one step (the units a new run starts before its task has
        its nursery are started in it, see ``spawn``)."""
        node = self.node
        run = node.rooms.get(conf.room)
        if run is None:
            run = node.rooms[conf.room] = RoomRun(roomstate.Room(conf.room,
                                                                 clock=trio.current_time))
        events = run.state.join(s.uuid, conf)
        refused = next((e for e in events if isinstance(e, roomstate.Refused)), None)
        if refused is not None:
            if run.state.empty:
                node.rooms.pop(conf.room, None)
            return refused.reason
        for ev in events:
            if isinstance(ev, roomstate.RunStarted):
                run.key = ev.room_uuid
                node.nursery.start_soon(self._room_supervised, run, name=f"room-{conf.room}")
        s.room = run
        s.left_room = trio.Event()
        s.room_uuid = run.key
        self.apply(run, events)
        return None

    def on_floor(self, ev: Floor) -> None:
        run = next((r for r in self.node.rooms.values() if r.key == ev.room_key), None)
        if run is not None:
            self.give_floor(run, ev.uuid)

    def on_talk(self, ev: Talk) -> None:
        """A member started or stopped talking: a callback when its Conference asked for
        them (talkEvent)."""
        run = next((r for r in self.node.rooms.values() if r.key == ev.room_key), None)
        member = run.state.members.get(ev.uuid) if run is not None else None
        if member is None:
            return
        if member.conference.talk_event:
            self.callback(run, member, "talking" if ev.on else "stopped-talking")

    def callback(self, run: RoomRun, member: roomstate.Member, action: str,
                  **extra: str) -> None:
        """A callbackUrl event for a member, spooled and sent in the call's order."""
        conf = member.conference
        if conf.callback_url:
            self.node.webhooks.submit(member.call_uuid, conf.callback_url, conf.callback_method,
                                 conference_params(action, run.state.name, run.key,
                                                   member.member_id, member.call_uuid, **extra))

    def give_floor(self, run: RoomRun, call_uuid: str) -> None:
        member = run.state.members.get(call_uuid)
        if member is None or run.floor == call_uuid or member.silenced:
            return
        run.floor = call_uuid
        log.info("room %s: member %s has the floor", run.state.name, member.member_id)
        if member.conference.floor_event:
            self.callback(run, member, "floor")

    def on_digit(self, s: CallSession, ev: Dtmf) -> None:
        run, member, digits = s.room, s.member, s.digits
        if run is None or member is None or digits is None:
            return
        press = digits.feed(ev.digit, ev.source, ev.at)
        if press is None:
            return
        log.info("call %s pressed %s (%s) in room %s", s.uuid, press.digit, press.source,
                 run.state.name)
        conf = member.conference
        if press.matched is not None:
            self.callback(run, member, "digits", ConferenceDigitsMatch=press.matched)
        if conf.relay_dtmf:
            # in-band keys of an unmuted member are in the mix already: tones only otherwise
            tones = press.source != "inband" or member.muted
            for other in run.state.members.values():
                if other.call_uuid != s.uuid and not other.waiting:
                    run.do(self.node.engine.send_digits, other.call_uuid, press.digit, tones)
        if press.digit == "*" and conf.hangup_on_star:
            log.info("call %s pressed * in room %s: leaving it", s.uuid, run.state.name)
            self.apply(run, run.state.leave(s.uuid, roomstate.STAR))

    def leave_room(self, s: CallSession) -> None:
        """The call is going away (or its task ends): take it out of its room."""
        run = s.room
        if run is not None and s.uuid in run.state.members:
            self.apply(run, run.state.leave(s.uuid, roomstate.HANGUP))
        s.room = None

    def apply(self, run: RoomRun, events: list) -> None:
        """Carry out what the room state machine decided (on the trio thread, no waiting)."""
        name = run.state.name
        for ev in events:
            if isinstance(ev, roomstate.Joined):
                m = ev.member
                session = self.node.calls.get(m.call_uuid)
                if session is not None:
                    session.member = m
                    session.digits = DigitCollector(m.conference.digits_match)
                log.info("call %s joined room %s as member %s%s", m.call_uuid, name,
                         m.member_id, " (waiting)" if m.waiting else "",
                         extra={"call_uuid": m.call_uuid, "room": name, "event": "enter"})
                run.do(self.node.engine.join, m.call_uuid, run.key, m.muted or m.waiting,
                       m.deaf or m.waiting)
                self.callback(run, m, "enter")
                url = m.conference.agent_url
                if url and url not in run.agents and not (session and session.agent):
                    run.agents.add(url)  # once per run, whoever else asks for it
                    self.spawn(run, "agent", self._agent, name, m.conference)
                if m.conference.send_digits:
                    self.spawn(run, "send-digits", self._send_digits, run, m)
                if len(run.state.members) == 1:
                    self.give_floor(run, m.call_uuid)  # alone: the floor is theirs
            elif isinstance(ev, roomstate.MemberState):
                m = ev.member
                if not ev.waiting:
                    log.info("room %s: member %s is live", name, m.member_id)
                run.do(self.node.engine.set_member, m.call_uuid, m.silenced, m.unhearing,
                       m.volume_in, m.volume_out, self.denoised(m), self.leveled(m))
            elif isinstance(ev, roomstate.Controls):
                m = ev.member
                log.info("room %s: member %s %s, %s, volume in %+.1f dB, out %+.1f dB", name,
                         m.member_id, "muted" if m.muted else "unmuted",
                         "deaf" if m.deaf else "hearing", m.volume_in, m.volume_out)
                run.do(self.node.engine.set_member, m.call_uuid, m.silenced, m.unhearing,
                       m.volume_in, m.volume_out, self.denoised(m), self.leveled(m))
            elif isinstance(ev, roomstate.Coach):
                m = ev.member
                target = run.state.members.get(m.coaching) if m.coaching else None
                log.info("room %s: member %s %s", name, m.member_id,
                         f"coaches member {target.member_id}" if target else
                         "coaches nobody (its member left)" if m.coach else "coaches no more")
                run.do(self.node.engine.set_coach, m.call_uuid, m.coach, m.coaching or None)
            elif isinstance(ev, roomstate.Hold):
                log.info("room %s: member %s %s", name, ev.member.member_id,
                         "on hold" if ev.on else "off hold")
                self.callback(run, ev.member, "hold" if ev.on else "unhold")
            elif isinstance(ev, roomstate.Record):
                conf = ev.member.conference
                self.start_recording(run, conf.record_file_format, ev.member, conf.record_tracks)
            elif isinstance(ev, roomstate.Music):
                self.music(run, ev.member, ev.on)
            elif isinstance(ev, roomstate.PlaySound):
                if self.reserve_sound(run, ev.sound) and \
                        not self.spawn(run, "sound", self._room_sound, run, ev.sound,
                                       self.sound_params(ev.call_uuid)):
                    run.sounds -= 1
            elif isinstance(ev, roomstate.Deadline):
                self._arm_time_limit(run, ev.at)
            elif isinstance(ev, roomstate.Left):
                self._member_left(run, ev)
            elif isinstance(ev, roomstate.RunEnded):
                log.info("room %s: run %s ended", name, ev.room_uuid)
                run.ended.set()
                run.send.close()
                if self.node.rooms.get(name) is run:
                    del self.node.rooms[name]

    def _member_left(self, run: RoomRun, ev: roomstate.Left) -> None:
        call_uuid = ev.member.call_uuid
        scope = run.music.pop(call_uuid, None)
        if scope is not None:
            scope.cancel()
        self.callback(run, ev.member, "exit")  # spooled before the line that says so
        log.info("call %s left room %s (%s)", call_uuid, run.state.name, ev.reason,
                 extra={"call_uuid": call_uuid, "room": run.state.name, "event": "exit"})
        if run.floor == call_uuid:
            run.floor = None
        left = [self.node.calls.get(m.call_uuid) for m in run.state.members.values()]
        if left and all(s is not None and s.agent for s in left):
            # agents alone: they keep no room open (each is hung up, and leaves like a call)
            for s in left:
                log.info("room %s: agent %s leaves with the last caller", run.state.name, s.uuid)
                run.do(self.node.engine.hangup, s.uuid)
        session = self.node.calls.get(call_uuid)
        if session is None:
            return
        session.room = None
        session.digits = None
        session.record_params = dict(run.record_params)
        session.leave_reason = ev.reason
        for scope in run.clips.pop(call_uuid, ()):
            scope.cancel()  # its API clips end with its stay (the leave takes the sound off)
        if not session.ended:  # the call goes on once the mixer has let it go (``unmixed``)
            session.unmixed = trio.Event()
            run.leaving.append(session.unmixed)
            run.do(self._unmix, call_uuid, run.key, session.unmixed)
        session.left_room.set()

    async def _unmix(self, call_uuid: str, room_key: str, done: trio.Event) -> None:
        """Out of the room's mixer (scoped: nothing if the call is in another room)."""
        try:
            await self.node.engine.leave(call_uuid, room_key)
        finally:
            done.set()

    async def _send_digits(self, run: RoomRun, member: roomstate.Member) -> None:
        """``sendDigits``: to the member once the engine has it in the room (after its join,
        in the run's order), in a unit of its own so that pauses (w/W) hold up nothing."""
        async def joined() -> None:
            pass

        await run.in_order(joined)
        if run.state.members.get(member.call_uuid) is member:
            await send_digits(self.node.engine, member.call_uuid,
                              member.conference.send_digits)

    def music(self, run: RoomRun, member: roomstate.Member, on: bool) -> None:
        old = run.music.pop(member.call_uuid, None)
        if old is not None:
            old.cancel()
        if on and not run.closed:
            scope = run.music[member.call_uuid] = trio.CancelScope()
            self.spawn(run, "sound", self._start_music, run, member, scope)
        elif not on:
            run.do(self.node.engine.stop_call_sound, member.call_uuid)

    async def clip_to_member(self, run: RoomRun, s: CallSession, member: roomstate.Member,
                              clip) -> None:
        """A clip to one member (control API), for as long as it stays in the room (its
        leave takes the clip off: nothing of it may touch what the call does next); a
        waiting member's music comes back after."""
        engine = self.node.engine
        scope = trio.CancelScope()
        if run.state.members.get(s.uuid) is not member:
            return
        run.clips.setdefault(s.uuid, set()).add(scope)
        try:
            with scope:
                await run.in_order(engine.play_to_call, s.uuid, clip, 1)
                await trio.sleep(clip.duration)
        finally:
            scopes = run.clips.get(s.uuid)
            if scopes is not None:
                scopes.discard(scope)
        if run.state.members.get(s.uuid) is member and not s.ended \
                and not run.clips.get(s.uuid):  # still here, and no newer clip playing
            run.do(engine.stop_call_sound, s.uuid)
            if member.call_uuid in run.music:
                self.music(run, member, True)

    async def _start_music(self, run: RoomRun, member: roomstate.Member,
                           scope: trio.CancelScope) -> None:
        with scope:
            try:
                if member.held:  # the API's hold music: a wav/mp3 file
                    clip = await self.node.sounds.audio(member.hold_sound)
                else:  # waitSound: a sound document, requested with the call's parameters
                    clip = await self.node.sounds.resolve(member.conference.wait_sound,
                                                          self.sound_params(member.call_uuid))
            except SoundError as exc:
                if isinstance(exc, SoundLimit):
                    self.node.faults.limit(exc.option)
                log.warning("room %s: %s skipped: %s", run.state.name,
                            "hold music" if member.held else "wait sound", exc)
                return
            run.do(self.node.engine.play_to_call, member.call_uuid, clip, 0)

    def spawn(self, run: RoomRun, where: str, fn, *args) -> bool:
        """Start a unit of the room run (a sound, the recording, the timer) in the run's
        nursery (as soon as its task has one), supervised; False if the run is over."""
        if run.closed or run.ended.is_set():
            return False
        unit = functools.partial(self.node.faults.guard, where, fn, *args, room=run.state.name)
        if run.nursery is None:
            run.pending.append(unit)
        else:
            run.nursery.start_soon(unit)
        return True

    def reserve_sound(self, run: RoomRun, what: str) -> bool:
        """Room sounds are limited (max_room_sounds): a full room skips the sound."""
        if run.sounds >= self.node.config.max_room_sounds:
            self.node.faults.limit("max_room_sounds")
            log.warning("room %s: sound %s skipped: %d playing already (max_room_sounds)",
                        run.state.name, what, run.sounds)
            return False
        run.sounds += 1
        return True

    def sound_params(self, call_uuid: str) -> dict[str, str]:
        """What a sound document is requested with: the parameters of the call it is for."""
        session = self.node.calls.get(call_uuid)
        if session is None:
            return {"CallUUID": call_uuid}
        return session.params("completed" if session.ended else "in-progress")

    async def _room_sound(self, run: RoomRun, spec: str,
                          params: dict[str, str] | None = None) -> None:
        """An enter/exit sound, mixed into the room like a member (it never stalls the mixer:
        it is fetched and decoded here, then the clock only walks PCM)."""
        try:
            clip = await self.node.sounds.resolve(spec, params)
        except SoundError as exc:
            run.sounds -= 1
            if isinstance(exc, SoundLimit):
                self.node.faults.limit(exc.option)
            log.warning("room %s: sound %s skipped: %s", run.state.name, spec, exc)
            return
        except BaseException:
            run.sounds -= 1
            raise
        await self.play_in_room(run, clip, True)

    async def play_in_room(self, run: RoomRun, clip, reserved: bool = False) -> None:
        """Mix a clip into the room; ``reserved``: it holds one of the room's sound places."""
        try:
            # in the run's order: after the join that makes the mixer room
            sound_id = await run.in_order(self.node.engine.play_to_room, run.key, clip, 1,
                                          undo=self.node.engine.stop_room_sound)
            if sound_id is None:
                log.warning("room %s: the mixer took no more sounds: one skipped",
                            run.state.name)
                return
            try:
                await trio.sleep(clip.duration + 0.1)
            finally:
                with trio.CancelScope(shield=True):
                    await self.node.engine.stop_room_sound(sound_id)
        finally:
            if reserved:
                run.sounds -= 1

    def _arm_time_limit(self, run: RoomRun, at: float) -> None:
        if run.timer is not None:
            run.timer.cancel()
        if run.closed:
            return
        run.timer = trio.CancelScope()
        self.spawn(run, "room-timer", self._time_limit, run, at, run.timer)

    async def _time_limit(self, run: RoomRun, at: float, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep_until(at)
            events = run.state.expire()
            if events:
                log.info("room %s: time limit reached", run.state.name)
                self.apply(run, events)

    async def _room_supervised(self, run: RoomRun) -> None:
        """The room run as a unit: if it faults, its members leave it and go on with their
        documents; other rooms are untouched."""
        await self.node.faults.guard("room", self._room_main, run, room=run.state.name,
                                     on_fault=lambda exc: self._room_failed(run))

    def _room_failed(self, run: RoomRun) -> None:
        run.ended.set()
        run.send.close()
        if self.node.rooms.get(run.state.name) is run:
            del self.node.rooms[run.state.name]
        for m in list(run.state.members.values()):
            session = self.node.calls.get(m.call_uuid)
            if session is None:
                continue
            session.room, session.digits, session.leave_reason = None, None, "error"
            if not session.ended and self.node.nursery is not None:
                session.unmixed = trio.Event()
                self.node.nursery.start_soon(functools.partial(
                    self.node.faults.guard, "room", self._unmix, m.call_uuid, run.key,
                    session.unmixed, call_uuid=m.call_uuid, room=run.state.name))
            session.left_room.set()

    async def _room_main(self, run: RoomRun) -> None:
        """A room run's own task: runs its engine commands in order until the run ends; its
        nursery holds the run's timer, sounds and music, all cancelled with it. Once it is
        over (however: the run ended, it faulted, the node is stopping), no unit starts."""
        try:
            async with trio.open_nursery() as nursery:
                run.nursery = nursery
                pending, run.pending = run.pending, []
                for unit in pending:
                    nursery.start_soon(unit)
                try:
                    async for action in run.recv:  # ends when the run ends (channel closed)
                        try:
                            await action()
                        except Exception as exc:  # noqa: BLE001 - one failed command must not stop the room
                            self.node.faults.record("room", exc, room=run.state.name)
                finally:  # (the nursery only closes later, once its units are cancelled)
                    run.closed = True
                nursery.cancel_scope.cancel()
        finally:
            run.closed = True
            run.nursery = None
            for done in run.leaving:  # (a leave that never ran: no one waits for it)
                done.set()

    def denoised(self, m: roomstate.Member) -> bool:
        """Is the member's voice denoised and gated: its own setting, else the node's."""
        return self.node.config.noise_suppression if m.denoise is None else m.denoise

    def leveled(self, m: roomstate.Member) -> bool:
        """Is the member's level set automatically (AGC): its own setting, else the node's."""
        return self.node.config.agc if m.agc is None else m.agc

    async def _agent(self, room: str, conf) -> None:
        """``agentUrl``: the agent joins the room (as POST .../agents would make it)."""
        from sipconf import agents

        status, reply = await agents.start(self.node, room, {
            "url": conf.agent_url, "protocol": conf.agent_protocol,
            **({} if conf.agent_protocol == "twilio"
               else {"contentType": conf.agent_content_type}),
            **({"attrs": {"callbackUrl": conf.callback_url}} if conf.callback_url else {})})
        if status != 200:
            log.warning("room %s: agentUrl %s not attached: %s", room, conf.agent_url,
                        reply.get("error"))

    def start_recording(self, run: RoomRun, fmt: str,
                        owner: roomstate.Member | None = None, tracks: bool = False) -> bool:
        """Record the run from now (see ``room_recording``); False if it is recording."""
        return room_recording.start(self, run, fmt, owner, tracks)
