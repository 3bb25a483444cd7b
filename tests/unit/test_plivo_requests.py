"""Plivo's requests and signatures: what the node signs is checked with the official plivo SDK's
own validators (``validate_v3_signature``, ``validate_signature``), over real HTTP (GET and
POST, with and without a query string) and through a whole call in the real Node (answer,
Redirect, sound documents, callbacks, action, hangup); the parameters carry Plivo's names."""

from __future__ import annotations

import httpx
import pytest
import trio
from plivo.utils import validate_signature
from plivo.utils.signature_v3 import validate_v3_signature
from support.answer_server import AnswerServer
from support.node_harness import BASE, Harness, WebApp, run_node
from support.plivo_check import plivo_valid

from sipconf.config import build
from sipconf.core import sipmsg
from sipconf.webhooks import hangup_cause, hangup_params, request, sign_headers, verify
from sipconf.webhooks.signing import plivo_v2, plivo_v3, plivo_v3_string

TOKEN = "MAZDQ1ZJIYMDZKMMZKYM-token"


# --- the signatures, against the SDK ------------------------------------------------------------


def test_the_documented_vectors():
    url, params = "https://example.com/abcd?foo=bar", {"CallUUID": "97ceeb52", "Digits": "1234"}
    assert plivo_v3_string("POST", url, params, "12345") == (
        "https://example.com/abcd?foo=bar.CallUUID97ceeb52Digits1234.12345")
    assert plivo_v3("my_auth_token", "POST", url, params, "12345") == (
        "IWKGeYKu3R4T6pdMY4r9Aq111so7RfYvhXE0Vl7uVCA=")
    assert plivo_v2("my_auth_token", "https://answer.url", "12345") == (
        "ehV3IKhLysWBxC1sy8INm0qGoQYdYsHwuoKjsX7FsXc=")


URLS = ["http://app.example:8081/answer", "http://app.example/hook?tenant=7&b=&a=1&a=0",
        "https://app.example/p%C3%A4th/x?q=a+b"]
PARAMS = {"CallUUID": "c-1", "From": "sip:alice@10.0.0.1:5062", "To": "team",
          "CallerName": "Jos\u00e9 \u00dcber", "Empty": "", "Odd": "a b+c&d=e/?#%",
          "SIP-H-X-PH-Tenant": "acme"}


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_sign_headers_validate_with_the_sdk(method, url):
    params = dict(PARAMS)
    if method == "GET":  # the SDK reads a GET's query as bytes: ASCII only there
        params["CallerName"] = "Jose"
    req = (httpx.Request("GET", httpx.URL(url).copy_merge_params(params)) if method == "GET"
           else httpx.Request("POST", url, data=params))
    sent = str(req.url)
    h = sign_headers(TOKEN, url, params, method=method, scheme="plivo", sent_url=sent)
    assert set(h) == {"X-Plivo-Signature-V3", "X-Plivo-Signature-V3-Nonce",
                      "X-Plivo-Signature-Ma-V3", "X-Plivo-Signature-V2",
                      "X-Plivo-Signature-V2-Nonce"}
    assert h["X-Plivo-Signature-V3-Nonce"] != h["X-Plivo-Signature-V2-Nonce"]
    form = params if method == "POST" else {}
    # the main account's signature (the same nonce) validates like V3: one account per node
    assert validate_v3_signature(method, sent, h["X-Plivo-Signature-V3-Nonce"], TOKEN,
                                 h["X-Plivo-Signature-Ma-V3"], form or None)
    assert plivo_valid(method, sent, form, h, TOKEN)
    if method == "GET":  # an app may also hand the query parameters over separately
        assert validate_v3_signature("GET", sent, h["X-Plivo-Signature-V3-Nonce"], TOKEN,
                                     h["X-Plivo-Signature-V3"], dict(params))
    # anything changed, and it does not validate
    assert not plivo_valid(method, sent, form, h, "other-token")
    if method == "POST":
        assert not plivo_valid(method, sent, {**form, "To": "other"}, h, TOKEN)
    else:
        assert not plivo_valid(method, sent.replace("To=team", "To=other"), form, h, TOKEN)
    assert not validate_signature(sent.replace("app.example", "evil.example"),
                                  h["X-Plivo-Signature-V2-Nonce"], h["X-Plivo-Signature-V2"],
                                  TOKEN)
    # and the node's own receiver-side check agrees
    assert verify(TOKEN, sent, form if method == "POST" else params, h, method=method)


