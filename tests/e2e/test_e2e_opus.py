"""Opus legs as the node codes them by default (``--opus-application voip``): SILK wideband at
the room's 16 kHz (``lowdelay``: CELT only); the answer asks peers for wideband, DTX
(``usedtx=1``) and in-band FEC. A peer in DTX is heard as promptly and as fully as one that
never stops sending; a packet lost from a peer coding FEC is recovered from the next one. Raw
RTP callers coding with the system's libopus, so every packet is under the test's control."""

from __future__ import annotations

import struct
import threading
import time
from itertools import pairwise

import numpy as np
import pytest
from support import opus
from support.rawsip import RawUA
from support.rtp import Receiver, close_all, udp_socket
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
        close_all(rxs.values(), ua, socks.values())
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
    # the node codes wideband SILK by default (RFC 6716 3.1: configs 8-11)
    assert configs and all(8 <= c <= 11 for c in configs), configs
    # RTCP counts Opus' 48 kHz RTP clock whatever the codec's rate (40 ms on loopback before;
    # the DTX talker's packets are late on purpose)
    assert all(m["jitter_ms"] < 10 for m in media["cont"]), media


def _pause_packets(got: list[tuple[float, bytes]], onsets: list[float]) -> list[int]:
    """Packets heard in each pause between bursts: from 0.8 s after a burst's start (its 0.3 s
    and the encoder's hang-over past) to 1.9 s."""
    return [sum(1 for t, _d in got if t0 + 0.8 <= t <= t0 + 1.9) for t0 in onsets]


@pytest.mark.parametrize(("shared_encoding", "application"),
                         [("on", "voip"), ("off", "voip"), ("on", "lowdelay")])
def test_the_node_sends_dtx_to_a_peer_that_asked_for_it(node_factory, shared_encoding,
                                                        application):
    """A listener whose offer says usedtx=1 gets no packets in the room's pauses (libopus' DTX:
    a refresh every 400 ms) and every burst whole; one that did not ask gets 50 packets a
    second. With shared encoding the listeners settle onto the room's shared encoders after
    half a second of quiet; without, each stream's own encoder. Without the pjproject patch the
    node's low-delay CELT encoder (``lowdelay``) coded a silent mix as 50 packets a second, DTX
    or not; SILK (``voip``) has libopus' own DTX."""
    node = node_factory(extra=["--api-token", TOKEN, "--shared-encoding", shared_encoding,
                               "--opus-application", application])
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
    configs = sorted({d[12] >> 3 for _t, d in asked})
    print(f"FIGURE opus DTX out ({application}, shared encoding {shared_encoding}): packets "
          f"in each 1.1 s of pause: asked usedtx=1 "
          f"{pauses['asked']}, did not {pauses['plain']}; loud packets a burst "
          f"{[n for _d, n in heard['asked']]} vs {[n for _d, n in heard['plain']]}; packets "
          f"in all {len(asked)} vs {len(got['plain'])}; timestamp vs arrival, worst "
          f"{max(drift):.0f} ms; shared frames {shared:.0f}; TOC configs {configs}")
    # none in a pause but libopus' refresh each 400 ms, which keeps the peer's NAT binding and
    # RTP timeout fed (SILK's refreshes are TOC-only frames: once, none were sent at all)
    assert all(1 <= p <= 8 for p in pauses["asked"]), pauses
    assert all(p >= 45 for p in pauses["plain"]), pauses
    for n in heard:
        assert all(k >= 14 for _d, k in heard[n]), (n, heard[n])
    assert set(steps) == {1}, sorted(set(steps))
    assert max(drift) < 30, max(drift)
    assert resumed and all(b[1] & 0x80 for b in resumed), [b[1] for b in resumed]
    assert (shared > 0) == (shared_encoding == "on"), shared
    # SILK wideband (configs 8-11) or CELT wideband (20-23), as asked
    assert configs and all((8 <= c <= 11) if application == "voip" else (20 <= c <= 23)
                           for c in configs), configs


