"""Room state: who is in a conference room, who waits, and what each change means.

Sans-I/O: methods take what happened (a call joins, leaves, presses `*`, the clock passes the
time limit) with the time, and return events for the I/O layer to act on: mix or mute a leg,
start or stop a member's wait music, play an enter/exit sound to the room, and tell a member it
has left (a kick is just a `Left` for someone other than the caller who acted).

A room "run" starts with its first member and ends when the last one leaves; each run has its
own ConferenceUUID and counts member IDs up from 1. Behaviour follows shared/behaviour.md.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from sipconf.core.answer import Conference

log = logging.getLogger("sipconf.node")

# Why a member left the room.
HANGUP = "hangup"  # the call ended
STAR = "hangup-on-star"  # the member pressed *
END_CONFERENCE = "end-conference-on-exit"  # a member with endConferenceOnExit left
STAY_ALONE = "stay-alone"  # left alone in a room whose member has stayAlone=false
TIME_LIMIT = "time-limit"  # the room's timeLimit expired
KICKED = "kicked"  # removed through the control API
ENDED = "ended"  # the room was ended through the control API


MAX_COACHES = 4  # coaches one member may hear at once (the mixer's MIX_MAX_HEARS)
VOLUME_MIN_DB, VOLUME_MAX_DB = -24.0, 12.0  # a member's volumes, as FreeSWITCH's -4..4 steps


@dataclass
class Member:
    call_uuid: str
    member_id: str
    conference: Conference
    joined_at: float
    waiting: bool = False  # not mixed in, hears no one (startConferenceOnEnter=false)
    music: bool = False  # hears its waitSound
    muted: bool = False  # heard by nobody (the XML's muted, or the control API)
    deaf: bool = False  # hears nobody (the control API)
    volume_in: float = 0.0  # dB on what the room hears of this member (the control API)
    volume_out: float = 0.0  # dB on what this member hears of the room
    coach: bool = False  # heard only by the member it coaches (control API)
    coaching: str = ""  # that member's call UUID; "" when it left (then nobody hears the coach)
    held: bool = False  # on hold: neither heard nor hearing, hears hold_sound (control API)
    hold_sound: str = ""
    denoise: bool | None = None  # denoised and gated (None: the node's --noise-suppression)
    agc: bool | None = None  # automatic level (None: the node's --agc)

    @property
    def silenced(self) -> bool:
        """Nobody hears it: muted, waiting or held."""
        return self.muted or self.waiting or self.held

    @property
    def unhearing(self) -> bool:
        """It hears nobody: deaf, waiting or held."""
        return self.deaf or self.waiting or self.held


@dataclass(frozen=True)
class RunStarted:
    room_uuid: str


@dataclass(frozen=True)
class Joined:
    member: Member
    room_uuid: str


@dataclass(frozen=True)
class Refused:
    call_uuid: str
    reason: str


@dataclass(frozen=True)
class Left:
    member: Member
    room_uuid: str
    reason: str


@dataclass(frozen=True)
class Controls:
    """A member's muted/deaf or volume changed (control API)."""

    member: Member


@dataclass(frozen=True)
class Hold:
    """A member was put on hold (on) or taken off it (control API)."""

    member: Member
    on: bool


@dataclass(frozen=True)
class Coach:
    """A member started coaching another (``member.coaching``), stopped (``member.coach``
    False), or the member it coached left."""

    member: Member


@dataclass(frozen=True)
class RunEnded:
    room_uuid: str


@dataclass(frozen=True)
class MemberState:
    """How a member is mixed now: waiting (deaf and silent) or live (muted if it asked)."""

    member: Member
    waiting: bool


@dataclass(frozen=True)
class Music:
    """Start (on) or stop a member's wait music (its waitSound, looped)."""

    member: Member
    on: bool


@dataclass(frozen=True)
class PlaySound:
    """Play an enter/exit sound (`beep:1`, `beep:2` or a URL) to the whole room."""

    sound: str
    room_uuid: str
    call_uuid: str = ""  # the member whose enter/exit it is (a sound document is asked for it)


@dataclass(frozen=True)
class Deadline:
    """The room's time limit now ends at ``at`` (monotonic seconds)."""

    at: float


@dataclass(frozen=True)
class Record:
    """Start recording the run now (``record``); ``member`` gets the record event. With
    ``recordWhenAlone="false"`` it comes once two members are live; otherwise at the join."""

    member: Member


