"""One encode per shared mix (issue 19), on the wire.

Raw RTP callers (every packet ours to send and to read): a talker sends a 1 kHz tone; the
listeners are quiet, and one of them talks (600 Hz) for a while in the middle, so it goes from
the room's shared encoder to its own and back. What each listener gets must stay one clean RTP
stream (one SSRC, sequence numbers +1, timestamps +1 frame, whatever encoder made the
payload), carry the talker's tone, and never the listener's own voice; the node counts the
shared frames. With Opus, the frames around each switch are measured against the same call on
a node with shared encoding off."""

from __future__ import annotations

import struct
import threading
import time

import numpy as np
import pytest
from support import opus
from support.audio import ulaw_decode, ulaw_encode
from support.rawsip import RawUA
from support.rtp import Receiver, udp_socket
from support.waiting import wait_until

pytestmark = pytest.mark.e2e

TOKEN = "share-token"
OPUS_SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio {port} RTP/AVP 96 101\r\na=rtpmap:96 opus/48000/2\r\n"
            "a=fmtp:96 useinbandfec=0\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")


class Codec:
    def __init__(self, name: str):
        self.name = name
        self.rate, self.pt, self.step = (8000, 0, 160) if name == "pcmu" else (48000, 96, 960)
        self._enc = opus.Encoder() if name == "opus" else None

    def encode(self, frame: np.ndarray) -> bytes:
        return ulaw_encode(frame) if self._enc is None else self._enc.encode(frame)


LATE_S = 0.004  # a packet sent this late may miss the tick that reads it 5 ms after arrival


