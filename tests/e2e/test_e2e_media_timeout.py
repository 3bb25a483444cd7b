"""No call outlives its media (issue 15, part 1): a caller whose RTP stops, or whose call never
had media (an INVITE without SDP whose ACK brings no answer), is hung up after --rtp-timeout
with a BYE carrying a Reason, and the web app's hangup request says MEDIA_TIMEOUT; a caller
that holds the call (a=inactive) is left alone. Raw UDP SIP and RTP, so the timing and what is
on the wire are exact."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest
from support.rawsip import SDP, RawUA, header
from support.rawsip import code as _code
from support.waiting import wait_until

pytestmark = pytest.mark.e2e

TIMEOUT_S = 3


def send_rtp(sock: socket.socket, dest: tuple[str, int], seconds: float) -> None:
    """PCMU silence every 20 ms for ``seconds``, then nothing."""
    ssrc, seq, ts = 0x51C0FFEE, 1, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sock.sendto(struct.pack("!BBHII", 0x80, 0, seq, ts, ssrc) + b"\xff" * 160, dest)
        seq, ts = seq + 1, ts + 160
        time.sleep(0.02)


@pytest.fixture
def timed_node(node_factory, answer_server):
    hangup = answer_server.route("/hangup", "ok", content_type="text/plain")
    node = node_factory(extra=["--rtp-timeout", str(TIMEOUT_S), "--hangup-url", hangup])
    ua = RawUA(node.sip_port)
    yield node, ua, answer_server
    ua.close()


def test_a_caller_whose_rtp_stops_is_hung_up_with_a_reason(timed_node):
    node, ua, server = timed_node
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp:
        rtp.bind(("127.0.0.1", 0))
        dlg = ua.call(f"sip:quiet@127.0.0.1:{node.sip_port}", rtp.getsockname()[1])
        sender = threading.Thread(target=send_rtp, args=(rtp, dlg.node_rtp, 2 * TIMEOUT_S))
        sender.start()
        sender.join()
        stopped = time.monotonic()
        bye = ua.request_from_node("BYE", 4 * TIMEOUT_S)
        waited = time.monotonic() - stopped
    assert bye, node.log()[-2000:]
    # not while RTP flowed (2 x the timeout), and soon after it stopped
    assert TIMEOUT_S - 0.5 <= waited <= TIMEOUT_S + 2.5, waited
    assert header(bye, "Reason").startswith("Q.850;cause=102;text=\"no RTP for"), bye[:600]
    assert "no RTP for" in node.log() and "(rtp_timeout)" in node.log()
    assert wait_until(lambda: server.requests_to("/hangup", delivered=True), 10)
    (req,) = server.requests_to("/hangup")
    assert req.params["HangupCause"] == "MEDIA_TIMEOUT", req.params
    assert req.params["CallUUID"] and req.params["Event"] == "Hangup"
    print(f"FIGURE rtp timeout {TIMEOUT_S} s: BYE {waited:.1f} s after the caller's RTP "
          f"stopped; Reason: {header(bye, 'Reason')}")


def test_a_call_that_never_had_media_is_hung_up(timed_node):
    node, ua, _ = timed_node
    # no offer: the node offers in its 200, and the ACK brings no answer
    ua.call(f"sip:nomedia@127.0.0.1:{node.sip_port}", 0, body="", ctype="")
    t0 = time.monotonic()  # the ACK has gone
    bye = ua.request_from_node("BYE", 4 * TIMEOUT_S)
    assert bye, node.log()[-2000:]
    assert time.monotonic() - t0 <= TIMEOUT_S + 2.5
    assert "no RTP for" in header(bye, "Reason")


def test_a_held_call_is_not_timed(timed_node):
    node, ua, _ = timed_node
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp:
        rtp.bind(("127.0.0.1", 0))
        port = rtp.getsockname()[1]
        dlg = ua.call(f"sip:held@127.0.0.1:{node.sip_port}", port)
        send_rtp(rtp, dlg.node_rtp, 1.0)
        hold = SDP.format(port=port).replace("o=- 1 1", "o=- 1 2").replace("a=sendrecv",
                                                                           "a=inactive")
        ok = ua.reinvite(dlg, hold)
        assert _code(ok) == 200 and "a=inactive" in ok, ok[:600]
        assert ua.request_from_node("BYE", 2 * TIMEOUT_S + 1) == "", node.log()[-2000:]
        ua.request("BYE", dlg.contact, dlg.call_id, to_tag=dlg.tag)
        assert _code(ua.final("BYE")) == 200
    assert "no RTP for" not in node.log()


def test_session_timers_are_negotiated_with_and_without_the_callers_help(node_factory):
    node = node_factory(extra=["--session-expires", "600"])
    ua = RawUA(node.sip_port)
    uri = f"sip:timers@127.0.0.1:{node.sip_port}"
    try:
        for headers, want in [
            # a caller that does session timers refreshes them itself, as it asks
            ("Supported: timer\r\nSession-Expires: 300;refresher=uac\r\n",
             "300;refresher=uac"),
            # one that does not: the node keeps the timer (and refreshes) itself
            ("", "600;refresher=uas"),
        ]:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp:
                rtp.bind(("127.0.0.1", 0))
                dlg = ua.call(uri, rtp.getsockname()[1], headers=headers)
                ok = dlg.ok
                assert header(ok, "Session-Expires").replace(" ", "") == want, ok[:800]
                if headers:
                    assert "timer" in header(ok, "Require"), ok[:800]
                ua.request("BYE", dlg.contact, dlg.call_id, to_tag=dlg.tag)
                assert _code(ua.final("BYE")) == 200
    finally:
        ua.close()
