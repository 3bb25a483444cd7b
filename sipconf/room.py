"""Room state: who is in a conference room and what each change means.

Sans-I/O: methods take what happened (a call joins, a call leaves) and return events for the I/O
layer to act on (mix the leg, send callbacks, end the room). A room "run" starts with its first
member and ends when the last one leaves; each run has its own ConferenceUUID and counts member
IDs up from 1.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from .answer import Conference


@dataclass
class Member:
    call_uuid: str
    member_id: str
    conference: Conference
    joined_at: float


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


@dataclass(frozen=True)
class RunEnded:
    room_uuid: str


RoomEvent = RunStarted | Joined | Refused | Left | RunEnded


@dataclass
class Room:
    name: str
    new_uuid: Callable[[], str] = field(default=lambda: str(uuid.uuid4()))
    clock: Callable[[], float] = field(default=time.monotonic)
    run_uuid: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    _next_id: int = 1

    @property
    def empty(self) -> bool:
        return not self.members

    def join(self, call_uuid: str, conf: Conference) -> list[RoomEvent]:
        if call_uuid in self.members:
            raise ValueError(f"call {call_uuid} is already in room {self.name}")
        if len(self.members) >= conf.max_members:
            return [Refused(call_uuid, f"room {self.name} is full ({conf.max_members} members)")]
        events: list[RoomEvent] = []
        if self.run_uuid is None:
            self.run_uuid = self.new_uuid()
            self._next_id = 1
            events.append(RunStarted(self.run_uuid))
        member = Member(call_uuid, str(self._next_id), conf, self.clock())
        self._next_id += 1
        self.members[call_uuid] = member
        events.append(Joined(member, self.run_uuid))
        return events

    def leave(self, call_uuid: str) -> list[RoomEvent]:
        member = self.members.pop(call_uuid, None)
        if member is None:
            return []
        events: list[RoomEvent] = [Left(member, self.run_uuid)]
        if not self.members:
            events.append(RunEnded(self.run_uuid))
            self.run_uuid = None
        return events
