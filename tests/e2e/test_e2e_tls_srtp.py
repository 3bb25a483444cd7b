"""SIP over TLS and SRTP (SDES) with a real softphone, checked on the wire.

Two baresip phones call a room over TLS with RTP/SAVP (``mediaenc=srtp-mand``): each hears the
other (FFT of what baresip decoded), while a loopback capture shows only TLS records on the SIP
port and RTP whose payloads carry no tone (encrypted, with SRTP's 10-byte authentication tag).
Mid-call the node is sent SIGHUP with a new certificate on disk: new handshakes get it, the
call goes on; a broken key is refused with a log line and the listener keeps its certificate.
With ``--srtp required`` a plain RTP/AVP offer gets 488 and an SRTP offer over UDP is taken.
"""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from support import ports
from support.audio import band_levels, tone_report, ulaw_decode
from support.pcap import Capture, read_tcp
from support.waiting import wait_until

pytestmark = pytest.mark.e2e

A, B = 440.0, 1000.0
SRTP_TAG = 10  # AES_CM_128_HMAC_SHA1_80: an 80-bit authentication tag after the payload


def make_cert(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA for the phones)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def served_cert_name(port: int) -> str:
    """The CN of the certificate a new TLS handshake with the node gets."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-subject"],
                         input=der, capture_output=True, timeout=10, check=True).stdout.decode()
    return out.strip().rsplit("=", 1)[-1].strip()


def test_tls_and_srtp_call_is_heard_and_encrypted_on_the_wire(node_factory, uas, tmp_path):
    cert, key = make_cert(tmp_path, "first")
    live_cert, live_key = tmp_path / "node.crt", tmp_path / "node.key"
    live_cert.write_bytes(cert.read_bytes())
    live_key.write_bytes(key.read_bytes())
    tls_port = ports.block(1)
    node = node_factory(extra=["--sip-tls-port", str(tls_port), "--tls-cert", str(live_cert),
                               "--tls-key", str(live_key)])
    assert served_cert_name(tls_port) == "first"

    alice = uas("alice", tone_hz=A, tls_ca=cert, mediaenc="srtp-mand")
    bob = uas("bob", tone_hz=B, tls_ca=cert, mediaenc="srtp-mand")
    bpf = f"(udp portrange {alice.rtp[0]}-{alice.rtp[1]}) or (tcp port {tls_port})"
    with Capture(tmp_path / "tls.pcap", bpf) as cap:
        alice.dial(f"sip:secure@127.0.0.1:{tls_port}", 20)
        bob.dial(f"sip:secure@127.0.0.1:{tls_port}", 20)
        assert alice.wait_for("Call established", 10), alice.output()[-3000:]
        assert bob.wait_for("Call established", 10), bob.output()[-3000:]
        time.sleep(3.0)

        # a renewed certificate, taken on SIGHUP while the call goes on
        second, second_key = make_cert(tmp_path, "second")
        live_cert.write_bytes(second.read_bytes())
        live_key.write_bytes(second_key.read_bytes())
        node.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "took" in node.log() and "again" in node.log(), 5), \
            node.log()[-2000:]
        assert served_cert_name(tls_port) == "second"
        # a broken key is refused; the listener keeps the certificate it has
        live_key.write_text("not a key\n")
        node.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "certificate not reloaded" in node.log(), 5), \
            node.log()[-2000:]
        assert served_cert_name(tls_port) == "second"
        time.sleep(3.0)
    alice.stop()
    bob.stop()

    assert "SRTP is Enabled" in alice.output() and "RTP/SAVP" in alice.output()
    ra, rb = tone_report(alice.heard(), [A, B]), tone_report(bob.heard(), [A, B])
    assert ra[B] - ra["rest"] >= 20, ra  # alice hears bob, through the reload
    assert rb[A] - rb["rest"] >= 20, rb
    late = tone_report(alice.heard(), [A, B], skip_s=5.0)
    assert late[B] - late["rest"] >= 20, late

    # SIP: only TLS records on the TLS port, never a clear request or response
    sip = [p for p in read_tcp(cap.path) if tls_port in (p.src[1], p.dst[1])]
    assert sip, "no TLS traffic captured"
    assert all(p.payload[0] in (0x14, 0x15, 0x16, 0x17) for p in sip)
    wire = b"".join(p.payload for p in sip)
    assert b"INVITE" not in wire and b"SIP/2.0" not in wire
    # RTP to alice: SRTP (payload + tag), and what a listener on the wire decodes is no tone
    rtp = [p for p in cap.packets() if alice.rtp[0] <= p.dst[1] <= alice.rtp[1]
           and len(p.payload) > 12 and p.payload[0] >> 6 == 2 and (p.payload[1] & 0x7F) == 0]
    assert len(rtp) > 200, len(rtp)
    sizes = {len(p.payload) for p in rtp}
    assert sizes == {12 + 160 + SRTP_TAG}, sizes
    clear = np.concatenate([ulaw_decode(p.payload[12:12 + 160]) for p in rtp])
    levels, rest = band_levels(clear, 8000, [A, B])
    on_wire = float(np.median(levels[:, 1]) - np.median(rest))
    assert on_wire < 6, on_wire  # noise: bob's tone is not on the wire in clear
    print(f"FIGURE TLS+SRTP: alice hears bob {ra[B] - ra['rest']:.0f} dB over the rest, bob "
          f"hears alice {rb[A] - rb['rest']:.0f} dB; on the wire {len(rtp)} RTP packets to "
          f"alice, all {12 + 160 + SRTP_TAG} bytes, bob's tone {on_wire:.1f} dB over the rest "
          f"in a clear decode; {len(sip)} TLS segments, no clear SIP; certificate reloaded "
          "mid-call, broken key refused")


def test_srtp_required_refuses_plain_rtp_with_488(node_factory, uas):
    node = node_factory(extra=["--srtp", "required"])
    plain = uas("plain", tone_hz=A)
    plain.dial(node.uri("vault"), 10)
    assert plain.wait_for("488", 10), plain.output()[-3000:]
    assert not plain.established
    assert "SRTP required" in plain.output()  # the Warning says why
    assert wait_until(lambda: "SRTP required (--srtp) -> 488" in node.log(), 15)

    secure = uas("secure", tone_hz=B, mediaenc="srtp-mand")  # SDES over UDP: taken
    secure.dial(node.uri("vault"), 10)
    assert secure.wait_for("Call established", 10), secure.output()[-3000:]
    assert wait_until(lambda: "SRTP is Enabled" in secure.output(), 5)
    secure.stop()
    plain.stop()
