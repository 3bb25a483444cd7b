"""The SIP edge answers like a well-behaved UA (issue 15, part 3): every request it can parse
gets a final response, stateless, sent to the packet's source; nothing it does not serve
(presence, MESSAGE, REFER, registrations) is taken. Raw UDP, so what goes on the wire is
exactly what is checked."""

from __future__ import annotations

import socket
import time
import uuid

import pytest
from support.rawsip import SDP, RawUA
from support.rawsip import code as _code
from support.rawsip import header as _header
from support.waiting import wait_until

pytestmark = pytest.mark.e2e

@pytest.fixture
def ua(node_factory):
    node = node_factory()
    ua = RawUA(node.sip_port)
    yield node, ua
    ua.close()


def test_out_of_dialog_requests_get_final_answers_and_nothing_else(ua):
    node, ua = ua
    uri = f"sip:edge@127.0.0.1:{node.sip_port}"
    expect = {
        "REGISTER": (405, ""), "SUBSCRIBE": (405, "Event: presence\r\nExpires: 60\r\n"),
        "PUBLISH": (405, "Event: presence\r\n"), "MESSAGE": (405, ""),
        "NOTIFY": (405, "Event: dialog\r\n"), "REFER": (405, "Refer-To: <sip:x@127.0.0.1>\r\n"),
        "FROBNICATE": (501, ""), "INFO": (481, ""), "UPDATE": (481, ""), "OPTIONS": (200, ""),
    }
    for method, (code, headers) in expect.items():
        ua.request(method, uri, f"{uuid.uuid4().hex}@raw", headers=headers)
        resp = ua.final(method)
        assert _code(resp) == code, (method, resp[:300])
        if code in (405, 501):
            allow = _header(resp, "Allow")
            assert "INVITE" in allow and "SUBSCRIBE" not in allow and "REGISTER" not in allow
    # no NOTIFY storm, no retransmitted final answers: the node sent nothing else
    assert ua.others(1.5) == []
    refused = {k: v for k, v in node.metrics().items()
               if k.startswith("sipconf_sip_requests_refused_total")}
    assert refused['sipconf_sip_requests_refused_total{reason="method_not_allowed"}'] == 6
    assert refused['sipconf_sip_requests_refused_total{reason="unknown_method"}'] == 1
    assert refused['sipconf_sip_requests_refused_total{reason="no_dialog"}'] == 2
    assert node.alive()


def test_malformed_request_is_answered_to_its_source_not_its_via(ua):
    node, ua = ua
    # a socket where the Via claims the sender is: it must get nothing (no reflection)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as victim:
        victim.bind(("127.0.0.1", 0))
        victim.settimeout(1.0)
        vport = victim.getsockname()[1]
        bad = (f"INVITE sip:edge@127.0.0.1:{node.sip_port} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{vport};branch=z9hG4bK-reflect\r\n"
               "From: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:edge@127.0.0.1>\r\n"
               "Call-ID: reflect-1@127.0.0.1\r\nCSeq: banana INVITE\r\nMax-Forwards: 70\r\n"
               "Content-Length: 0\r\n\r\n")
        ua.sock.sendto(bad.encode(), ua.node)
        ua.sock.settimeout(3.0)
        reply = ua.sock.recv(65535)
        assert reply.startswith(b"SIP/2.0 400") and b"reflect-1@127.0.0.1" in reply
        with pytest.raises(TimeoutError):
            victim.recv(65535)
    assert node.alive()


