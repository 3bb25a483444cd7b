"""Opus legs as the node codes them by default (``--opus-application lowdelay``): CELT only at
the room's 16 kHz; the answer asks peers for wideband and DTX (``usedtx=1``), and a peer in DTX
is heard as promptly and as fully as one that never stops sending. Raw RTP callers coding with
the system's libopus, so every packet is under the test's control."""

from __future__ import annotations

import struct
import threading
import time
from itertools import pairwise

import numpy as np
import pytest
from support import opus
from support.rawsip import RawUA
from support.rtp import Receiver, udp_socket
from support.waiting import wait_until

pytestmark = pytest.mark.e2e

TOKEN = "opus-token"
OPUS_SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio {port} RTP/AVP 96\r\na=rtpmap:96 opus/48000/2\r\n"
            "a=fmtp:96 useinbandfec=0\r\na=sendrecv\r\n")
FRAME = opus.FRAME
# quiet 3 s (a DTX peer stops sending), then four 0.3 s bursts of 700 Hz, 1.7 s apart
PLAN = [(None, 3.0)] + [(700.0, 0.3), (None, 1.7)] * 4


def _send(sock, dest, plan, dtx: bool, ssrc: int, onsets: list[float], sent: list[int]):
    """``plan`` in real time as 20 ms Opus packets from an encoder with or without DTX (a
    payload of 2 bytes or less is not sent: the sequence number waits, the timestamp steps).
    With DTX the network is unkind: each packet of a pause arrives late, together with the
    next one (a talk spurt's first, at the end of the pause)."""
    enc = opus.Encoder(32000, "wb", dtx=dtx, complexity=5)
    seq, ts, k, gap = 1000, 5000, 0, True
    held = None
    start = time.monotonic()
    for freq, seconds in plan:
        t = np.arange(int(round(seconds / 0.02)) * FRAME) / opus.RATE
        pcm = (np.zeros(len(t)) if freq is None
               else 0.25 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
        for i in range(0, len(pcm), FRAME):
            if freq is not None and i == 0:
                onsets.append(time.monotonic())
            payload = enc.encode(pcm[i:i + FRAME])
            if len(payload) > 2:
                hdr = struct.pack("!BBHII", 0x80, (0x80 if gap else 0) | 96, seq & 0xFFFF,
                                  ts & 0xFFFFFFFF, ssrc)
                if held is not None:
                    sock.sendto(held, dest)
                    held = None
                if dtx and freq is None:
                    held = hdr + payload
                else:
                    sock.sendto(hdr + payload, dest)
                seq += 1
                sent[0] += 1
            gap = len(payload) <= 2
            ts, k = ts + FRAME, k + 1
            delay = start + k * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def _heard(got: list[tuple[float, bytes]], onsets: list[float]) -> list[tuple[float, int]]:
    """Per burst: (ms from its first packet sent to the first loud packet heard, loud packets
    heard within the burst's 0.3 s and 100 ms after)."""
    dec = opus.Decoder()
    loud = [(t, float(np.sqrt(np.mean(dec.decode(d[12:]).astype(np.float64) ** 2))) > 1000)
            for t, d in got]
    out = []
    for t0 in onsets:
        hits = [t for t, on in loud if on and t0 <= t <= t0 + 0.4]
        out.append(((hits[0] - t0) * 1000 if hits else float("nan"), len(hits)))
    return out


def test_a_dtx_peer_is_heard_as_promptly_as_a_continuous_one(node_factory):
    """Without the node's DTX handling (pjmedia numbers frames by timestamp) a pause's packet
    still buffered when the next arrived left the pause as missing frames: concealed one by
    one, the talker heard late by the pause, later bursts refused by a full buffer."""
    node = node_factory(extra=["--api-token", TOKEN])
    ua = RawUA(node.sip_port)
    rooms = {"dtx": True, "cont": False}
    socks = {r: (udp_socket(), udp_socket()) for r in rooms}  # (talker, listener)
    rxs = {r: Receiver(s[1]) for r, s in socks.items()}
    onsets: dict[str, list[float]] = {r: [] for r in rooms}
    sent = {r: [0] for r in rooms}
    try:
        dlgs = {r: [ua.call(node.uri(r), s.getsockname()[1],
                            body=OPUS_SDP.format(port=s.getsockname()[1])) for s in socks[r]]
                for r in rooms}
        answer = dlgs["dtx"][0].ok
        fmtp = next(ln for ln in answer.splitlines() if ln.startswith("a=fmtp:"))
        assert "usedtx=1" in fmtp and "maxplaybackrate=16000" in fmtp, fmtp
        assert wait_until(lambda: all(len(node.members(TOKEN, r)) == 2 for r in rooms), 5)
        for rx in rxs.values():
            rx.start()
        threads = []
        for r, dtx in rooms.items():
            threads.append(threading.Thread(target=_send, args=(
                socks[r][0], dlgs[r][0].node_rtp, PLAN, dtx, 0x2000, onsets[r], sent[r])))
            # the listeners send continuous silence (no DTX): the node learns them, and hears
            # nothing from them
            threads.append(threading.Thread(target=_send, args=(
                socks[r][1], dlgs[r][1].node_rtp, [(None, 11.0)], False, 0x3000, [], [0])))
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        media = {r: [m["media"] for m in node.members(TOKEN, r)] for r in rooms}
    finally:
        for rx in rxs.values():
            rx.stop()
        ua.close()
        for pair in socks.values():
            for s in pair:
                s.close()
    frames = sum(int(round(s / 0.02)) for _f, s in PLAN)
    got = {r: [(t, d) for t, _src, d in rx.got if len(d) > 12 and d[1] & 0x7F == 96]
           for r, rx in rxs.items()}
    heard = {r: _heard(got[r], onsets[r]) for r in rooms}
    delay = {r: float(np.nanmedian([d for d, _n in heard[r]])) for r in rooms}
    configs = sorted({d[12] >> 3 for r in rooms for _t, d in got[r]})
    print(f"FIGURE opus DTX: the DTX peer sent {sent['dtx'][0]} of {frames} frames (the "
          f"continuous one {sent['cont'][0]}); bursts heard after {delay['dtx']:.1f} ms (DTX) "
          f"vs {delay['cont']:.1f} ms (continuous), loud packets a burst "
          f"{[n for _d, n in heard['dtx']]} vs {[n for _d, n in heard['cont']]}; the node's "
          f"Opus TOC configs {configs}; jitter ms "
          f"{[m['jitter_ms'] for r in rooms for m in media[r]]}")
    assert sent["dtx"][0] < frames * 0.6 and sent["cont"][0] == frames, sent
    # every burst heard whole (15 frames of tone) and as soon after a DTX pause as without one
    for r in rooms:
        assert all(n >= 14 for _d, n in heard[r]), (r, heard[r])
    # the DTX talker's spurt waits behind the late packet that came with it: one frame (20 ms)
    # more, plus each room's phase against its tick (up to 20 ms either way)
    assert delay["dtx"] <= delay["cont"] + 50, (delay, heard)
    assert all(m["concealed"] == 0 for r in rooms for m in media[r]), media
    # the node codes CELT only, wideband (RFC 6716 3.1: configs 20-23)
    assert configs and all(20 <= c <= 23 for c in configs), configs
    # RTCP counts Opus' 48 kHz RTP clock whatever the codec's rate (40 ms on loopback before;
    # the DTX talker's packets are late on purpose)
    assert all(m["jitter_ms"] < 10 for m in media["cont"]), media


def _pause_packets(got: list[tuple[float, bytes]], onsets: list[float]) -> list[int]:
    """Packets heard in each pause between bursts: from 0.8 s after a burst's start (its 0.3 s
    and the encoder's hang-over past) to 1.9 s."""
    return [sum(1 for t, _d in got if t0 + 0.8 <= t <= t0 + 1.9) for t0 in onsets]


@pytest.mark.parametrize("shared_encoding", ["on", "off"])
def test_the_node_sends_dtx_to_a_peer_that_asked_for_it(node_factory, shared_encoding):
    """A listener whose offer says usedtx=1 gets no packets in the room's pauses (libopus' DTX:
    a refresh every 400 ms) and every burst whole; one that did not ask gets 50 packets a
    second. With shared encoding the listeners settle onto the room's shared encoders after
    half a second of quiet; without, each stream's own encoder. Without the pjproject patch the
    node's low-delay CELT encoder coded a silent mix as 50 packets a second, DTX or not."""
    node = node_factory(extra=["--api-token", TOKEN, "--shared-encoding", shared_encoding])
    ua = RawUA(node.sip_port)
    names = ("talker", "asked", "plain")
    socks = {n: udp_socket() for n in names}
    rxs = {n: Receiver(socks[n]) for n in ("asked", "plain")}
    sdp = {"talker": OPUS_SDP, "plain": OPUS_SDP,
           "asked": OPUS_SDP.replace("useinbandfec=0", "useinbandfec=0;usedtx=1")}
    onsets: list[float] = []
    try:
        dlgs = {n: ua.call(node.uri("dtxout"), s.getsockname()[1],
                           body=sdp[n].format(port=s.getsockname()[1]))
                for n, s in socks.items()}
        assert wait_until(lambda: len(node.members(TOKEN, "dtxout")) == 3, 5)
        for rx in rxs.values():
            rx.start()
        threads = [threading.Thread(target=_send, args=(
            socks["talker"], dlgs["talker"].node_rtp, PLAN, False, 0x4000, onsets, [0]))]
        for n in ("asked", "plain"):  # continuous silence: quiet members, no DTX of their own
            threads.append(threading.Thread(target=_send, args=(
                socks[n], dlgs[n].node_rtp, [(None, 11.0)], False, 0x5000, [], [0])))
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        shared = node.metrics().get("sipconf_rtp_frames_shared_total", 0.0)
    finally:
        for rx in rxs.values():
            rx.stop()
        ua.close()
        for s in socks.values():
            s.close()
    got = {n: [(t, d) for t, _src, d in rx.got if len(d) > 12 and d[1] & 0x7F == 96]
           for n, rx in rxs.items()}
    heard = {n: _heard(got[n], onsets) for n in got}
    pauses = {n: _pause_packets(got[n], onsets) for n in got}
    asked = got["asked"]
    # one stream: sequence numbers without a gap, the timestamp following the clock over each
    # pause, the first packet after a pause marked
    steps = [(struct.unpack("!H", b[2:4])[0] - struct.unpack("!H", a[2:4])[0]) & 0xFFFF
             for (_ta, a), (_tb, b) in pairwise(asked)]
    drift = [abs((struct.unpack("!I", b[4:8])[0] - struct.unpack("!I", a[4:8])[0]) / 48
                 - (tb - ta) * 1000)
             for (ta, a), (tb, b) in pairwise(asked)]
    resumed = [b for (ta, _a), (tb, b) in pairwise(asked) if tb - ta > 0.1]
    print(f"FIGURE opus DTX out (shared encoding {shared_encoding}): packets in each 1.1 s "
          f"of pause: asked usedtx=1 "
          f"{pauses['asked']}, did not {pauses['plain']}; loud packets a burst "
          f"{[n for _d, n in heard['asked']]} vs {[n for _d, n in heard['plain']]}; packets "
          f"in all {len(asked)} vs {len(got['plain'])}; timestamp vs arrival, worst "
          f"{max(drift):.0f} ms; shared frames {shared:.0f}")
    assert all(p <= 8 for p in pauses["asked"]), pauses
    assert all(p >= 45 for p in pauses["plain"]), pauses
    for n in heard:
        assert all(k >= 14 for _d, k in heard[n]), (n, heard[n])
    assert set(steps) == {1}, sorted(set(steps))
    assert max(drift) < 30, max(drift)
    assert resumed and all(b[1] & 0x80 for b in resumed), [b[1] for b in resumed]
    assert (shared > 0) == (shared_encoding == "on"), shared