def test_schemes_sipconf_both_and_no_token():
    p = {"a": "1"}
    assert sign_headers(None, "http://x/cb", p, scheme="plivo") == {}
    own = sign_headers(TOKEN, "http://x/cb", p, scheme="sipconf")
    assert set(own) == {"X-Sipconf-Timestamp", "X-Sipconf-Nonce", "X-Sipconf-Signature"}
    both = sign_headers(TOKEN, "http://x/cb", p, scheme="both")
    assert {"X-Sipconf-Signature", "X-Plivo-Signature-V3", "X-Plivo-Signature-V2"} <= set(both)
    assert verify(TOKEN, "http://x/cb", p, both)
    assert plivo_valid("POST", "http://x/cb", p, both, TOKEN)


@pytest.fixture
def receiver():
    server = AnswerServer().start()
    yield server
    server.stop()


@pytest.mark.parametrize("scheme", ["plivo", "both"])
def test_requests_over_real_http_validate_with_the_sdk(receiver, scheme):
    """What the receiver got, as it got it (path, raw query, form fields, headers)."""
    receiver.route("/hook", "ok", content_type="text/plain")
    base = f"http://127.0.0.1:{receiver.port}"
    cases = [("GET", "/hook"), ("GET", "/hook?tenant=7&z="), ("POST", "/hook"),
             ("POST", "/hook?tenant=7&z=")]

    async def main():
        async with httpx.AsyncClient() as http:
            for method, path in cases:
                await request(http, base + path, method, PARAMS if method == "POST" else
                              {**PARAMS, "CallerName": "Jose"}, 5.0, TOKEN, scheme=scheme)

    trio.run(main)
    got = receiver.requests_to("/hook")
    assert len(got) == 4
    for r in got:
        assert r.plivo_valid(TOKEN, base), (r.method, r.query, r.headers)
        assert r.params["CallUUID"] == "c-1"
    # a GET keeps the URL's own query beside the parameters
    assert got[1].params["tenant"] == "7" and got[1].params["To"] == "team"
    assert ("x-sipconf-signature" in {k.lower() for k in got[0].headers}) == (scheme == "both")


# --- the parameters -------------------------------------------------------------------------------


def test_hangup_params_are_plivos():
    p = hangup_params("c-1", "sip:a@h:5062", "team", "Al", started=1_700_000_000.2,
                      answered=1_700_000_001.5, ended=1_700_000_013.0,
                      cause="NORMAL_CLEARING", source="Caller",
                      headers=(("X-PH-Tenant", "acme"),))
    assert p == {
        "CallUUID": "c-1", "From": "sip:a@h:5062", "To": "team", "Direction": "inbound",
        "CallStatus": "completed", "CallerName": "Al", "BillRate": "0", "Event": "Hangup",
        "SIP-H-X-PH-Tenant": "acme", "HangupCause": "NORMAL_CLEARING",
        "HangupSource": "Caller", "Duration": "12", "BillDuration": "12",
        "StartTime": "2023-11-14 22:13:20", "AnswerTime": "2023-11-14 22:13:21",
        "EndTime": "2023-11-14 22:13:33", "TotalCost": "0"}
    unanswered = hangup_params("c", "f", "t", "", started=0.0, answered=None, ended=3.0,
                               cause="ORIGINATOR_CANCEL", source="Caller")
    assert unanswered["Duration"] == "0" and unanswered["AnswerTime"] == ""


@pytest.mark.parametrize("answered, by_caller, outcome, code, stopping, want", [
    (True, True, "", 0, False, ("NORMAL_CLEARING", "Caller")),
    (False, True, "", 0, False, ("ORIGINATOR_CANCEL", "Caller")),
    (True, False, "", 0, False, ("NORMAL_CLEARING", "Answer XML")),
    (False, False, "", 486, False, ("USER_BUSY", "Answer XML")),
    (False, False, "", 603, False, ("CALL_REJECTED", "Answer XML")),
    (False, False, "answer-url-failed", 503, False, ("NORMAL_TEMPORARY_FAILURE", "Error")),
    (True, False, "error", 0, False, ("NORMAL_TEMPORARY_FAILURE", "Error")),
    (True, False, "", 0, True, ("SYSTEM_SHUTDOWN", "Plivo")),
])
def test_hangup_cause(answered, by_caller, outcome, code, stopping, want):
    assert hangup_cause(answered, by_caller, outcome, code, stopping) == want