def test_requests_inside_a_call_get_the_right_refusals(ua):
    node, ua = ua
    uri = f"sip:edge@127.0.0.1:{node.sip_port}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp:
        rtp.bind(("127.0.0.1", 0))
        dlg = ua.call(uri, rtp.getsockname()[1])
        call_id, tag, contact = dlg.call_id, dlg.tag, dlg.contact
        cases = [
            ("INFO", 415, "", "call me maybe", "text/plain"),
            ("SUBSCRIBE", 489, "Event: dialog\r\n", "", ""),
            ("NOTIFY", 489, "Event: talk\r\nSubscription-State: active\r\n", "", ""),
            ("REFER", 405, "Refer-To: <sip:elsewhere@127.0.0.1>\r\n", "", ""),
            ("FROBNICATE", 501, "", "", ""),
            ("INFO", 200, "", "Signal=5\r\nDuration=160\r\n", "application/dtmf-relay"),
        ]
        for method, code, headers, body, ctype in cases:
            ua.request(method, contact, call_id, to_tag=tag, headers=headers, body=body,
                       ctype=ctype)
            resp = ua.final(method)
            assert _code(resp) == code, (method, ctype, resp[:300])
            if code == 415:
                assert "application/dtmf-relay" in _header(resp, "Accept")
        # the call is still up after all that: a BYE ends it with 200
        ua.request("BYE", contact, call_id, to_tag=tag)
        assert _code(ua.final("BYE")) == 200
    assert node.alive()


