"""SIPp against the node: load in rooms of 20, codec refusal, answer-URL failures, bad input."""

import socket
import subprocess
import sys
import time
from collections import Counter

import pytest
from support import ports, sipp
from support.pcap import Capture

pytestmark = pytest.mark.e2e


@pytest.fixture
def tone_ulaw(tmp_path):
    path = tmp_path / "tone.ulaw"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-e", "u-law", "-t", "raw", str(path),
                    "synth", "3", "sine", "800"], check=True, timeout=30)
    return path


def test_forty_concurrent_calls_in_rooms_of_twenty(tmp_path, node_factory, tone_ulaw):
    node = node_factory(None)  # built-in document: each call joins the room it dialled
    rows = [["room-a"]] * 20 + [["room-b"]] * 20
    hold_ms = 8000
    bpf = f"udp and src portrange {node.rtp[0]}-{node.rtp[1]}"
    with Capture(tmp_path / "rtp.pcap", bpf) as cap:
        res = sipp.run(tmp_path, f"127.0.0.1:{node.sip_port}", "uac_pcmu.xml", rows, calls=40,
                       subs={"RTPFILE": tone_ulaw, "HOLD_MS": hold_ms}, concurrent=40,
                       rate=40, timeout=40)
    assert res.successful == 40 and res.failed == 0, res.output[-3000:]
    # RTP back on every leg: each call's stream leaves the node from its own port.
    per_leg = Counter(p.src[1] for p in cap.packets() if p.dst[1] == res.media_port)
    assert len(per_leg) == 40, f"RTP back on {len(per_leg)} legs: {sorted(per_leg.items())}"
    # 8 s held; demand at least 5 s of 20 ms packets on every leg.
    thin = {port: n for port, n in per_leg.items() if n < 250}
    assert not thin, f"legs with too little RTP back: {thin}"
    assert "room-a" in node.log() and "room-b" in node.log()
    assert "member 20" in node.log()


def test_offer_without_common_codec_gets_488(tmp_path, node_factory):
    node = node_factory()
    res = sipp.run(tmp_path, f"127.0.0.1:{node.sip_port}", "uac_expect_reject.xml", [["r"]],
                   calls=1, subs={"PT": 18, "RTPMAP": "G729/8000", "RESPONSE": 488}, timeout=15)
    assert res.successful == 1, res.output[-3000:]
    assert "WARNING-HEADER" in res.output and "codec" in res.output.lower()
    assert node.alive()


@pytest.mark.parametrize("case", ["down", "http500", "bad-xml", "no-conference-room", "slow"])
def test_answer_url_failure_gets_503_and_one_log_line(tmp_path, answer_server, node_factory,
                                                      case):
    extra = []
    if case == "down":
        url = "http://127.0.0.1:9/answer"  # discard port: nothing listens
        why = "cannot connect"
    elif case == "http500":
        url = answer_server.route("/answer", "oops", status=500)
        why = "HTTP 500"
    elif case == "bad-xml":
        url = answer_server.route("/answer", "<Response><Conference>")
        why = "not valid XML"
    elif case == "no-conference-room":
        url = answer_server.route("/answer", "<Response><Conference> </Conference></Response>")
        why = "empty room name"
    else:
        url = answer_server.route("/answer", "<Response/>", delay=3.0)
        extra = ["--answer-timeout", "1"]
        why = "timed out"
    node = node_factory(url, extra=extra)
    res = sipp.run(tmp_path, f"127.0.0.1:{node.sip_port}", "uac_expect_reject.xml", [["r"]],
                   calls=1, subs={"PT": 0, "RTPMAP": "PCMU/8000", "RESPONSE": 503}, timeout=15)
    assert res.successful == 1, res.output[-3000:]
    assert why in res.output  # the Warning header says why
    lines = [ln for ln in node.log().splitlines() if "answer URL" in ln and "failed" in ln]
    assert len(lines) == 1, node.log()[-3000:]
    assert url in lines[0] and why in lines[0]
    assert node.alive()