def test_hangup_cause_of_a_call_without_rtp():
    assert hangup_cause(True, False, "", 0, False, media_timeout=True) == ("MEDIA_TIMEOUT",
                                                                           "Plivo")


INVITE = ("INVITE sip:team@10.0.0.2 SIP/2.0\r\n"
          "Via: SIP/2.0/UDP 10.0.0.1:5062;branch=z9hG4bK1\r\n"
          'f: "Alice" <sip:alice@10.0.0.1:5062;transport=udp>;tag=1\r\n'
          "To: <sip:team@10.0.0.2>\r\n"
          "X-PH-Tenant: acme\r\n"
          "x-ph-Order: 12\r\n"
          "  34\r\n"
          "X-PH-Tenant: second\r\n"
          "X-PH-Bad name: no\r\n"
          "X-Other: not passed\r\n"
          f"X-PH-Long: {'v' * 400}\r\n"
          "Content-Length: 0\r\n\r\n")


def test_the_invite_gives_from_with_its_port_and_the_custom_headers():
    from_hdr = sipmsg.header(INVITE, "from")
    assert sipmsg.bare_uri(from_hdr) == "sip:alice@10.0.0.1:5062;transport=udp"
    assert sipmsg.display_name(from_hdr) == "Alice"
    custom = sipmsg.custom_headers(INVITE)
    assert custom[:2] == (("X-PH-Tenant", "acme"), ("x-ph-Order", "12 34"))
    assert custom[2] == ("X-PH-Long", "v" * sipmsg.MAX_CUSTOM_VALUE)
    assert len(custom) == 3
    many = "INVITE sip:x@y SIP/2.0\r\n" + "".join(f"X-PH-H{i}: {i}\r\n" for i in range(50))
    assert len(sipmsg.custom_headers(many)) == sipmsg.MAX_CUSTOM_HEADERS
    assert sipmsg.custom_headers("garbage") == () and sipmsg.header("", "from") is None


def test_signature_and_hangup_options():
    cfg = build({"auth_token": "t", "hangup_url": "http://app/h"})
    assert cfg.signature == "plivo" and cfg.hangup_method == "POST"
    assert build({"signature": "both"}).signature == "both"
    with pytest.raises(ValueError):
        build({"signature": "hmac"})
    with pytest.raises(ValueError):
        build({"hangup_method": "PUT"})


# --- a whole call in the real node ---------------------------------------------------------------


def _all_valid(h: Harness) -> None:
    assert h.app.requests
    for r in h.app.requests:
        assert plivo_valid(r.method, r.url, r.form, r.headers, "webhook-key"), (
            r.method, r.url, r.headers)


def test_every_request_of_a_call_is_plivo_shaped_and_signed():
    snd = f"<Response><Play>{BASE}/s.wav</Play></Response>"
    app = WebApp(
        answer={"r": f'<Response><Redirect method="POST">{BASE}/next?step=2</Redirect>'
                     "</Response>"},
        routes={"/next": (f'<Response><Conference callbackUrl="/cb" enterSound="{BASE}/snd.xml"'
                          f' action="{BASE}/action?x=1" method="GET" redirect="false">team'
                          "</Conference></Response>"),
                "/snd.xml": snd, "/hangup": ""})

    async def body(h: Harness):
        uuid = await h.call("r", from_uri="sip:alice@127.0.0.1:5062",
                            sip_headers=(("X-PH-Tenant", "acme"),))
        await h.joined(uuid)
        await h.wait_until(lambda: h.app.to("/snd.xml") and h.app.events(), what="enter")
        h.engine.hang_up(uuid)
        await h.ended(uuid)
        await h.wait_until(lambda: h.app.to("/hangup"), what="the hangup request")

    h = run_node(body, app=app, answer_url=f"{BASE}/answer?tenant=7", answer_method="GET",
                 hangup_url=f"{BASE}/hangup")
    _all_valid(h)
    (answer,) = h.app.to("/answer")
    assert answer.method == "GET" and answer.params["tenant"] == "7"
    p = answer.params
    assert (p["Event"], p["CallStatus"], p["Direction"], p["BillRate"]) == (
        "StartApp", "ringing", "inbound", "0")
    assert p["From"] == "sip:alice@127.0.0.1:5062" and p["SIP-H-X-PH-Tenant"] == "acme"
    (nxt,) = h.app.to("/next")
    assert nxt.method == "POST" and nxt.params["Event"] == "Redirect"
    (snd_req,) = h.app.to("/snd.xml")
    assert snd_req.method == "POST" and snd_req.form["CallUUID"] == p["CallUUID"]
    assert snd_req.form["SIP-H-X-PH-Tenant"] == "acme"
    (action,) = h.app.to("/action")
    assert action.method == "GET" and action.params["x"] == "1"
    assert action.params["ConferenceName"] == "team" and action.params["CallStatus"] == "completed"
    (hup,) = h.app.to("/hangup")
    q = hup.form
    assert (q["Event"], q["CallStatus"], q["HangupCause"], q["HangupSource"]) == (
        "Hangup", "completed", "NORMAL_CLEARING", "Caller")
    assert q["Duration"].isdigit() and q["BillDuration"] == q["Duration"] and q["AnswerTime"]
    assert q["SIP-H-X-PH-Tenant"] == "acme" and q["From"] == "sip:alice@127.0.0.1:5062"
    order = [r.path for r in h.app.requests if r.path in ("/cb", "/action", "/hangup")]
    assert order == ["/cb", "/cb", "/action", "/hangup"]  # the hangup request comes last


