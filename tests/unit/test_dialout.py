"""Dial-out: the request's checks, --dial-allow, the rate limit and outcomes (pure logic),
then whole dial-outs through the real Node with the fake engine (ringing, answered and in the
room with its attrs, busy, no answer in time, canceled, refused)."""

from __future__ import annotations

import pytest
import trio
from support.node_harness import Harness, WebApp, run_node

from sipconf.core import dialout
from sipconf.core.answer import Limits

LIMITS = Limits()


def req(body: dict, pbx: str | None = None) -> dialout.DialRequest:
    return dialout.parse_request("sales", body, registrar_hostport=pbx, limits=LIMITS)


def test_request_builds_a_conference_from_attrs():
    r = req({"to": "sip:bob@127.0.0.1:5090", "from": "+4420", "callerName": 'Sales "Desk"',
             "timeout": 12, "attrs": {"muted": True, "callbackUrl": "http://app/cb",
                                      "maxMembers": 5, "noSuchThing": "x"},
             "headers": {"X-PH-Ticket": "42"}, "callbackUrl": "http://app/dial"})
    assert r.to_uri == "sip:bob@127.0.0.1:5090" and r.from_user == "+4420"
    assert r.caller_name == "Sales Desk" and r.timeout == 12
    c = r.conference
    assert (c.room, c.muted, c.callback_url, c.max_members) == (
        "sales", True, "http://app/cb", 5)
    assert r.ignored == ("Conference.noSuchThing",) or any("noSuchThing" in i
                                                             for i in r.ignored)
    assert r.headers == (("X-PH-Ticket", "42"),)


@pytest.mark.parametrize("body, words", [
    ({}, "to is required"),
    ({"to": "sip:bob@host with space"}, "not a SIP URI"),
    ({"to": "tel:+1555"}, "SIP URI"),
    ({"to": "1001"}, "needs --register"),
    ({"to": "sip:a@b", "timeout": 0}, "timeout"),
    ({"to": "sip:a@b", "timeout": 121}, "timeout"),
    ({"to": "sip:a@b", "timeout": True}, "timeout"),
    ({"to": "sip:a@b", "from": "a b"}, "from"),
    ({"to": "sip:a@b", "callerName": "x" * 65}, "callerName"),
    ({"to": "sip:a@b", "callbackUrl": "ftp://x"}, "callbackUrl"),
    ({"to": "sip:a@b", "callbackMethod": "PUT"}, "callbackMethod"),
    ({"to": "sip:a@b", "headers": {"Via": "x"}}, "X-PH-"),
    ({"to": "sip:a@b", "attrs": []}, "attrs"),
    ({"to": "sip:a@b", "attrs": {"1bad": "x"}}, "attribute name"),
    ({"to": "sip:a@b", "attrs": {"muted": {"x": 1}}}, "string, number or boolean"),
    ({"to": "sip:a@b", "attrs": {"callbackUrl": "not a url"}}, "attrs"),
])
def test_bad_requests_say_what_is_wrong(body, words):
    with pytest.raises(ValueError, match=words):
        req(body)


def test_bare_number_goes_to_the_pbx_and_allow_patterns_match_the_whole_uri():
    assert req({"to": "1001"}, pbx="127.0.0.2:5070").to_uri == "sip:1001@127.0.0.2:5070"
    assert dialout.allowed("sip:1001@127.0.0.2:5070", ("sip:*@127.0.0.2:5070",))
    assert dialout.allowed("sip:Bob@PBX.example.com", ("sip:*@pbx.example.com",))
    assert not dialout.allowed("sip:bob@evil.example.com", ("sip:*@pbx.example.com",))
    assert not dialout.allowed("sip:+900123@pbx", ("sip:+44*@pbx",))
    assert not dialout.allowed("sip:bob@pbx", ())  # nothing allowed by default


def test_room_name_and_attr_values_cannot_break_out_of_the_document():
    r = req({"to": "sip:a@b", "attrs": {"callbackUrl": 'http://x/"><Hangup/>'}})
    assert r.conference.callback_url.startswith("http://x/")
    assert dialout.conference_xml("<a&b>", {}).count("<Conference>") == 1


@pytest.mark.parametrize("code, timed_out, canceled, want", [
    (486, False, False, "busy"), (600, False, False, "busy"), (603, False, False, "busy"),
    (480, False, False, "no-answer"), (408, False, False, "no-answer"),
    (487, True, False, "no-answer"), (487, False, True, "canceled"),
    (404, False, False, "failed"), (503, False, False, "failed"), (403, False, False, "failed"),
])
def test_outcomes(code, timed_out, canceled, want):
    assert dialout.outcome(code, timed_out, canceled) == want


