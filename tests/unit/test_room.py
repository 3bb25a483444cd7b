"""Room state: runs, member IDs, waiting and moderators, music, limits, sounds, kicks."""

import itertools

from sipconf.core.answer import Conference
from sipconf.core.room import (
    END_CONFERENCE,
    ENDED,
    HANGUP,
    STAR,
    STAY_ALONE,
    TIME_LIMIT,
    Coach,
    Controls,
    Deadline,
    Hold,
    Joined,
    Left,
    MemberState,
    Music,
    PlaySound,
    Refused,
    Room,
    RunEnded,
    RunStarted,
)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def make_room(clock=None) -> Room:
    ids = itertools.count(1)
    return Room("r", new_uuid=lambda: f"run-{next(ids)}", clock=clock or Clock())


def kinds(events, kind):
    return [e for e in events if isinstance(e, kind)]


def test_a_run_starts_with_the_first_member_and_ends_with_the_last():
    room = make_room()
    ev = room.join("c1", Conference("r"))
    assert ev[0] == RunStarted("run-1")
    assert kinds(ev, Joined)[0].member.member_id == "1"
    ev = room.join("c2", Conference("r"))
    assert kinds(ev, Joined)[0].member.member_id == "2" and not kinds(ev, RunStarted)
    assert kinds(room.leave("c1"), Left)[0].reason == HANGUP
    ev = room.leave("c2")
    assert kinds(ev, RunEnded) == [RunEnded("run-1")]
    assert room.empty and room.run_uuid is None
    ev = room.join("c3", Conference("r"))  # a new run: new UUID, IDs from 1 again
    assert ev[0] == RunStarted("run-2") and kinds(ev, Joined)[0].member.member_id == "1"


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
        assert kinds(room.join(f"c{i}", Conference("r")), Joined)
    assert isinstance(room.join("c20", Conference("r"))[0], Refused)


WAITER = Conference("r", start_conference_on_enter=False, wait_sound="http://x/hold.xml")
MODERATOR = Conference("r", start_conference_on_enter=True, end_conference_on_exit=True)


def test_waiting_members_hear_music_until_a_moderator_joins():
    room = make_room()
    ev = room.join("w1", WAITER)
    assert kinds(ev, MemberState)[0].waiting is True
    assert [(m.member.call_uuid, m.on) for m in kinds(ev, Music)] == [("w1", True)]
    ev = room.join("w2", WAITER)
    assert kinds(ev, MemberState)[0].waiting is True
    assert [(m.member.call_uuid, m.on) for m in kinds(ev, Music)] == [("w2", True)]
    ev = room.join("mod", MODERATOR)
    states = {s.member.call_uuid: s.waiting for s in kinds(ev, MemberState)}
    assert states == {"mod": False, "w1": False, "w2": False}
    assert {(m.member.call_uuid, m.on) for m in kinds(ev, Music)} == {("w1", False),
                                                                      ("w2", False)}


def test_moderator_leaving_ends_the_conference_for_everyone():
    room = make_room()
    room.join("w1", WAITER)
    room.join("mod", MODERATOR)
    room.join("w2", WAITER)
    ev = room.leave("mod")
    left = {e.member.call_uuid: e.reason for e in kinds(ev, Left)}
    assert left == {"mod": HANGUP, "w1": END_CONFERENCE, "w2": END_CONFERENCE}
    assert kinds(ev, RunEnded) and room.empty


def test_alone_in_a_started_room_with_a_wait_sound_hears_music():
    room = make_room()
    conf = Conference("r", wait_sound="http://x/hold.xml")
    ev = room.join("a", conf)
    assert [(m.member.call_uuid, m.on) for m in kinds(ev, Music)] == [("a", True)]
    assert kinds(ev, MemberState)[0].waiting is False
    ev = room.join("b", Conference("r"))
    assert [(m.member.call_uuid, m.on) for m in kinds(ev, Music)] == [("a", False)]
    ev = room.leave("b")
    assert [(m.member.call_uuid, m.on) for m in kinds(ev, Music)] == [("a", True)]


def test_stay_alone_false_ends_the_room_once_two_have_been_present():
    room = make_room()
    lonely = Conference("r", stay_alone=False)
    room.join("a", lonely)  # alone from the start: stays
    assert "a" in room.members
    room.join("b", lonely)
    ev = room.leave("b")
    assert {e.member.call_uuid: e.reason for e in kinds(ev, Left)} == {"b": HANGUP,
                                                                       "a": STAY_ALONE}
    assert kinds(ev, RunEnded)


def test_stay_alone_default_keeps_the_last_member():
    room = make_room()
    room.join("a", Conference("r"))
    room.join("b", Conference("r"))
    ev = room.leave("b")
    assert [e.member.call_uuid for e in kinds(ev, Left)] == ["b"] and "a" in room.members


def test_time_limit_is_restarted_by_each_joiner_and_ends_the_room():
    clock = Clock()
    room = make_room(clock)
    ev = room.join("a", Conference("r", time_limit=6))
    assert kinds(ev, Deadline) == [Deadline(106.0)]
    clock.now = 104.0
    ev = room.join("b", Conference("r", time_limit=6))
    assert kinds(ev, Deadline) == [Deadline(110.0)]
    clock.now = 109.9
    assert room.expire() == []
    clock.now = 110.0
    ev = room.expire()
    assert {e.member.call_uuid: e.reason for e in kinds(ev, Left)} == {"a": TIME_LIMIT,
                                                                       "b": TIME_LIMIT}
    assert kinds(ev, RunEnded) and room.empty