@pytest.mark.parametrize("answer, want", [
    ((500, "down"), ("NORMAL_TEMPORARY_FAILURE", "Error")),
    ('<Response><Hangup reason="busy"/></Response>', ("USER_BUSY", "Answer XML")),
    ("<Response><Wait length=\"2\"/></Response>", ("NORMAL_CLEARING", "Answer XML")),
])
def test_the_hangup_request_says_why(answer, want):
    app = WebApp(answer={"r": answer}, routes={"/hangup": ""})

    async def body(h: Harness):
        await h.call("r")
        await h.wait_until(lambda: h.app.to("/hangup"), what="the hangup request")

    h = run_node(body, app=app, hangup_url=f"{BASE}/hangup", signature="both")
    _all_valid(h)
    (hup,) = h.app.to("/hangup")
    assert (hup.params["HangupCause"], hup.params["HangupSource"]) == want
    assert verify("webhook-key", hup.url, hup.form, hup.headers)  # "both": ours too


def test_a_node_that_stops_says_so_in_the_hangup_request():
    app = WebApp(answer={"r": "<Response><Conference>team</Conference></Response>"},
                 routes={"/hangup": ""})

    async def body(h: Harness):
        await h.joined(await h.call("r"))

    h = run_node(body, app=app, hangup_url=f"{BASE}/hangup")
    _all_valid(h)
    (hup,) = h.app.to("/hangup")
    assert (hup.params["HangupCause"], hup.params["HangupSource"]) == ("SYSTEM_SHUTDOWN",
                                                                        "Plivo")


def test_wait_and_exit_sound_documents_and_the_transcription_are_signed_too():
    hold = f"<Response><Play>{BASE}/s.wav</Play></Response>"
    app = WebApp(answer={
        "w": ('<Response><Conference startConferenceOnEnter="false" '
              f'waitSound="{BASE}/hold.xml">team</Conference></Response>'),
        "r": ('<Response><Conference record="true" recordFileFormat="wav" callbackUrl="/cb" '
              f'exitSound="{BASE}/bye.xml" transcriptionType="auto" transcriptionUrl="/tr" '
              'transcriptionMethod="GET">team</Conference></Response>')},
        routes={"/hold.xml": hold, "/bye.xml": hold, "/tr": ""})

    async def body(h: Harness):
        w = await h.call("w", sip_headers=(("X-PH-Role", "waiter"),))
        await h.joined(w)
        await h.wait_until(lambda: h.app.to("/hold.xml"), what="the wait sound document")
        r = await h.call("r")
        await h.joined(r)
        await trio.sleep(3)
        h.engine.hang_up(r)
        await h.wait_until(lambda: h.app.to("/bye.xml"), what="the exit sound document")
        h.engine.hang_up(w)  # the run ends: its recording is complete, then transcribed
        await h.wait_until(lambda: h.app.to("/tr"), what="the transcription")

    h = run_node(body, app=app)
    _all_valid(h)
    holds = h.app.to("/hold.xml")  # waiting, then alone again: asked each time
    assert holds and all(r.method == "POST" and r.form["SIP-H-X-PH-Role"] == "waiter"
                         for r in holds)
    (bye,) = h.app.to("/bye.xml")
    assert bye.method == "POST" and bye.form["To"] == "r"
    (tr,) = h.app.to("/tr")
    assert tr.method == "GET" and tr.params["transcription"]