def test_rate_limit_is_a_token_bucket():
    rl = dialout.RateLimit(rate=2.0, burst=3)
    assert [rl.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.take(0.0) == pytest.approx(0.5)
    assert rl.take(0.5) == 0.0


# --- through the node --------------------------------------------------------------------------

ALLOW = ("sip:*@127.0.0.1:*",)


async def dial(h: Harness, body: dict, room: str = "sales") -> tuple[int, dict]:
    return await h.api("POST", f"/v1/rooms/{room}/dial", body)


def test_answered_dial_out_joins_the_room_with_its_attrs_and_reports_progress():
    app = WebApp(routes={"/dial": (200, "ok"), "/cb": (200, "ok")})

    async def body(h: Harness):
        status, reply = await dial(h, {"to": "sip:bob@127.0.0.1:5090", "from": "+4420",
                                       "callbackUrl": "http://app.test/dial",
                                       "attrs": {"muted": True,
                                                 "callbackUrl": "http://app.test/cb"}})
        assert status == 200, reply
        uuid = reply["call_uuid"]
        assert reply["from"] == "sip:+4420@127.0.0.1:5080"
        (cmd,) = h.engine.commands("dial")
        assert cmd[2:4] == ("sip:bob@127.0.0.1:5090", "sip:+4420@127.0.0.1:5080")
        assert (await h.api("GET", "/v1/dials"))[1]["dials"][0]["call_uuid"] == uuid
        h.engine.dial_progress(uuid, "ringing", 180)
        h.engine.dial_progress(uuid, "answered", 200)
        await h.joined(uuid)
        assert h.engine.calls[uuid].muted
        assert h.engine.commands("answer", uuid) == []  # the callee answered, not the node
        await h.wait_until(lambda: len(h.app.to("/cb")) == 1, what="the enter event")
        assert h.app.to("/cb")[0].params["ConferenceAction"] == "enter"
        _, room = await h.api("GET", "/v1/rooms/sales")
        (m,) = room["members"]
        assert m["call_uuid"] == uuid and m["muted"] and m["to"] == "bob"
        assert (await h.api("GET", "/v1/dials"))[1]["dials"] == []
        h.engine.hang_up(uuid)
        await h.ended(uuid)
        await h.wait_until(lambda: len(h.app.to("/dial")) == 2, what="dial progress")
        got = [(r.params["DialStatus"], r.params.get("SIPResponseCode"),
                r.params["Direction"], r.params["ConferenceName"]) for r in h.app.to("/dial")]
        assert got == [("ringing", "180", "outbound", "sales"),
                       ("answered", "200", "outbound", "sales")]

    h = run_node(body, app=app, dial_allow=ALLOW)
    assert dict(h.node.faults.counts) == {}
    assert h.node.dials.outcomes == {"answered": 1}


def test_busy_no_answer_and_canceled_dial_outs_end_with_their_outcome():
    app = WebApp(routes={"/dial": (200, "ok")})
    cb = {"callbackUrl": "http://app.test/dial"}

    async def body(h: Harness):
        _, busy = await dial(h, {"to": "sip:b@127.0.0.1:1", **cb})
        _, late = await dial(h, {"to": "sip:c@127.0.0.1:1", "timeout": 5, **cb})
        _, gone = await dial(h, {"to": "sip:d@127.0.0.1:1", **cb})
        h.engine.dial_fails(busy["call_uuid"], 486)
        h.engine.dial_progress(late["call_uuid"], "ringing")
        assert (await h.api("DELETE", f"/v1/dials/{gone['call_uuid']}"))[0] == 200
        await h.wait_until(lambda: not h.node.dials.ringing, 30, what="all ended")
        assert h.engine.commands("hangup", late["call_uuid"]), "CANCEL after its timeout"
        await h.wait_until(lambda: len(h.app.to("/dial")) == 4, what="the reports")
        final = {r.params["CallUUID"]: r.params["DialStatus"] for r in h.app.to("/dial")
                 if r.params["DialStatus"] != "ringing"}
        assert final == {busy["call_uuid"]: "busy", late["call_uuid"]: "no-answer",
                         gone["call_uuid"]: "canceled"}
        assert not h.node.calls and not h.node.rooms
        assert (await h.api("DELETE", f"/v1/dials/{gone['call_uuid']}"))[0] == 404

    h = run_node(body, app=app, dial_allow=ALLOW)
    assert h.node.dials.outcomes == {"busy": 1, "no-answer": 1, "canceled": 1}


def test_dial_outs_are_refused_unless_allowed_and_within_their_limits():
    async def body(h: Harness):
        status, reply = await dial(h, {"to": "sip:bob@evil.example.com"})
        assert status == 403 and "--dial-allow" in reply["error"]
        assert (await dial(h, {"to": "sip:bob@127.0.0.1:5090", "timeout": "x"}))[0] == 400
        codes = [(await dial(h, {"to": f"sip:u{i}@127.0.0.1:5090"}))[0] for i in range(4)]
        assert codes == [200, 200, 429, 429]  # max_dials=2
        assert h.engine.commands("dial").__len__() == 2

    h = run_node(body, dial_allow=ALLOW, max_dials=2)
    assert h.node.faults.limits["max_dials"] == 2


def test_nothing_may_be_dialled_by_default():
    async def body(h: Harness):
        assert (await dial(h, {"to": "sip:bob@127.0.0.1:5090"}))[0] == 403
        assert h.engine.commands("dial") == []

    run_node(body)


# --- <Dial> in a document ----------------------------------------------------------------------

DIAL = ('<Response><Dial action="/dialed" callbackUrl="/dialcb" timeout="10" '
        'callerId="+4420" sipHeaders="Ticket=42"><User sendDigits="12">sip:bob@127.0.0.1:5090'
        '</User><User>sip:carol@127.0.0.1:5091</User></Dial><Speak>after</Speak></Response>')


def test_dial_bridges_the_first_callee_to_answer_and_reports_to_action_and_callback():
    app = WebApp(answer={"sales": DIAL}, routes={"/dialed": (200, "<Response/>"),
                                                 "/dialcb": (200, "ok")})

    async def body(h: Harness):
        a = await h.call("sales")
        await h.wait_until(lambda: len(h.engine.commands("dial")) == 2, what="both rung")
        (bob, *_), (carol, *_) = [c[1:] for c in h.engine.commands("dial")]
        assert h.engine.commands("dial")[0][2:5] == (
            "sip:bob@127.0.0.1:5090", "sip:+4420@127.0.0.1:5080", "")
        assert ("X-PH-Ticket", "42") in h.engine.commands("dial")[0][5]
        h.engine.dial_progress(carol, "ringing")
        h.engine.dial_progress(bob, "answered", 200)
        key = await h.joined(a)
        assert await h.joined(bob) == key and h.node.rooms[f"dial:{a}"].key == key
        await h.wait_until(lambda: h.engine.calls[carol].ended, what="carol cancelled")
        assert h.engine.calls[bob].digits_sent, "sendDigits went to the callee"
        h.engine.hang_up(bob)  # the callee hangs up: the caller goes on with the action
        await h.wait_until(lambda: len(h.app.to("/dialed")) == 1, what="the action")
        act = h.app.to("/dialed")[0].params
        assert (act["DialStatus"], act["DialBLegUUID"], act["DialALegUUID"],
                act["DialRingStatus"], act["DialHangupCause"]) == (
            "completed", bob, a, "true", "NORMAL_CLEARING")
        await h.ended(a)  # the action's empty reply replaced the rest: the call ends
        cb = [(r.params["DialAction"], r.params["DialBLegUUID"]) for r in h.app.to("/dialcb")]
        assert cb == [("answer", bob), ("hangup", bob)]

    h = run_node(body, app=app, dial_allow=ALLOW)
    assert dict(h.node.faults.counts) == {}
    assert h.node.dials.outcomes == {"answered": 1, "canceled": 1}


def test_dial_busy_goes_on_with_the_document_and_the_caller_leaving_cancels_it():
    app = WebApp(answer={"b": DIAL.replace(' action="/dialed"', ""), "gone": DIAL},
                 routes={"/dialed": (200, "<Response/>"), "/dialcb": (200, "ok")})

    async def body(h: Harness):
        a = await h.call("b")
        await h.wait_until(lambda: len(h.engine.commands("dial")) == 2, what="both rung")
        for c in h.engine.commands("dial"):
            h.engine.dial_fails(c[1], 486)
        await h.wait_until(lambda: h.engine.calls[a].played, what="the Speak after Dial")
        h.engine.hang_up(a)
        await h.ended(a)
        g = await h.call("gone")
        await h.wait_until(lambda: len(h.engine.commands("dial")) == 4, what="rung")
        h.engine.hang_up(g)  # the caller gives up while they ring
        await h.ended(g)
        await h.wait_until(lambda: not h.node.dials.ringing, what="both cancelled")
        assert all(h.engine.calls[c[1]].ended for c in h.engine.commands("dial"))
        assert h.app.to("/dialed") == []  # a caller gone while ringing: no action

    h = run_node(body, app=app, dial_allow=ALLOW)
    assert dict(h.node.faults.counts) == {}


def test_dial_to_a_destination_not_allowed_fails_at_once_with_its_action():
    app = WebApp(answer={"x": DIAL}, routes={"/dialed": (200, "<Response/>")})

    async def body(h: Harness):
        a = await h.call("x")
        await h.wait_until(lambda: len(h.app.to("/dialed")) == 1, what="the action")
        assert h.app.to("/dialed")[0].params["DialStatus"] == "failed"
        assert h.engine.commands("dial") == []
        await h.ended(a)

    run_node(body, app=app)


def test_dial_parsing():
    from sipconf.core.answer import AnswerError, Dial, parse_document

    d = parse_document(DIAL, base_url="http://app.test/answer").verbs[0]
    assert isinstance(d, Dial) and d.timeout == 10 and d.caller_id == "+4420"
    assert [t.to for t in d.targets] == ["sip:bob@127.0.0.1:5090", "sip:carol@127.0.0.1:5091"]
    assert d.targets[0].send_digits == "12" and d.headers == (("X-PH-Ticket", "42"),)
    doc = parse_document('<Response><Dial confirmSound="http://x/y" timeout="999">'
                         '<Number>1001</Number></Dial></Response>')
    assert doc.verbs[0].timeout == 120 and any("confirmSound" in i for i in doc.ignored)
    for bad in ("<Dial/>", "<Dial>sip:a@b</Dial>", "<Dial><User>bob</User></Dial>",
                "<Dial><Number>12 34</Number></Dial>",
                '<Dial sipHeaders="a b"><User>sip:a@b</User></Dial>',
                '<Dial callerName="a&quot;b"><User>sip:a@b</User></Dial>'):
        with pytest.raises(AnswerError):
            parse_document(f"<Response>{bad}</Response>")


# --- <Record> ------------------------------------------------------------------------------------

REC = ('<Response><Speak>leave a message</Speak><Record action="/rec" callbackUrl="/reccb" '
       'maxLength="30" timeout="5" finishOnKey="#" fileFormat="wav"/><Speak>bye</Speak>'
       '</Response>')


def test_record_ends_on_the_finish_key_and_reports_the_file():
    app = WebApp(answer={"vm": REC}, routes={"/rec": (200, "<Response/>"),
                                             "/reccb": (200, "ok")})

    async def body(h: Harness):
        a = await h.call("vm")
        await h.wait_until(lambda: h.engine.commands("tap_room"), what="recording")
        await h.wait_until(lambda: len(h.engine.calls[a].played) >= 2, what="the beep")
        await trio.sleep(2.0)
        h.engine.digit(a, "5")  # not a finish key: dropped
        h.engine.digit(a, "#")
        await h.wait_until(lambda: len(h.app.to("/rec")) == 1, what="the action")
        p = h.app.to("/rec")[0].params
        assert p["Digits"] == "#" and p["RecordUrl"].endswith(".wav")
        assert 1800 <= int(p["RecordingDurationMs"]) <= 2600, p
        assert int(p["RecordingEndMs"]) >= int(p["RecordingStartMs"])
        assert h.app.to("/reccb")[0].params["RecordingID"] == p["RecordingID"]
        await h.ended(a)  # the action's empty document replaced the rest

    h = run_node(body, app=app)
    assert dict(h.node.faults.counts) == {}


def test_record_ends_on_silence_and_a_hang_up_still_reports_the_file():
    app = WebApp(answer={"vm": REC.replace(' action="/rec"', ' action="/rec" redirect="false"'),
                         "gone": REC},
                 routes={"/rec": (200, "<Response/>"), "/reccb": (200, "ok")})

    async def body(h: Harness):
        a = await h.call("vm")
        await h.wait_until(lambda: len(h.app.to("/rec")) == 1, 60, what="the silence")
        p = h.app.to("/rec")[0].params
        assert "Digits" not in p and 4500 <= int(p["RecordingDurationMs"]) <= 6000, p
        await h.wait_until(lambda: len(h.engine.calls[a].played) >= 3, what="then 'bye'")
        g = await h.call("gone")
        await h.wait_until(lambda: len(h.engine.commands("tap_room")) == 2, what="recording")
        await trio.sleep(1.0)
        h.engine.hang_up(g)
        await h.wait_until(lambda: len(h.app.to("/rec")) == 2, what="the hang-up's report")
        p = h.app.to("/rec")[1].params
        assert p["CallUUID"] == g and p["CallStatus"] == "completed" and p["RecordUrl"]
        assert len(h.app.to("/reccb")) == 2

    h = run_node(body, app=app)
    assert dict(h.node.faults.counts) == {}