def test_multipart_invite_is_taken_and_a_reinvite_without_a_common_codec_gets_488(ua):
    node, ua = ua
    uri = f"sip:edge@127.0.0.1:{node.sip_port}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp:
        rtp.bind(("127.0.0.1", 0))
        port = rtp.getsockname()[1]
        sdp = SDP.format(port=port)
        # an INVITE from a PSTN gateway: the SDP beside an ISUP part (RFC 3204, RFC 5621)
        body = ("--b1\r\nContent-Type: application/sdp\r\n\r\n" + sdp + "\r\n--b1\r\n"
                "Content-Type: application/isup;version=itu-t92+\r\n"
                "Content-Disposition: signal;handling=optional\r\n\r\n\x01\x00\x49\r\n--b1--\r\n")
        dlg = ua.call(uri, port, body=body, ctype="multipart/mixed;boundary=b1")
        assert "PCMU" in dlg.ok
        rtp.settimeout(5)
        assert rtp.recv(2048)  # the room reaches us

        g729 = (sdp.replace("o=- 1 1", "o=- 1 2").replace("RTP/AVP 0 101", "RTP/AVP 18")
                .replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:18 G729/8000"))
        no = ua.reinvite(dlg, g729)
        assert _code(no) == 488, no[:400]
        # the call goes on with what it had; a new offer it can take is answered
        ok2 = ua.reinvite(dlg, sdp.replace("o=- 1 1", "o=- 1 3"))
        assert _code(ok2) == 200 and "PCMU" in ok2, ok2[:400]
        ua.request("BYE", dlg.contact, dlg.call_id, to_tag=dlg.tag)
        assert _code(ua.final("BYE")) == 200
    assert node.alive()


def _invite_flood(ua: RawUA, uri: str, n: int, rtp_port: int) -> list[str]:
    """``n`` new INVITEs as fast as the socket takes them; their Call-IDs."""
    ids = []
    for _ in range(n):
        call_id = f"{uuid.uuid4().hex}@flood"
        ids.append(call_id)
        ua.request("INVITE", uri, call_id, body=SDP.format(port=rtp_port),
                   ctype="application/sdp")
    return ids


def _answers(ua: RawUA, seconds: float) -> dict[str, list[str]]:
    """Every response that arrives in ``seconds``, by Call-ID."""
    out: dict[str, list[str]] = {}
    for data in ua.messages(seconds):
        out.setdefault(_header(data, "Call-ID"), []).append(data)
    return out


def test_an_invite_flood_is_refused_early_cheaply_and_quietly(node_factory):
    """300 INVITEs from one source at once, against a node that lets a source start 5 calls a
    second (burst 5): the first 5 ring, the rest get a stateless 503 with Retry-After (one
    each: no retransmissions), OPTIONS stay fast, and the log gets a summary line, not one
    line per INVITE."""
    node = node_factory(extra=["--source-call-rate", "5", "--source-call-burst", "5",
                               "--retry-after", "7"])
    ua = RawUA(node.sip_port)
    uri = f"sip:flood@127.0.0.1:{node.sip_port}"
    log_before = len(node.log().splitlines())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp:
        rtp.bind(("127.0.0.1", 0))
        t0 = time.monotonic()
        ids = _invite_flood(ua, uri, 300, rtp.getsockname()[1])
        options_ms = []
        for _ in range(5):
            t = time.monotonic()
            assert node.options_ok(timeout=1.0)
            options_ms.append((time.monotonic() - t) * 1000)
        answers = _answers(ua, 4.0)
        elapsed = time.monotonic() - t0
    finals = {cid: [r for r in answers.get(cid, []) if not r.startswith("SIP/2.0 1")]
              for cid in ids}
    refused = [cid for cid, rs in finals.items() if rs and _code(rs[0]) == 503]
    admitted = [cid for cid, rs in finals.items()
                if any(r.startswith("SIP/2.0 1") for r in answers.get(cid, []))]
    print(f"flood: 300 INVITEs, {len(admitted)} admitted, {len(refused)} refused with 503 "
          f"in {elapsed:.1f} s; OPTIONS during it {max(options_ms):.1f} ms at most")
    assert 5 <= len(admitted) <= 8, len(admitted)  # the burst (and what 5/s refills meanwhile)
    assert len(refused) + len(admitted) == 300
    for cid in refused:
        assert len(finals[cid]) == 1  # stateless: never retransmitted
        assert _header(finals[cid][0], "Retry-After") == "7"
        assert "too many new calls" in _header(finals[cid][0], "Warning")
    assert max(options_ms) < 500
    m = node.metrics()
    assert m['sipconf_calls_total{outcome="rate-limited"}'] == len(refused)
    # one summary line per source and interval, not 295 lines
    assert wait_until(lambda: "refused new calls from 127.0.0.1" in node.log(), 5)
    new_lines = node.log().splitlines()[log_before:]
    assert len(new_lines) < 60, "\n".join(new_lines[-80:])
    assert sum("refused new calls" in ln for ln in new_lines) == 1
    ua.close()
    assert node.alive()


def test_untrusted_invite_is_refused_before_pjsua_opens_anything(node_factory):
    node = node_factory(extra=["--trust", "10.0.0.0/8"])
    ua = RawUA(node.sip_port)
    uri = f"sip:edge@127.0.0.1:{node.sip_port}"
    ua.request("INVITE", uri, f"{uuid.uuid4().hex}@raw", body=SDP.format(port=9),
               ctype="application/sdp")
    resp = ua.final("INVITE")
    assert _code(resp) == 403 and "source not trusted" in _header(resp, "Warning")
    assert "Retry-After" not in resp
    assert ua.others(1.0) == []  # one answer, no retransmission
    # nothing got as far as pjsua: no call was created (no "incoming call" in the log), and
    # the refusal is logged once by the SIP thread
    assert wait_until(lambda: "not a trusted source" in node.log(), 5)
    assert node.metrics()['sipconf_calls_total{outcome="forbidden"}'] == 1
    ua.close()


def test_a_full_node_answers_503_with_retry_after(node_factory):
    """Two calls' worth of RTP ports (4): the third INVITE gets 503 + Retry-After up front,
    and RTP never goes past --rtp-ports."""
    node = node_factory(rtp_ports=4)
    ua = RawUA(node.sip_port)
    uri = f"sip:full@127.0.0.1:{node.sip_port}"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp:
        rtp.bind(("127.0.0.1", 0))
        for _ in range(2):
            port = ua.call(uri, rtp.getsockname()[1]).node_rtp[1]  # 200, ACKed
            assert node.rtp[0] <= port and port + 1 <= node.rtp[1], (port, node.rtp)
        ua.request("INVITE", uri, f"{uuid.uuid4().hex}@raw",
                   body=SDP.format(port=rtp.getsockname()[1]), ctype="application/sdp")
        busy = ua.final("INVITE")
        assert _code(busy) == 503 and _header(busy, "Retry-After") == "5", busy[:300]
        assert "capacity" in _header(busy, "Warning")
    ua.close()
    assert node.alive()