def _udp_exchange(port: int, data: bytes, timeout: float = 3.0) -> bytes:
    """Send ``data`` (its ``5999`` replaced by our own port, as a real client's Via would be)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        s.sendto(data.replace(b"5999", str(s.getsockname()[1]).encode()), ("127.0.0.1", port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return b""


def _options(port: int) -> bytes:
    msg = (
        f"OPTIONS sip:probe@127.0.0.1:{port} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-opt-1;rport\r\n"
        "From: <sip:probe@127.0.0.1>;tag=1\r\nTo: <sip:probe@127.0.0.1>\r\n"
        "Call-ID: opt-1@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    )
    return msg.encode()


def test_malformed_sip_gets_an_error_and_the_node_lives_on(node_factory):
    node = node_factory()
    port = node.sip_port
    bad_cseq = (
        f"INVITE sip:room@127.0.0.1:{port} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-bad-1;rport\r\n"
        "From: <sip:x@127.0.0.1>;tag=1\r\nTo: <sip:room@127.0.0.1>\r\n"
        "Call-ID: bad-1@127.0.0.1\r\nCSeq: banana INVITE\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    reply = _udp_exchange(port, bad_cseq)
    assert reply.startswith(b"SIP/2.0 400"), reply[:200]
    assert b"Call-ID: bad-1@127.0.0.1" in reply and b"malformed" in reply
    bad_sdp = (
        f"INVITE sip:room@127.0.0.1:{port} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK-bad-2;rport\r\n"
        "From: <sip:x@127.0.0.1>;tag=2\r\nTo: <sip:room@127.0.0.1>\r\n"
        "Call-ID: bad-2@127.0.0.1\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        "Contact: <sip:x@127.0.0.1:5999>\r\nContent-Type: application/sdp\r\n"
        "Content-Length: 20\r\n\r\nthis is not SDP....."
    ).encode()
    reply = _udp_exchange(port, bad_sdp)
    first = reply.split(b"\r\n", 1)[0]
    assert first.startswith(b"SIP/2.0 4"), reply[:300]
    for junk in (b"\x00\xff" * 50, b"NOT SIP AT ALL\r\n\r\n", b"INVITE\r\n\r\n"):
        _udp_exchange(port, junk, timeout=0.3)
    assert node.alive()
    assert _udp_exchange(port, _options(port)).startswith(b"SIP/2.0 200")


def test_sigterm_byes_every_call_and_exits_zero(node_factory, uas):
    node = node_factory()
    phones = [uas(n, tone_hz=f).dial(node.uri("bye"), 60)
              for n, f in (("alice", 440.0), ("bob", 1000.0))]
    for ua in phones:
        assert ua.wait_for("Call established", 10), ua.output()[-2000:]
    time.sleep(1)
    rc, took = node.terminate()
    assert rc == 0, node.log()[-3000:]
    assert took < 5.0
    for ua in phones:
        assert ua.wait_for("terminated", 5) or ua.terminated, ua.output()[-2000:]
        assert "BYE sip:" in ua.output()  # the node sent the BYE


def test_port_in_use_is_a_clear_error(node_factory, tmp_path):
    node = node_factory()
    base = [sys.executable, "-m", "sipconf", "serve", "--data-dir", str(tmp_path / "second"),
            "--rtp-ports", f"{node.rtp[0]}-{node.rtp[1]}"]
    free_http = str(ports.block(1))
    res = subprocess.run(base + ["--sip-port", str(node.sip_port), "--http-port", free_http],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    assert f"cannot listen for SIP on udp 127.0.0.1:{node.sip_port}" in res.stderr
    assert "Traceback" not in res.stderr
    res = subprocess.run(base + ["--sip-port", str(ports.block(2)),
                                 "--http-port", str(node.http_port)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    assert f"cannot serve HTTP on 127.0.0.1:{node.http_port}: Address already in use" in \
        res.stderr, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert node.alive()