def test_enter_and_exit_sounds_play_to_the_room():
    room = make_room()
    ev = room.join("a", Conference("r", enter_sound="beep:1", exit_sound="beep:2"))
    assert kinds(ev, PlaySound) == [PlaySound("beep:1", "run-1", "a")]
    room.join("b", Conference("r"))
    ev = room.leave("a")
    assert kinds(ev, PlaySound) == [PlaySound("beep:2", "run-1", "a")]
    ev = room.leave("b")  # nobody left to hear it
    assert kinds(ev, PlaySound) == []


def test_star_leaves_like_any_other_reason():
    room = make_room()
    room.join("a", Conference("r", hangup_on_star=True))
    room.join("b", Conference("r"))
    ev = room.leave("a", STAR)
    assert kinds(ev, Left)[0].reason == STAR and "b" in room.members


def test_control_mutes_and_deafens_and_end_clears_the_room():
    room = make_room()
    room.join("c1", Conference("r", muted=True))
    room.join("c2", Conference("r"))
    assert room.members["c1"].muted and not room.members["c2"].muted  # the XML's muted
    ev = room.control("c2", muted=True)
    assert ev == [Controls(room.members["c2"])] and room.members["c2"].muted
    assert room.control("c2", muted=True) == []  # no change, no event
    ev = room.control("c1", muted=False, deaf=True)
    assert room.members["c1"].deaf and not room.members["c1"].muted and len(ev) == 1
    assert room.control("nobody", muted=True) == []
    ev = room.end()
    assert [e.reason for e in kinds(ev, Left)] == [ENDED, ENDED]
    assert kinds(ev, RunEnded) and room.empty and room.end() == []


def test_control_sets_volumes_clamped_and_only_reports_changes():
    room = make_room()
    room.join("c1", Conference("r"))
    m = room.members["c1"]
    assert (m.volume_in, m.volume_out) == (0.0, 0.0)
    assert room.control("c1", volume_in=-12) == [Controls(m)] and m.volume_in == -12.0
    assert room.control("c1", volume_in=-12.0) == []  # the same: no event
    room.control("c1", volume_out=40, volume_in=-99)  # the API refuses these; clamped here
    assert (m.volume_in, m.volume_out) == (-24.0, 12.0)
    assert not m.muted and not m.deaf


def test_hold_silences_both_ways_swaps_music_and_unhold_restores():
    room = make_room()
    room.join("a", Conference("r", wait_sound="http://x/wait.mp3"))  # alone: wait music
    m = room.members["a"]
    assert m.music and not m.silenced
    ev = room.hold("a", True, "http://x/hold.mp3")
    assert ev[0] == Music(m, False) and Controls(m) in ev and Hold(m, True) in ev
    assert ev[-1] == Music(m, True) and m.held and m.hold_sound.endswith("hold.mp3")
    assert m.silenced and m.unhearing and not m.muted and not m.deaf
    assert room.hold("a", True, "http://x/hold.mp3") == []  # no change
    ev = room.hold("a", False)
    assert Hold(m, False) in ev and ev[-1] == Music(m, True)  # the wait music again
    assert not m.held and not m.silenced and m.hold_sound == ""
    room.join("b", Conference("r"))
    ev = room.hold("b", True)  # no music: silence
    assert not [e for e in ev if isinstance(e, Music) and e.member is room.members["b"]]
    assert room.hold("nobody", True) == []


def test_coach_relations_limits_and_the_coached_member_leaving():
    room = make_room()
    for c in ("a", "b", "c", "d", "e", "f"):
        room.join(c, Conference("r"))
    a = room.members["a"]
    assert room.coach("a", "b") == [Coach(a)] and a.coach and a.coaching == "b"
    assert room.coach("a", "b") == []  # already
    assert room.coach("a", "a") is None and room.coach("a", "zz") is None
    assert room.coach("nobody", "b") is None
    for c in ("c", "d", "e"):
        assert room.coach(c, "b") == [Coach(room.members[c])]
    assert room.coach("f", "b") is None  # b hears four coaches already
    ev = room.leave("b")
    coaches = [e.member.call_uuid for e in ev if isinstance(e, Coach)]
    assert sorted(coaches) == ["a", "c", "d", "e"]
    assert a.coach and a.coaching == ""  # whispers to nobody until uncoached
    assert room.coach("a", None) == [Coach(a)] and not a.coach
    assert room.coach("a", None) == []


def test_coach_attribute_coaches_on_joining_by_member_id_or_call_uuid():
    room = make_room()
    room.join("agent", Conference("r"))  # member 1
    ev = room.join("boss", Conference("r", coach="1"))
    boss = room.members["boss"]
    assert Coach(boss) in ev and boss.coach and boss.coaching == "agent"
    ev = room.join("boss2", Conference("r", coach="agent"))  # by CallUUID
    assert room.members["boss2"].coaching == "agent"
    # nobody to coach: still a coach, heard by nobody (a whisper never reaches the room)
    ev = room.join("lost", Conference("r", coach="99"))
    lost = room.members["lost"]
    assert Coach(lost) in ev and lost.coach and lost.coaching == ""
    ev = room.join("self", Conference("r", coach="5"))  # its own member ID: nobody
    assert room.members["self"].coach and room.members["self"].coaching == ""
