"""The call flow (sipconf/core/callflow.py) on its own: feed events, with the time passed in,
and check the commands; then its trio driver (sipconf/calls.py) with the fake engine, stub
webhooks and sounds, and a MockClock. No pjsua2, no mixer, no network.

Long on purpose: one file per unit under test (the call flow), a case per verb and event;
splitting it would scatter the fixtures every case shares."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import trio
import trio.testing
from support.fake_engine import FakeCall, FakeEngine

from sipconf.calls import CallDriver, new_session
from sipconf.config import NodeConfig
from sipconf.core.answer import Conference, Limits, Play, Speak, Wait
from sipconf.core.callflow import (
    TOO_MANY_DOCUMENTS,
    CallFlow,
    CallInfo,
    FlowSettings,
)
from sipconf.core.callmessages import (
    Answer,
    Answered,
    AwaitDrained,
    CallGone,
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
from sipconf.engine import CallEnded, IncomingCall
from sipconf.faults import Faults
from sipconf.http.metrics import Metrics
from sipconf.webhooks import FetchError, call_params

APP = "http://app.test"
ANSWER = f"{APP}/answer"


def make(answer_url: str | None = ANSWER, max_docs: int = 10, timeout: float = 5.0,
         to: str = "team") -> CallFlow:
    return CallFlow(CallInfo("c1", "sip:alice@10.0.0.1", to, "sip:team@10.0.0.2", "Alice"),
                    FlowSettings(answer_url=answer_url, answer_timeout=timeout,
                                 max_documents_per_call=max_docs, limits=Limits()))


def xml(body: str) -> bytes:
    return f"<Response>{body}</Response>".encode()


def feed(flow: CallFlow, event, now: float = 0.0) -> list:
    cmds = flow.handle(event, now)
    # the protocol: only the last command may have a result
    assert all(not has_result(c) for c in cmds[:-1]), cmds
    return cmds


def answered_with(body: str, now: float = 0.0, **kw) -> tuple[CallFlow, list]:
    """A flow whose answer URL returned ``body``: the commands that gives."""
    flow = make(**kw)
    cmds = flow.start(now)
    assert cmds == [Fetch(ANSWER, "POST", call_params("c1", "sip:alice@10.0.0.1", "team",
                                                      "Alice", "ringing"), "answer")]
    return flow, feed(flow, Fetched(xml(body)), now)


def in_room(body: str, **kw) -> CallFlow:
    """A flow in the first Conference of ``body`` (answered, joined)."""
    flow, cmds = answered_with(body, **kw)
    assert cmds == [Answer(200)]
    (join,) = feed(flow, Answered())
    assert isinstance(join, JoinRoom)
    return flow


ACTION = f"{APP}/action"


def conf_xml(attrs: str = "", room: str = "team") -> str:
    return f"<Conference {attrs}>{room}</Conference>"


def action_params(status: str = "in-progress", member: str = "1", room_uuid: str = "R1",
                  **record: str) -> dict[str, str]:
    return {"ConferenceName": "team", "ConferenceUUID": room_uuid,
            "ConferenceMemberID": member, "CallUUID": "c1", "From": "sip:alice@10.0.0.1",
            "To": "team", "Direction": "inbound", "CallStatus": status, "CallerName": "Alice",
            "BillRate": "0", **record}


LEFT = LeftRoom("hangup-on-star", "1", "R1", {})

# --- the answer document --------------------------------------------------------------------------


def test_start_fetches_the_answer_url_with_the_ringing_params():
    flow = make()
    (fetch,) = flow.start(0.0)
    assert fetch.url == ANSWER and fetch.method == "POST" and fetch.purpose == "answer"
    assert fetch.params["CallStatus"] == "ringing" and fetch.params["To"] == "team"
    assert flow.documents == 1


def test_without_an_answer_url_the_call_joins_the_room_it_dialled():
    flow = make(answer_url=None, to="sales")
    assert flow.start(0.0) == [Answer(200)]
    assert feed(flow, Answered()) == [JoinRoom(Conference("sales"))]
    assert flow.documents == 0  # the built-in document is not fetched


def test_without_an_answer_url_or_a_dialled_user_the_room_is_default():
    flow = make(answer_url=None, to="")
    flow.start(0.0)
    assert feed(flow, Answered()) == [JoinRoom(Conference("default"))]


def test_without_a_dialled_user_requests_say_the_to_uri():
    flow = make(to="")
    (fetch,) = flow.start(0.0)
    assert fetch.params["To"] == "sip:team@10.0.0.2"


def test_an_answer_url_that_fails_gives_503_with_the_reason_and_no_hangup():
    flow = make()
    flow.start(0.0)
    cmds = feed(flow, FetchFailed("HTTP 500 from the web app"))
    assert cmds == [Answer(503, "Service Unavailable",
                           "answer URL failed: HTTP 500 from the web app")]
    assert flow.done and flow.ended and flow.outcome == "answer-url-failed"
    assert feed(flow, Stopped()) == [End("answer-url-failed")]  # nothing left to hang up


def test_an_answer_url_past_a_limit_counts_the_limit_first():
    flow = make()
    flow.start(0.0)
    cmds = feed(flow, FetchFailed("too big", retry=False, option="max_document_bytes"))
    assert cmds[0] == LimitHit("max_document_bytes") and cmds[1].code == 503


def test_bad_answer_xml_gives_503_saying_so():
    flow = make()
    flow.start(0.0)
    (answer,) = feed(flow, Fetched(b"<Nonsense/>"))
    assert answer.code == 503 and answer.warning.startswith("answer URL failed: bad answer XML")


def test_no_documents_allowed_refuses_the_answer_fetch_with_503():
    flow = make(max_docs=0)
    cmds = flow.start(0.0)
    assert cmds == [LimitHit("max_documents_per_call"),
                    Answer(503, "Service Unavailable", f"answer URL failed: {TOO_MANY_DOCUMENTS}")]


def test_a_clamped_document_counts_its_limit_and_still_runs():
    flow = make()
    flow.settings = FlowSettings(answer_url=ANSWER, limits=Limits(max_wait=5))
    flow.start(0.0)
    cmds = feed(flow, Fetched(xml('<Wait length="60"/>')))
    assert cmds == [LimitHit("max_wait_seconds"), Answer(200)]
    assert feed(flow, Answered(), 10.0) == [Sleep(15.0)]


def test_the_answer_document_url_is_remembered():
    flow, _ = answered_with("<Wait/>")
    assert flow.document_url == ANSWER


# --- verbs ----------------------------------------------------------------------------------------


def test_wait_answers_first_then_sleeps_until_now_plus_length():
    flow, cmds = answered_with('<Wait length="7"/>')
    assert cmds == [Answer(200)]
    assert feed(flow, Answered(), 100.0) == [Sleep(107.0)]
    assert feed(flow, WaitOver(), 107.0) == [Hangup()]  # the document ran out: BYE
    assert flow.done and flow.ended


def test_play_and_speak_go_to_the_caller_with_their_loops():
    flow, _ = answered_with(f'<Play loop="0">{APP}/s.wav</Play><Speak loop="2">hi</Speak>')
    assert feed(flow, Answered()) == [PlayToCall(Play(f"{APP}/s.wav", 0), 0)]
    assert feed(flow, SoundFinished()) == [PlayToCall(Speak("hi", loop=2), 2)]
    assert feed(flow, SoundFinished()) == [Hangup()]


def test_a_sound_that_cannot_be_had_is_skipped_and_its_limit_counted():
    flow, _ = answered_with(f"<Play>{APP}/s.wav</Play><Wait/>")
    feed(flow, Answered())
    cmds = feed(flow, SoundFailed("too long", option="max_sound_seconds"), 1.0)
    assert cmds == [LimitHit("max_sound_seconds"), Sleep(2.0)]


def test_a_sound_failing_without_a_limit_counts_nothing():
    flow, _ = answered_with(f"<Play>{APP}/s.wav</Play>")
    feed(flow, Answered())
    assert feed(flow, SoundFailed("404")) == [Hangup()]


@pytest.mark.parametrize("reason, code, text", [("", 603, "Decline"), ("busy", 486, "Busy Here"),
                                                ("BUSY", 486, "Busy Here"),
                                                ("rejected", 603, "Decline")])
def test_hangup_before_an_answer_is_a_final_response(reason, code, text):
    _, cmds = answered_with(f'<Hangup reason="{reason}"/>' if reason else "<Hangup/>")
    assert cmds == [Hangup(code, text)]


def test_hangup_after_an_answer_is_a_bye_and_later_verbs_never_run():
    flow, _ = answered_with("<Wait/><Hangup reason=\"busy\"/><Wait/>")
    feed(flow, Answered())
    assert feed(flow, WaitOver()) == [Hangup()]
    assert flow.done and flow.verbs == [Wait()]  # never run


def test_an_empty_document_declines_the_call():
    _, cmds = answered_with("")
    assert cmds == [Hangup(603, "Decline")]


def test_redirect_before_an_answer_fetches_with_ringing_and_replaces_the_rest():
    flow, cmds = answered_with(f'<Redirect method="GET">{APP}/next</Redirect><Hangup/>')
    (fetch,) = cmds
    assert (fetch.url, fetch.method, fetch.purpose) == (f"{APP}/next", "GET", "redirect")
    assert fetch.params["CallStatus"] == "ringing"
    assert feed(flow, Fetched(xml("<Wait/>"))) == [Answer(200)]  # the Hangup is gone
    assert flow.document_url == f"{APP}/next" and flow.documents == 2


def test_redirect_after_an_answer_says_in_progress():
    flow, _ = answered_with(f"<Wait/><Redirect>{APP}/next</Redirect>")
    feed(flow, Answered())
    (fetch,) = feed(flow, WaitOver())
    assert fetch.params["CallStatus"] == "in-progress"


def test_a_failed_redirect_ends_the_call():
    flow, _ = answered_with(f"<Redirect>{APP}/next</Redirect><Wait/>")
    cmds = feed(flow, FetchFailed("timed out", option="answer_timeout"))
    assert cmds == [LimitHit("answer_timeout"), Hangup(603, "Decline")]
    assert flow.document_url == ANSWER


def test_a_redirect_to_bad_xml_ends_the_answered_call_with_a_bye():
    flow, _ = answered_with(f"<Wait/><Redirect>{APP}/next</Redirect><Wait/>")
    feed(flow, Answered())
    feed(flow, WaitOver())
    assert feed(flow, Fetched(b"<<<")) == [Hangup()]


def test_a_redirect_loop_stops_at_max_documents_per_call():
    loop = f"<Redirect>{APP}/again</Redirect>"
    flow, cmds = answered_with(loop, max_docs=3)
    assert isinstance(cmds[0], Fetch)
    cmds = feed(flow, Fetched(xml(loop)))  # document 3
    assert isinstance(cmds[0], Fetch)
    cmds = feed(flow, Fetched(xml(loop)))
    assert cmds == [LimitHit("max_documents_per_call"), Hangup(603, "Decline")]
    assert flow.documents == 3


def test_the_answer_gone_means_the_call_is_over_without_a_hangup():
    flow, _ = answered_with(conf_xml())
    assert feed(flow, Answered(ok=False)) == []
    assert flow.done and flow.ended and not flow.answered
    assert feed(flow, Stopped()) == [End("unanswered")]


def test_an_event_the_flow_does_not_wait_for_is_an_error():
    flow, _ = answered_with("<Wait/>")
    with pytest.raises(ValueError, match="cannot handle"):
        flow.handle(WaitOver(), 0.0)  # it waits for the answer


# --- the room and its action ----------------------------------------------------------------------


def test_leaving_a_room_without_an_action_goes_on_with_the_document():
    flow = in_room(conf_xml() + '<Wait length="2"/>')
    assert feed(flow, LEFT, 50.0) == [Sleep(52.0)]
    assert flow.conference is None


def test_an_action_with_redirect_false_is_only_reported():
    flow = in_room(conf_xml(f'action="{ACTION}" redirect="false"') + "<Wait/>")
    cmds = feed(flow, LeftRoom("kicked", "1", "R1", {"RecordingID": "rec1"}), 3.0)
    assert cmds == [Submit(ACTION, "POST", action_params(RecordingID="rec1")), Sleep(4.0)]


def test_an_action_with_redirect_waits_for_earlier_events_then_fetches():
    flow = in_room(conf_xml(f'action="{ACTION}" method="GET"') + "<Hangup/>")
    assert feed(flow, LEFT, 10.0) == [AwaitDrained(15.0)]  # now + answer_timeout
    assert feed(flow, Drained(True)) == [Fetch(ACTION, "GET", action_params(), "action")]
    assert feed(flow, Fetched(xml('<Wait length="1"/>')), 12.0) == [Sleep(13.0)]  # replaced
    assert flow.documents == 2 and flow.document_url == ANSWER  # an action is no document URL


def test_an_action_whose_turn_does_not_come_in_time_is_spooled_and_the_document_goes_on():
    flow = in_room(conf_xml(f'action="{ACTION}"') + "<Wait/>")
    feed(flow, LEFT)
    assert feed(flow, Drained(False), 5.0) == [Submit(ACTION, "POST", action_params()),
                                               Sleep(6.0)]


def test_an_action_that_fails_for_now_is_spooled():
    flow = in_room(conf_xml(f'action="{ACTION}"'))
    feed(flow, LEFT)
    feed(flow, Drained(True))
    cmds = feed(flow, FetchFailed("connection refused", retry=True))
    assert cmds == [Submit(ACTION, "POST", action_params()), Hangup()]


def test_an_action_that_fails_for_good_is_dropped_and_its_limit_counted():
    flow = in_room(conf_xml(f'action="{ACTION}"'))
    feed(flow, LEFT)
    feed(flow, Drained(True))
    cmds = feed(flow, FetchFailed("HTTP 404", retry=False, option="max_document_bytes"))
    assert cmds == [LimitHit("max_document_bytes"), Hangup()]


def test_an_action_reply_with_bad_xml_goes_on_with_the_document():
    flow = in_room(conf_xml(f'action="{ACTION}"') + '<Wait length="3"/>')
    feed(flow, LEFT)
    feed(flow, Drained(True))
    assert feed(flow, Fetched(b"<Response><Bogus"), 1.0) == [Sleep(4.0)]


def test_an_action_past_the_document_limit_is_only_reported():
    flow = in_room(conf_xml(f'action="{ACTION}"') + "<Wait/>", max_docs=1)
    cmds = feed(flow, LEFT)
    assert cmds == [LimitHit("max_documents_per_call"), Submit(ACTION, "POST", action_params()),
                    Sleep(1.0)]


def test_a_refused_caller_gets_the_action_without_a_member():
    flow = in_room(conf_xml(f'action="{ACTION}" redirect="false"') + "<Hangup/>")
    cmds = feed(flow, RoomRefused("room full"))
    assert cmds == [Submit(ACTION, "POST", action_params(member="", room_uuid="")), Hangup()]


def test_a_refused_caller_without_an_action_goes_on():
    flow = in_room(conf_xml() + conf_xml(room="other"))
    assert feed(flow, RoomRefused("room full")) == [JoinRoom(Conference("other"))]


def test_record_params_of_a_room_stay_with_the_call_for_later_actions():
    flow = in_room(conf_xml() + conf_xml(f'action="{ACTION}" redirect="false"', room="team"))
    feed(flow, LeftRoom("kicked", "1", "R1", {"RecordUrl": "u", "RecordingID": "r"}))
    cmds = feed(flow, RoomRefused("room full"))
    assert cmds[0].params["RecordingID"] == "r" and cmds[0].params["ConferenceMemberID"] == ""


def test_a_call_gone_as_it_left_the_room_reports_completed_and_runs_nothing_more():
    flow = in_room(conf_xml(f'action="{ACTION}"') + "<Wait/><Wait/>")
    assert feed(flow, CallGone()) == []
    cmds = feed(flow, LEFT)
    assert cmds == [Submit(ACTION, "POST", action_params("completed"))]  # not fetched
    assert flow.done
    assert feed(flow, Stopped()) == [End("answered")]  # gone: no hang-up


# --- the end of a call ----------------------------------------------------------------------------


def test_stopping_in_a_room_leaves_it_before_the_action_then_hangs_up():
    flow = in_room(conf_xml(f'action="{ACTION}"'))
    assert feed(flow, Stopped()) == [LeaveRoom()]
    cmds = feed(flow, LeftRoom("hangup", "1", "R1", {}))
    assert cmds == [Submit(ACTION, "POST", action_params("completed")), End("answered"),
                    Hangup()]


def test_a_call_hung_up_in_a_room_reports_its_action_and_is_not_hung_up_again():
    flow = in_room(conf_xml(f'action="{ACTION}"'))
    feed(flow, CallGone())
    assert feed(flow, Stopped()) == [LeaveRoom()]
    cmds = feed(flow, LeftRoom("hangup", "1", "R1", {"RecordingID": "x"}))
    assert cmds == [Submit(ACTION, "POST", action_params("completed", RecordingID="x")),
                    End("answered")]


def test_a_call_hung_up_in_a_room_without_an_action_reports_nothing():
    flow = in_room(conf_xml())
    feed(flow, CallGone())
    feed(flow, Stopped())
    assert feed(flow, LEFT) == [End("answered")]


def test_a_fault_before_the_answer_gives_500_with_a_warning():
    flow, _ = answered_with("<Wait/>")
    cmds = feed(flow, Stopped(fault=True))
    assert cmds == [End("error"), Answer(500, "Server Internal Error",
                                         "internal error: see the node's log for this call")]
    assert flow.outcome == "error"


def test_a_fault_after_the_answer_hangs_up():
    flow, _ = answered_with("<Wait/>")
    feed(flow, Answered())
    assert feed(flow, Stopped(fault=True)) == [End("error"), Hangup()]


def test_stopping_an_unanswered_call_declines_it():
    flow = make()
    flow.start(0.0)
    assert feed(flow, Stopped()) == [End("unanswered"), Hangup(603, "Decline")]


def test_a_call_gone_while_its_action_is_fetched_reports_nothing_more():
    flow = in_room(conf_xml(f'action="{ACTION}"'))
    feed(flow, LEFT)
    feed(flow, Drained(True))
    feed(flow, CallGone())
    assert feed(flow, Stopped()) == [End("answered")]


def test_a_call_that_ran_its_course_ends_without_a_second_hangup():
    flow, _ = answered_with("<Hangup/>")
    assert feed(flow, Stopped()) == [End("unanswered")]
    assert feed(flow, Stopped()) == []  # once


# --- the driver -----------------------------------------------------------------------------------


@dataclass
class Clip:
    duration: float


class StubWebhooks:
    def __init__(self, replies: dict[str, bytes | FetchError], drained_after: float = 0.0):
        self.replies = replies
        self.drained_after = drained_after
        self.submitted: list[tuple[str, str, dict]] = []
        self.fetched: list[tuple[str, float]] = []

    async def fetch(self, url, method, params):
        self.fetched.append((url, trio.current_time()))
        await trio.sleep(0.5)
        reply = self.replies[url]
        if isinstance(reply, FetchError):
            raise reply
        return reply

    def submit(self, key, url, method, params):
        self.submitted.append((url, params["CallStatus"], trio.current_time()))

    async def drained(self, key):
        await trio.sleep(self.drained_after)


class StubSounds:
    async def audio(self, url):
        await trio.lowlevel.checkpoint()
        return Clip(2.0)

    async def speech(self, text, voice, language):
        await trio.lowlevel.checkpoint()
        return Clip(1.0)


class StubRooms:
    """Refuses every caller (the room side is rooms.py's, tested through the node)."""

    async def join(self, s, conf):
        await trio.lowlevel.checkpoint()
        return "room full"

    def leave_room(self, s):
        pass


def drive(doc: bytes | FetchError, body=None, drained_after: float = 0.0, **cfg):
    """Run one call through CallDriver with a fake engine; ``body(node, uuid)`` acts on it
    meanwhile. Returns the stub node."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    config = NodeConfig(answer_url=ANSWER, answer_timeout=5.0, **cfg)
    node = SimpleNamespace(config=config, limits=Limits(), faults=Faults(), metrics=Metrics(),
                           calls={}, sounds=StubSounds(), room_runs=StubRooms(),
                           webhooks=StubWebhooks({ANSWER: doc, ACTION: xml("<Wait/>")},
                                                 drained_after),
                           accepting=True)

    def emit(ev):
        if isinstance(ev, CallEnded) and ev.uuid in node.calls:
            node.calls[ev.uuid].gone()

    node.engine = FakeEngine(config, emit)

    async def main():
        node.engine.calls["c1"] = FakeCall("c1", "team", "sip:alice@10.0.0.1")
        s = new_session(node, IncomingCall("c1", "sip:alice@10.0.0.1", "sip:team@x", "team",
                                           "Alice", "sip-c1"))
        node.calls["c1"] = s
        async with trio.open_nursery() as n:
            n.start_soon(CallDriver(node).main, s)
            if body is not None:
                await body(node, "c1")

    trio.run(main, clock=clock)
    node.clock = clock
    return node


def test_driver_waits_in_virtual_time_then_byes():
    node = drive(xml('<Wait length="3600"/>'))
    call = node.engine.calls["c1"]
    assert call.responses == [(200, "", "")] and call.ended_by == "node"
    (t_answer, _), (t_bye, bye) = [(t, c) for t, c in node.engine.timeline]
    assert bye == ("hangup", "c1", 0, "") and t_bye - t_answer == pytest.approx(3600, abs=0.01)
    assert node.calls == {} and node.metrics.calls_total == Counter({"answered": 1})


def test_driver_answer_url_failure_is_503_and_counts_the_latency():
    node = drive(FetchError(ANSWER, "HTTP 500", retry=True))
    call = node.engine.calls["c1"]
    assert call.responses == [(503, "Service Unavailable", "answer URL failed: HTTP 500")]
    assert node.engine.commands("hangup") == []
    latency = node.metrics.answer_latency
    assert latency.n == 1 and latency.total == pytest.approx(0.5)  # the fetch took 0.5 s
    assert node.metrics.calls_total == Counter({"answer-url-failed": 1})


def test_driver_a_call_gone_during_a_wait_is_not_hung_up():
    async def body(node, uuid):
        await trio.sleep(100)
        node.engine.hang_up(uuid)

    node = drive(xml('<Wait length="3600"/>'), body)
    assert node.engine.commands("hangup") == [] and node.calls == {}
    assert node.metrics.calls_total == Counter({"answered": 1})
    assert node.clock.current_time() < 200  # the wait was cut short


def test_driver_a_fault_before_the_answer_gives_500_and_only_that_call_ends():
    async def body(node, uuid):
        node.engine.fail("answer", when=lambda uuid, code, *a: code == 200)

    node = drive(xml("<Wait/>"), body)
    call = node.engine.calls["c1"]
    assert call.responses == [(500, "Server Internal Error",
                               "internal error: see the node's log for this call")]
    assert node.faults.counts == Counter({"call": 1})
    assert node.metrics.calls_total == Counter({"error": 1})


def test_driver_spools_an_action_whose_turn_does_not_come_within_the_answer_timeout():
    doc = xml(conf_xml(f'action="{ACTION}"') + '<Play>http://app.test/s.wav</Play>')
    node = drive(doc, drained_after=1000.0)
    (url, status, at), = node.webhooks.submitted
    assert (url, status) == (ACTION, "in-progress") and at == pytest.approx(5.5, abs=0.01)
    assert [u for u, _ in node.webhooks.fetched] == [ANSWER]  # the action was not fetched
    played = node.engine.calls["c1"].played
    assert played and played[0][0] == 2.0  # the document went on


def test_driver_fetches_an_action_reply_once_earlier_events_are_out():
    doc = xml(conf_xml(f'action="{ACTION}"') + "<Hangup/>")
    node = drive(doc, drained_after=1.0)
    assert [u for u, _ in node.webhooks.fetched] == [ANSWER, ACTION]
    assert node.webhooks.submitted == []
    assert node.engine.commands("hangup") == [("hangup", "c1", 0, "")]  # after its <Wait/>


def test_the_call_flow_and_driver_need_no_sip_stack_or_mixer():
    code = ("import sys, sipconf.core.callflow, sipconf.calls, sipconf.node, sipconf.rooms, "
            "sipconf.control\n"
            "bad = [m for m in sys.modules if m.startswith(('pjsua2', 'sipconf.sip', 'mixer_ext'))"
            " or m == 'mixer']\n"
            "assert not bad, bad\n"
            "import sipconf.core.callflow as cf\n"
            "src = open(cf.__file__).read()\n"
            "assert 'import trio' not in src and 'httpx' not in src\n")
    subprocess.run([sys.executable, "-c", code], check=True)