# In-band FEC: tones A and B alternate in 100 ms segments; the first packet of each B segment is
# never sent. The node's decoder recovers it from the next packet's FEC (pjmedia's Opus decoder
# runs a frame behind for this), so the listener hears B segments whole; from a talker without
# FEC the lost frame is concealed from the A before it, and B is heard a frame short.
TONE_A, TONE_B = 500.0, 1500.0
SEGMENT = 5  # frames


def _send_hops(sock, dest, fec: bool, seconds: float, jitter_ms: float = 0) -> int:
    """The alternating tones as 20 ms Opus packets (a WebRTC-like VoIP encoder, coding FEC for
    20 % loss or none) after a clean second, each late by up to ``jitter_ms`` (seeded, so
    reordered too); returns the packets left out."""
    enc = opus.Encoder(32000, "wb", complexity=5, fec_loss_pct=20 if fec else 0)
    n = int(seconds / 0.02)
    t = np.arange(n * FRAME) / opus.RATE
    seg = (np.arange(n * FRAME) // FRAME) // SEGMENT % 2
    pcm = (0.25 * 32767 * np.sin(2 * np.pi * np.where(seg == 1, TONE_B, TONE_A) * t)
           ).astype(np.int16)
    late = np.random.default_rng(7).uniform(0, jitter_ms / 1000, n)
    plan, dropped = [], 0
    for k in range(n):
        payload = enc.encode(pcm[k * FRAME:(k + 1) * FRAME])
        if k >= 50 and k % (2 * SEGMENT) == SEGMENT:
            dropped += 1
        else:
            plan.append(((k + 1) * 0.02 + late[k], struct.pack(
                "!BBHII", 0x80, 96, (100 + k) & 0xFFFF, 7000 + k * FRAME, 0x6000) + payload))
    start = time.monotonic()
    for at, packet in sorted(plan, key=lambda p: p[0]):
        delay = start + at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sock.sendto(packet, dest)
    return dropped


def _b_runs(got: list[tuple[float, bytes]]) -> list[float]:
    """What the listener heard, decoded: the length in ms of each run of 5 ms steps whose 10 ms
    window is tone B (10 dB over A), between two of A (whole segments only)."""
    dec = opus.Decoder(16000)
    y = np.concatenate([dec.decode(d[12:]) for _t, d in got] or [np.zeros(0)]).astype(float)
    win, hop = 160, 80
    n = np.arange(win)

    def power(seg: np.ndarray, f: float) -> float:
        return abs(np.dot(seg, np.exp(-2j * np.pi * f * n / 16000))) ** 2

    labels = []
    for i in range(0, len(y) - win, hop):
        a, b = power(y[i:i + win], TONE_A), power(y[i:i + win], TONE_B)
        labels.append("B" if b > 10 * a and b > 1e9 else "A" if a > 10 * b and a > 1e9 else "-")
    runs, i = [], 0
    while i < len(labels):
        j = i
        while j < len(labels) and labels[j] == labels[i]:
            j += 1
        if labels[i] == "B" and i > 0 and labels[i - 1] != "B" and j < len(labels):
            runs.append((j - i) * hop / 16.0)
        i = j
    return runs


def test_a_lost_packet_is_recovered_from_the_next_ones_fec(node_factory):
    """Three rooms, a raw Opus talker and listener each; two talkers code in-band FEC (as a
    WebRTC client does; the node's answer says useinbandfec=1), one in time and one up to 60 ms
    late, the third not; all lose the same packets (the first of each tone-B segment, 25 of
    them). The listener of the FEC talker in time hears B segments whole, the other a frame
    short. The node decodes each packet at once: in time, its jitter buffer holds no packet
    ahead, so once the line proves lossy the decoder holds a frame for the next packet's FEC;
    under 0-60 ms of jitter (a playout target over 45 ms) the buffer holds packets ahead and the
    FEC comes from there."""
    node = node_factory(extra=["--api-token", TOKEN])
    ua = RawUA(node.sip_port)
    rooms = {"fec": (True, 0), "jit": (True, 60), "nofec": (False, 0)}
    socks = {r: (udp_socket(), udp_socket()) for r in rooms}
    rxs = {r: Receiver(s[1]) for r, s in socks.items()}
    dropped: dict[str, int] = {}
    try:
        dlgs = {}
        for r, (fec, _jitter) in rooms.items():
            sdp = OPUS_SDP.replace("useinbandfec=0", f"useinbandfec={int(fec)}")
            dlgs[r] = [ua.call(node.uri(f"fec{r}"), s.getsockname()[1],
                               body=sdp.format(port=s.getsockname()[1])) for s in socks[r]]
        fmtp = next(ln for ln in dlgs["fec"][0].ok.splitlines() if ln.startswith("a=fmtp:"))
        assert "useinbandfec=1" in fmtp, fmtp
        assert wait_until(lambda: all(len(node.members(TOKEN, f"fec{r}")) == 2 for r in rooms), 5)
        for rx in rxs.values():
            rx.start()

        def talk(r: str) -> None:
            fec, jitter = rooms[r]
            dropped[r] = _send_hops(socks[r][0], dlgs[r][0].node_rtp, fec, 6.0, jitter)

        threads = [threading.Thread(target=talk, args=(r,)) for r in rooms]
        threads += [threading.Thread(target=_send, args=(
            socks[r][1], dlgs[r][1].node_rtp, [(None, 6.0)], False, 0x7000, [], [0]))
            for r in rooms]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        time.sleep(0.3)
        media = {r: [m["media"] for m in node.members(TOKEN, f"fec{r}")] for r in rooms}
    finally:
        close_all(rxs.values(), ua, socks.values())
    runs = {r: _b_runs([(t, d) for t, _src, d in rxs[r].got
                        if len(d) > 12 and d[1] & 0x7F == 96]) for r in rooms}
    med = {r: float(np.median(runs[r])) if runs[r] else float("nan") for r in rooms}
    rebuilt = {r: max(m["fec_recovered"] for m in media[r]) for r in rooms}
    print(f"FIGURE opus FEC: {dropped} packets left out; tone-B segments (100 ms sent) heard "
          f"for median {med['fec']:.0f} ms with FEC, {med['jit']:.0f} ms with FEC under "
          f"0-60 ms jitter, {med['nofec']:.0f} ms without (runs {sorted(runs['fec'])} / "
          f"{sorted(runs['jit'])} / {sorted(runs['nofec'])}); frames rebuilt from FEC "
          f"{rebuilt}; node's media "
          f"{[(m['lost'], m['concealed'], m['jb_target_ms']) for ms in media.values() for m in ms]}"
          " (lost, concealed, playout target ms)")
    # no jitter: the playout targets are the packets' few ms (Opus' RTP clock is 48 kHz
    # whatever the codec's rate: measured at 16 kHz, every target read the 60 ms cap)
    assert all(m["jb_target_ms"] is not None and m["jb_target_ms"] < 10
               for r in ("fec", "nofec") for m in media[r]), media
    assert max(m["jb_target_ms"] for m in media["jit"]) >= 20, media["jit"]  # under jitter
    assert dropped == {r: 25 for r in rooms}, dropped
    assert all(len(runs[r]) >= 20 for r in rooms), runs
    # whole with FEC; a 20 ms frame short without (the 10 ms windows blur a run by ~5 ms)
    assert med["fec"] >= 90, runs["fec"]
    assert med["fec"] - med["nofec"] >= 12, med
    # rebuilt from FEC: all but the first few losses in time (before the line proved lossy);
    # under jitter (a target over 45 ms) those whose next packet the buffer held when the lost
    # one's turn came, decoding at once; none without
    assert rebuilt["fec"] >= 20 and rebuilt["jit"] >= 5 and rebuilt["nofec"] == 0, rebuilt


def _receiver_report(me: int, source: int, lost: int, highest: int) -> bytes:
    """An RTCP RR (RFC 3550 6.4.2) about ``source``: ``lost`` packets in all, the fraction
    left at 0 (the node counts the total between reports)."""
    return (struct.pack("!BBHI", 0x81, 201, 7, me) + struct.pack("!I", source)
            + bytes([0]) + lost.to_bytes(3, "big") + struct.pack("!IIII", highest, 0, 0, 0))


@pytest.mark.parametrize("shared_encoding", ["on", "off"])
def test_the_node_codes_fec_for_the_loss_its_peer_reports(node_factory, shared_encoding):
    """A talker's tone bursts; a listener whose offer says useinbandfec=1 reports (RTCP RR,
    once a second) no loss for 5 s, then 20 % of the node's packets lost for 5 s, then none for
    7 s (the node comes down by half a report: 10, 5, then under 3 % none). The node's encoder
    for it (its own, or the room's shared one with shared encoding) codes FEC only while loss
    is reported: its packets' LBRR flag, and the member list's fec_pct, follow the reports."""
    node = node_factory(extra=["--api-token", TOKEN, "--shared-encoding", shared_encoding])
    ua = RawUA(node.sip_port)
    talker, listener, rtcp = udp_socket(), udp_socket(), udp_socket()
    rx = Receiver(listener)
    sdp = OPUS_SDP.replace("useinbandfec=0", "useinbandfec=1")
    phases = [(0.0, 5), (0.2, 5), (0.0, 7)]  # (loss reported, reports)
    fec_pct: list[int | None] = []
    marks: list[float] = []
    try:
        dlgs = [ua.call(node.uri("fecout"), s.getsockname()[1],
                        body=sdp.format(port=s.getsockname()[1])) for s in (talker, listener)]
        assert wait_until(lambda: len(node.members(TOKEN, "fecout")) == 2, 5)
        rx.start()
        seconds = sum(n for _l, n in phases) + 1.5
        # bursts: SILK's voice detection takes a steady tone for background after a second,
        # and codes FEC for voice only
        bursts = [(700.0, 0.3), (None, 0.3)] * int(seconds / 0.6 + 1)
        threads = [threading.Thread(target=_send, args=(
            talker, dlgs[0].node_rtp, bursts, False, 0x8000, [], [0])),
            threading.Thread(target=_send, args=(
                listener, dlgs[1].node_rtp, [(None, seconds)], False, 0x8100, [], [0]))]
        for t in threads:
            t.start()
        node_rtcp = (dlgs[1].node_rtp[0], dlgs[1].node_rtp[1] + 1)
        lost = 0
        seen = 0
        time.sleep(1.0)
        for loss, reports in phases:
            marks.append(time.monotonic())
            for _ in range(reports):
                got = [d for _t, _s, d in list(rx.got) if len(d) > 12 and d[1] & 0x7F == 96]
                lost += int(round(loss * (len(got) - seen)))
                seen = len(got)
                ssrc = struct.unpack("!I", got[-1][8:12])[0] if got else 0
                high = struct.unpack("!H", got[-1][2:4])[0] if got else 0
                rtcp.sendto(_receiver_report(0x8100, ssrc, lost, high), node_rtcp)
                time.sleep(1.0)
            told = [m["media"] for m in node.members(TOKEN, "fecout")
                    if m["media"]["fec_pct"] is not None]  # the talker sends no reports
            assert len(told) == 1 and told[0]["sent_lost"] == lost, told
            fec_pct.append(told[0]["fec_pct"])
        marks.append(time.monotonic())
        for t in threads:
            t.join(30)
    finally:
        rx.stop()
        ua.close()
        for s in (talker, listener, rtcp):
            s.close()
    got = [(t, d) for t, _s, d in rx.got if len(d) > 12 and d[1] & 0x7F == 96]
    # each phase's last 2.5 s (the node polls for a report once a second)
    share = []
    for _a, b in pairwise(marks):
        flags = [opus.has_lbrr(d[12:]) for t, d in got if b - 2.5 <= t <= b]
        flags = [f for f in flags if f is not None]
        share.append(sum(flags) / max(len(flags), 1))
    print(f"FIGURE opus FEC out (shared encoding {shared_encoding}): packets with FEC "
          f"{[f'{s:.0%}' for s in share]} while the peer reported 0 %, 20 %, 0 % loss; the "
          f"member's fec_pct after each phase {fec_pct}")
    assert fec_pct == [0, 20, 0], fec_pct
    # in the lossy phase every packet of a burst but its first (half the packets)
    assert share[0] < 0.05 and share[1] > 0.3 and share[2] < 0.05, share