def _talk(sock, dest, name: str, plan: list[tuple[float | None, float]], ssrc: int,
          late: list[float]) -> None:
    """Send ``plan`` ((Hz or None for silence, seconds), ...) as 20 ms packets in real time,
    with an encoder of its own; note in ``late`` when a packet went out LATE_S or more behind
    its time (this thread shares the GIL with the others of the test)."""
    codec = Codec(name)
    n = codec.rate // 50
    seq, ts, k = 1000, 5000, 0
    start = time.monotonic()
    phase = 0
    for freq, seconds in plan:
        for _ in range(int(round(seconds / 0.02))):
            t = (phase + np.arange(n)) / codec.rate
            frame = (np.zeros(n) if freq is None
                     else 0.25 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
            phase += n
            hdr = struct.pack("!BBHII", 0x80, codec.pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
            payload = codec.encode(frame)
            now = time.monotonic()
            if now - (start + k * 0.02) >= LATE_S:
                late.append(now)
            sock.sendto(hdr + payload, dest)
            seq, ts, k = seq + 1, ts + codec.step, k + 1
            delay = start + k * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)


def _room(node, codec: Codec, plans: list[list[tuple[float | None, float]]], during=None,
          late: list[list[float]] | None = None):
    """Call one room with one raw caller a plan; return each caller's received RTP packets
    (time, bytes), the node's shared frame count and what
    ``during(ua, dialogs, sockets)``, run once the callers talk, returned. ``late`` gets,
    for each caller, the times it sent a packet late."""
    late = [[] for _ in plans] if late is None else late
    ua = RawUA(node.sip_port)
    socks = [udp_socket() for _ in plans]
    rxs = [Receiver(s) for s in socks]
    body = None if codec.name == "pcmu" else OPUS_SDP
    mid = None
    try:
        dlgs = [ua.call(node.uri("share"), s.getsockname()[1],
                        body=None if body is None else body.format(port=s.getsockname()[1]))
                for s in socks]
        assert wait_until(lambda: len(node.members(TOKEN, "share")) == len(plans), 5)
        for rx in rxs:
            rx.start()
        threads = [threading.Thread(target=_talk,
                                    args=(s, d.node_rtp, codec.name, p, 0x1000 + i, lt))
                   for i, (s, d, p, lt) in enumerate(zip(socks, dlgs, plans, late, strict=True))]
        for t in threads:
            t.start()
        if during is not None:
            mid = during(ua, dlgs, socks)
        for t in threads:
            t.join(30)
        shared = node.metrics().get("sipconf_rtp_frames_shared_total", 0.0)
    finally:
        for rx in rxs:
            rx.stop()
        ua.close()
        for s in socks:
            s.close()
    return [[(t, d) for t, _src, d in rx.got if len(d) > 12] for rx in rxs], shared, mid


def _audio(got, pt: int):
    """Each caller's packets of payload type ``pt``."""
    return [[(t, d) for t, d in pkts if d[1] & 0x7F == pt] for pkts in got]


def _one_stream(pkts: list[tuple[float, bytes]], step: int) -> None:
    """One SSRC; each packet the next sequence number and one frame later."""
    assert len(pkts) > 100
    ssrcs = {struct.unpack("!I", d[8:12])[0] for _, d in pkts}
    assert len(ssrcs) == 1, ssrcs
    seqs = np.array([struct.unpack("!H", d[2:4])[0] for _, d in pkts], dtype=np.int64)
    tss = np.array([struct.unpack("!I", d[4:8])[0] for _, d in pkts], dtype=np.int64)
    assert set(np.diff(seqs) % 65536) == {1}, sorted(set(np.diff(seqs) % 65536))
    assert set(np.diff(tss) % (1 << 32)) == {step}, sorted(set(np.diff(tss) % (1 << 32)))


def _level(pcm: np.ndarray, rate: int, freq: float) -> float:
    """dB of ``freq`` in ``pcm`` (Hann window), relative to full scale."""
    w = np.hanning(len(pcm))
    spec = np.abs(np.fft.rfft(pcm * w)) / (w.sum() / 2) / 32768
    f = np.fft.rfftfreq(len(pcm), 1 / rate)
    band = (f > freq - 20) & (f < freq + 20)
    return 20 * np.log10(spec[band].max() + 1e-9)


def _window(pkts, t0: float, a: float, b: float) -> np.ndarray:
    return np.concatenate([ulaw_decode(d[12:]) for t, d in pkts if t0 + a <= t < t0 + b]
                          ).astype(np.float64)


def test_quiet_members_share_one_encode_and_stay_one_stream(node_factory):
    node = node_factory(extra=["--api-token", TOKEN])
    talk = [(1000.0, 4.0)]
    quiet = [(None, 4.0)]
    switcher = [(None, 1.5), (600.0, 1.0), (None, 1.5)]
    t0 = time.monotonic()
    got, shared, _ = _room(node, Codec("pcmu"), [talk, quiet, switcher, quiet])
    got = _audio(got, 0)
    print(f"FIGURE shared encoding: {shared:g} of the room's frames sent as one shared encode")
    assert shared >= 3 * 100  # three quiet listeners, most of 4 s
    for pkts in got:
        _one_stream(pkts, 160)
    listener, me = got[1], got[2]
    # the listener hears the talker throughout and the switcher while it talks
    assert _level(_window(listener, t0, 0.5, 1.4), 8000, 1000) > -20
    assert _level(_window(listener, t0, 1.9, 2.4), 8000, 600) > -20
    # the switcher, on its own encoder while it talks, hears the talker, never itself
    mine = _window(me, t0, 1.9, 2.4)
    assert _level(mine, 8000, 1000) > -20
    assert _level(mine, 8000, 600) < _level(mine, 8000, 1000) - 40


def _decode_opus(pkts) -> np.ndarray:
    dec = opus.Decoder()
    return np.concatenate([dec.decode(d[12:]) for _t, d in pkts]).astype(np.float64)


def _residual_db(pcm: np.ndarray, freq: float) -> np.ndarray:
    """Per 20 ms frame: what is not the tone at ``freq`` (fitted in amplitude and phase),
    dB relative to the tone's level."""
    n = opus.FRAME
    t = np.arange(n) / opus.RATE
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    out = []
    for i in range(len(pcm) // n):
        x = pcm[i * n:(i + 1) * n]
        coef, *_ = np.linalg.lstsq(basis, x, rcond=None)
        tone = basis @ coef
        level = np.sum(tone ** 2) / n
        out.append(10 * np.log10((np.sum((x - tone) ** 2) / n + 1e-9) / (level + 1e-9))
                   if level > (0.05 * 32768) ** 2 / 2 else np.nan)  # the tone over -26 dBFS
    return np.array(out)


def _talker_empties(node):
    """How often the talker's jitter buffer ran empty amid its talk (0.5 s to 5.5 s in)."""
    def during(_ua, _dlgs, _socks) -> int:
        time.sleep(0.5)
        before = node.members(TOKEN, "share")[0]["media"]["jb_empty"]
        time.sleep(5.0)
        return node.members(TOKEN, "share")[0]["media"]["jb_empty"] - before
    return during


def test_opus_switch_between_shared_and_own_encoder(node_factory):
    """A quiet Opus listener hears the talker's tone from the shared encoder, starts talking
    amid it (its own encoder, continuing the shared one's state), stops (shared again, in a
    pause), three times. The tone it hears is measured frame by frame: what is not the tone,
    relative to it, worst over the call vs the same call on a node that never shares."""
    # the switcher starts talking amid the tone, and is back on the shared encoder in a pause
    switcher = [(None, 1.0)] + [(600.0, 0.4), (None, 1.1)] * 3 + [(None, 0.5)]
    talker = [(1010.0, 1.8), (None, 0.4), (1010.0, 1.1), (None, 0.4), (1010.0, 1.5),
              (None, 0.4), (1010.0, 0.4)]
    plans = [talker, [(None, 6.0)], switcher]
    worst, p95, loud = {}, {}, {}
    for mode in ("on", "off"):
        node = node_factory(extra=["--api-token", TOKEN, "--shared-encoding", mode])
        late: list[list[float]] = [[] for _ in plans]
        got, shared, empties = _room(node, Codec("opus"), plans, during=_talker_empties(node),
                                     late=late)
        got = _audio(got, 96)
        node.terminate()
        for pkts in got:
            _one_stream(pkts, 960)
        res = _residual_db(_decode_opus(got[2]), 1010.0)
        # each payload the switcher got: the one the quiet listener got too (the shared
        # encoder's), or its own encoder's
        theirs = {d[12:] for _t, d in got[1]}
        mine = np.array([d[12:] in theirs for _t, d in got[2]])[:len(res)]
        # frames with the talker's tone, not next to its pauses (its on/offsets)
        near = np.convolve(np.isnan(res), np.ones(5), mode="same") > 0
        keep = ~near
        keep[:45] = False  # the call's start and end
        keep[-15:] = False
        switches = int(np.sum(mine[:-1] & ~mine[1:] & keep[:-1] & keep[1:]))
        # a loaded box's doing, not the switch's: frames soon after the talker sent a packet
        # late are set aside; for each time the node found its buffer empty (a packet late on
        # the way in) the codec's concealment and recovery may leave 3 frames over -25 dB
        excused = np.array([any(-0.02 <= t - tl < 0.15 for tl in late[0])
                            for t, _d in got[2]])[:len(res)]
        fair = keep & ~excused
        assert np.sum(fair) >= 50, (int(np.sum(keep)), len(late[0]))  # enough left to judge
        worst[mode] = float(np.max(res[fair]))
        p95[mode] = float(np.percentile(res[fair], 95))
        loud[mode] = max(0, int(np.sum(res[fair] > -25)) - 3 * empties)
        print(f"FIGURE opus shared encoding {mode}: the switcher hears the tone with its "
              f"residual at median {np.median(res[fair]):.1f} dB, 95th percentile "
              f"{p95[mode]:.1f} dB, worst frame {worst[mode]:.1f} dB ({loud[mode]} frames over "
              f"-25 dB unexplained; {int(np.sum(excused & keep))} frames set aside after "
              f"{len(late[0])} packets the talker sent late, its buffer {empties} times empty; "
              f"{shared:g} frames shared, {switches} switches to its own encoder amid the tone)")
        if mode == "on":
            assert shared > 150 and switches >= 2, (shared, switches)
        else:
            assert shared == 0
    # A switch is seamless: no frame around the switches stands out (a naive switch left the
    # residual at -7 dB for a frame and over -30 dB for 15), and the residual's upper tail is
    # the one the node gives without switching. One frame over -25 dB is allowed for a packet
    # late on a loaded box (seen once, in a run without sharing).
    assert loud["on"] <= 1 and p95["on"] < p95["off"] + 3, (worst, p95, loud)


def test_a_member_holding_the_call_gets_no_shared_payload(node_factory):
    """A quiet member who puts the call on hold (re-INVITE, a=sendonly) is sent nothing,
    shared encoding or not; the other quiet member goes on hearing the talker."""
    node = node_factory(extra=["--api-token", TOKEN])

    def hold(ua, dlgs, socks) -> float:
        time.sleep(1.0)
        port = socks[2].getsockname()[1]
        held = ua.reinvite(dlgs[2], SDP_HOLD.format(port=port))
        assert held.startswith("SIP/2.0 200"), held[:200]
        return time.monotonic() + 0.3

    plans = [[(1000.0, 4.0)], [(None, 4.0)], [(None, 4.0)]]
    got, shared, t_held = _room(node, Codec("pcmu"), plans, during=hold)
    to_held = [t for t, _d in got[2] if t >= t_held]
    to_other = [(t, d) for t, d in got[1] if t >= t_held]
    assert shared > 100
    assert len(to_held) <= 2, len(to_held)  # 2.7 s of a sending stream would be ~135
    assert len(to_other) > 100
    assert _level(_window(to_other, t_held, 0.2, 2.0), 8000, 1000) > -20


SDP_HOLD = ("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\na=sendonly\r\n")
