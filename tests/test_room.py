"""Room state: runs, member IDs, maxMembers."""

import itertools

from sipconf.answer import Conference
from sipconf.room import Joined, Left, Refused, Room, RunEnded, RunStarted


def make_room() -> Room:
    ids = itertools.count(1)
    return Room("r", new_uuid=lambda: f"run-{next(ids)}", clock=lambda: 0.0)


def test_a_run_starts_with_the_first_member_and_ends_with_the_last():
    room = make_room()
    ev = room.join("c1", Conference("r"))
    assert isinstance(ev[0], RunStarted) and ev[0].room_uuid == "run-1"
    assert isinstance(ev[1], Joined) and ev[1].member.member_id == "1"
    ev = room.join("c2", Conference("r"))
    assert len(ev) == 1 and ev[0].member.member_id == "2" and ev[0].room_uuid == "run-1"
    assert isinstance(room.leave("c1")[0], Left)
    ev = room.leave("c2")
    assert isinstance(ev[0], Left) and ev[1] == RunEnded("run-1")
    assert room.empty and room.run_uuid is None
    # A new run: new UUID, member IDs from 1 again.
    ev = room.join("c3", Conference("r"))
    assert ev[0] == RunStarted("run-2") and ev[1].member.member_id == "1"


def test_max_members_refuses_the_caller_who_would_exceed_it():
    room = make_room()
    room.join("c1", Conference("r", max_members=2))
    room.join("c2", Conference("r", max_members=2))
    ev = room.join("c3", Conference("r", max_members=2))
    assert ev == [Refused("c3", "room r is full (2 members)")]
    assert set(room.members) == {"c1", "c2"}
    assert room.leave("c3") == []


def test_twenty_members_fit_by_default():
    room = make_room()
    for i in range(20):
        assert isinstance(room.join(f"c{i}", Conference("r"))[-1], Joined)
    assert isinstance(room.join("c20", Conference("r"))[0], Refused)