RoomEvent = (RunStarted | Joined | Refused | Left | RunEnded | MemberState | Music | PlaySound
             | Deadline | Controls | Record | Hold | Coach)


@dataclass
class Room:
    name: str
    new_uuid: Callable[[], str] = field(default=lambda: str(uuid.uuid4()))
    clock: Callable[[], float] = field(default=time.monotonic)
    run_uuid: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    started: bool = False  # a startConferenceOnEnter member has joined this run
    peak: int = 0  # most members present at once in this run
    deadline: float | None = None
    started_at: float | None = None  # clock() when this run started (its run time, for APIs)
    record_pending: Member | None = None  # record, recordWhenAlone=false: waits for two live
    _next_id: int = 1

    @property
    def empty(self) -> bool:
        return not self.members

    def join(self, call_uuid: str, conf: Conference) -> list[RoomEvent]:
        if call_uuid in self.members:
            raise ValueError(f"call {call_uuid} is already in room {self.name}")
        if len(self.members) >= conf.max_members:
            return [Refused(call_uuid, f"room {self.name} is full ({conf.max_members} members)")]
        now = self.clock()
        events: list[RoomEvent] = []
        if self.run_uuid is None:
            self.run_uuid = self.new_uuid()
            self.started_at = now
            self._next_id = 1
            self.started = False
            self.peak = 0
            self.record_pending = None
            events.append(RunStarted(self.run_uuid))
        member = Member(call_uuid, str(self._next_id), conf, now, muted=conf.muted,
                        denoise=conf.noise_suppression, agc=conf.agc)
        self._next_id += 1
        if conf.start_conference_on_enter:
            self.started = True
        member.waiting = not self.started
        self.members[call_uuid] = member
        self.peak = max(self.peak, len(self.members))
        events.append(Joined(member, self.run_uuid))
        events.append(MemberState(member, member.waiting))
        # Each joiner restarts the room timer with its own timeLimit.
        self.deadline = now + conf.time_limit
        events.append(Deadline(self.deadline))
        if conf.enter_sound:
            events.append(PlaySound(conf.enter_sound, self.run_uuid, call_uuid))
        events += self._sync()
        if conf.coach:
            events += self._coach_on_join(member, conf.coach)
        if conf.record:
            if conf.record_when_alone is False:
                self.record_pending = self.record_pending or member
            else:
                events.append(Record(member))
        events += self._record_due()
        return events

    def _record_due(self) -> list[RoomEvent]:
        """A recording that waits for company (recordWhenAlone=false) starts once two members
        are live (mixed, not waiting for the conference to start)."""
        pending = self.record_pending
        if pending is None or sum(not m.waiting for m in self.members.values()) < 2:
            return []
        self.record_pending = None
        return [Record(pending)]

    def leave(self, call_uuid: str, reason: str = HANGUP) -> list[RoomEvent]:
        member = self.members.pop(call_uuid, None)
        if member is None:
            return []
        run = self.run_uuid
        if self.record_pending is member:
            self.record_pending = None
        events: list[RoomEvent] = [Left(member, run, reason)]
        for m in self.members.values():  # its coaches now whisper to nobody
            if m.coaching == call_uuid:
                m.coaching = ""
                events.append(Coach(m))
        if member.conference.end_conference_on_exit:
            events += self._clear(END_CONFERENCE)
        elif (len(self.members) == 1 and self.peak >= 2
              and not next(iter(self.members.values())).conference.stay_alone):
            events += self._clear(STAY_ALONE)
        elif self.members and member.conference.exit_sound:
            events.append(PlaySound(member.conference.exit_sound, run, call_uuid))
        if not self.members:
            events.append(RunEnded(run))
            self.run_uuid = None
            self.deadline = None
        else:
            events += self._sync()
        return events

    def control(self, call_uuid: str, *, muted: bool | None = None,
                deaf: bool | None = None, volume_in: float | None = None,
                volume_out: float | None = None, denoise: bool | None = None,
                agc: bool | None = None) -> list[RoomEvent]:
        """Mute/unmute, deafen/undeafen a member, set its volumes (dB, clamped to
        VOLUME_MIN_DB..VOLUME_MAX_DB), turn its noise suppression or automatic level on or off."""
        m = self.members.get(call_uuid)
        if m is None:
            return []
        changed = False
        if muted is not None and muted != m.muted:
            m.muted, changed = muted, True
        if deaf is not None and deaf != m.deaf:
            m.deaf, changed = deaf, True
        if denoise is not None and denoise != m.denoise:
            m.denoise, changed = denoise, True
        if agc is not None and agc != m.agc:
            m.agc, changed = agc, True
        for attr, value in (("volume_in", volume_in), ("volume_out", volume_out)):
            if value is not None:
                value = min(VOLUME_MAX_DB, max(VOLUME_MIN_DB, float(value)))
                if value != getattr(m, attr):
                    setattr(m, attr, value)
                    changed = True
        return [Controls(m)] if changed else []

    def hold(self, call_uuid: str, on: bool, sound: str = "") -> list[RoomEvent]:
        """Put a member on hold (``sound``: what it hears meanwhile, looped; "" silence) or
        take it off: while held it is neither heard nor hears the room."""
        m = self.members.get(call_uuid)
        if m is None or (m.held == on and (not on or m.hold_sound == sound)):
            return []
        events: list[RoomEvent] = []
        if m.music:  # whatever plays now (wait or hold music) stops; _sync starts the next
            m.music = False
            events.append(Music(m, False))
        m.held, m.hold_sound = on, sound if on else ""
        events += [Controls(m), Hold(m, on)]
        return events + self._sync()

    def _coach_on_join(self, member: Member, ref: str) -> list[RoomEvent]:
        """``coach="..."``: the joiner coaches the member with that ID or CallUUID. If there is
        none (or it hears MAX_COACHES already) the joiner is still a coach, heard by nobody:
        a whisper meant for one member is never heard by the room."""
        target = next((m.call_uuid for m in self.members.values()
                       if ref in (m.member_id, m.call_uuid) and m is not member), None)
        events = self.coach(member.call_uuid, target) if target is not None else None
        if events is not None:
            return events
        log.warning("room %s: member %s joins as a coach heard by nobody: no member %s to "
                    "coach%s", self.name, member.member_id, ref,
                    "" if target is None else f" (it hears {MAX_COACHES} coaches already)")
        member.coach, member.coaching = True, ""
        return [Coach(member)]

    def coach(self, call_uuid: str, target: str | None) -> list[RoomEvent] | None:
        """``call_uuid`` coaches ``target`` (None: stops coaching): heard by that member
        alone, hearing the whole room. None when it cannot be: no such member, itself, or
        the target already hears MAX_COACHES coaches."""
        m = self.members.get(call_uuid)
        if m is None:
            return None
        if target is None:
            if not m.coach:
                return []
            m.coach, m.coaching = False, ""
            return [Coach(m)]
        if target == call_uuid or target not in self.members:
            return None
        if m.coaching == target:
            return []
        if sum(1 for o in self.members.values() if o.coaching == target) >= MAX_COACHES:
            return None
        m.coach, m.coaching = True, target
        return [Coach(m)]

    def end(self) -> list[RoomEvent]:
        """Everyone leaves now (control API)."""
        if not self.members:
            return []
        return self._end_run(ENDED)

    def expire(self) -> list[RoomEvent]:
        """The clock says the time limit may have passed: if so, everyone leaves."""
        if self.deadline is None or self.clock() < self.deadline or not self.members:
            return []
        return self._end_run(TIME_LIMIT)

    def _end_run(self, reason: str) -> list[RoomEvent]:
        run = self.run_uuid
        events = self._clear(reason)
        events.append(RunEnded(run))
        self.run_uuid = None
        self.deadline = None
        return events

    def _clear(self, reason: str) -> list[RoomEvent]:
        self.record_pending = None
        events: list[RoomEvent] = []
        for call_uuid in list(self.members):
            member = self.members.pop(call_uuid)
            if member.music:
                member.music = False
                events.append(Music(member, False))
            events.append(Left(member, self.run_uuid, reason))
        return events

    def _sync(self) -> list[RoomEvent]:
        """Bring every member's waiting and music state in line with the room."""
        events: list[RoomEvent] = []
        live = [m for m in self.members.values() if not (m.waiting and not self.started)]
        for m in self.members.values():
            if m.waiting and self.started:
                m.waiting = False
                events.append(MemberState(m, False))
            alone = not m.waiting and len(live) == 1
            if m.held:
                music = bool(m.hold_sound)
            else:
                music = bool(m.conference.wait_sound) and (m.waiting or alone)
            if music != m.music:
                m.music = music
                events.append(Music(m, music))
        return events
