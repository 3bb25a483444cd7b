"""What a listener hears through the node, scored with PESQ (ITU-T P.862).

    .venv/bin/python benchmarks/quality.py [--reps 3] [--only clean,noise,loss]
                                          [--codec pcmu,g722,opus,opus-nofec]

Speech in: a few sentences of espeak-ng (about 9 s, scaled to -26 dBFS over the utterance)
with 2 s of silence before it, as the microphone (baresip ``aufile``) of a talker calling the
node. Speech out: what a listener (baresip, ``sndfile``) decoded. The listener's recording is
aligned to the speech by cross-correlation and scored with PESQ (ref and deg with 0.5 s of
silence either side): narrowband at 8 kHz for PCMU (the default), wideband at 16 kHz for
G.722 and Opus (``--codec``; the Opus talker is baresip at 32 kbit/s, VoIP application,
coding in-band FEC for 10 % loss, as a WebRTC client does: ``opus-nofec`` is the same talker
without FEC, to show what the node makes of it). Delay: the talker's RTP as it leaves the
talker and the node's RTP to the listener, captured on ``lo`` (dumpcap) and decoded; each of
the node's frames that carries the talker's audio is found in the talker's (by normalised
correlation, to the sample), and the delay is the median of when the node sent it less when
the talker sent the same audio (``frame_delay``): mouth-to-wire delay of the node plus the
impairment's own delay (jitter buffer, mixer tick, encoder, relay). Decoders here: mu-law in
numpy, libopus and spandsp's G.722 (tests/support/opus.py, g722.py).

Rows (each the median of --reps paired repetitions: one repetition runs every selected row,
with the same seeds):

- codec alone: the same speech through G.711 mu-law encode/decode in numpy, spandsp's G.722
  at 64 kbit/s, or libopus at 16 kHz (the ceiling);
- clean: talker -> listener, a room of two;
- noise: a room of three, the talker and two listeners whose microphones carry seeded white
  noise at -45 dBFS; the first listener's score (it hears the talker plus the other listener's
  noise). Once on a node with its defaults, once on a node with ``--noise-suppression``;
  and, for reference, the same room of three with silent microphones (default node);
- loss/jitter: the talker's SIP goes through a small forwarder in this process that rewrites
  the node's SDP answer so the talker's RTP goes to a UDP relay (also here) that drops and
  delays it (seeded ``random.Random``: loss %, delay +- jitter, uniform, reordering only where
  the jitter makes a packet overtake the next) before passing it on to the node's port. The
  node learns the relay as the caller's RTP source (symmetric RTP) from the first second of
  packets, which the relay passes clean; its RTP back is relayed to the talker unimpaired.
  Beside each, ``codec+loss alone``: the same loss pattern applied to the speech's 20 ms
  frames with silence in place of a lost frame (no concealment; what the loss alone
  costs without any jitter buffer or PLC); for Opus, libopus' own concealment instead, and
  the frame recovered from the next packet's FEC where that one came (an ideal receiver);
- the baseline (``pjsua2 bridge:`` rows, unless ``--no-bridge``): the clean and loss/jitter
  rows again, same seeds, through pjsua2's own conference bridge on the same pjproject build
  (benchmarks/pyport_node.py --bridge: calls connected with startTransmit, pjsua's default
  jitter buffer), and per repetition the node's score and delay less the bridge's.

Onset: from the talker's first packet louder than -35 dBFS to the first such packet the node
sends the listener (over the -45 dBFS noise; a gate that clipped a first syllable would show
here, compared between the noise rows with and without suppression).

The first run on a new machine checks the PESQ installation (``pesq`` is in the project's test
extra). A repetition takes about 3 minutes for all rows.
"""

from __future__ import annotations

import argparse
import heapq
import random
import re
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pesq import pesq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support import g722, ports  # noqa: E402
from support.audio import read_wav, ulaw_decode, ulaw_encode, write_wav  # noqa: E402
from support.baresip import BaresipUA  # noqa: E402
from support.node import NodeProcess  # noqa: E402
from support.pcap import Capture, read_udp  # noqa: E402

LEAD_S = 2.0  # silence on the talker's microphone before the speech
TAIL_S = 2.0  # and after it (baresip's aufile ends the call when the file ends)
PAD_S = 0.5  # silence either side of the utterance given to PESQ
WARMUP_PACKETS = 50  # the relay passes the first second clean (the node learns its address)
NOISE_DBFS = -45.0
SPEECH_DBFS = -26.0
TEXT = ("The birch canoe slid on the smooth planks. Glue the sheet to the dark blue "
        "background. It is easy to tell the depth of a well. These days a chicken leg is a "
        "rare dish.")

BRIDGE = "  pjsua2 bridge: "  # the baseline's rows


@dataclass(frozen=True)
class Codec:
    """What the callers speak, and how the benchmark hears it."""

    label: str  # prefixes the rows ("" for PCMU, the default)
    name: str  # baresip's (and the SDP's) name
    rate: int  # PESQ's: 8000 narrowband, 16000 wideband
    mic_rate: int  # baresip 1.0's aufile does not resample: the codec's own rate
    payload_type: int | None  # a static one, or None: dynamic (>= 96)
    clock: int  # RTP timestamp units a second (G.722's is 8000 at 16 kHz, RFC 3551 4.5.2)
    extra_conf: tuple[str, ...] = ()
    fec: bool = False

    @property
    def frame(self) -> int:
        return self.rate // 50


OPUS_CONF = ("opus_application voip", "opus_bitrate 32000")
CODECS = {
    "pcmu": Codec("", "PCMU", 8000, 8000, 0, 8000),
    "g722": Codec("G.722: ", "G722", 16000, 16000, 9, 8000),
    "opus": Codec("Opus: ", "opus", 16000, 48000, None, 48000,
                  (*OPUS_CONF, "opus_packet_loss 10"), fec=True),
    "opus-nofec": Codec("Opus, no FEC: ", "opus", 16000, 48000, None, 48000,
                        (*OPUS_CONF, "opus_packet_loss 0")),
}

LOSS_ROWS = [  # (label, loss %, delay ms, jitter ms)
    ("3 % loss", 3.0, 0.0, 0.0),
    ("10 % loss", 10.0, 0.0, 0.0),
    ("5 % loss + 20+-10 ms", 5.0, 20.0, 10.0),
    ("5 % loss + 40+-40 ms", 5.0, 40.0, 40.0),
]


# ---------------------------------------------------------------------------------- audio

def resampled(src: Path, dst: Path, rate: int) -> Path:
    subprocess.run(["sox", str(src), "-r", str(rate), "-c", "1", "-b", "16", str(dst)],
                   check=True, timeout=60)
    return dst


def make_speech(work: Path, rate: int) -> np.ndarray:
    """espeak-ng speech at ``rate``, int16, scaled to SPEECH_DBFS (RMS over the utterance)."""
    raw = work / "speech-22k.wav"
    if not raw.exists():
        subprocess.run(["espeak-ng", "-w", str(raw), TEXT], check=True, timeout=60)
    pcm, _ = read_wav(resampled(raw, work / f"speech-{rate}.wav", rate))
    loud = np.nonzero(np.abs(pcm) > 100)[0]
    pcm = pcm[loud[0]:loud[-1] + 1]
    rms = np.sqrt(np.mean(pcm ** 2))
    pcm = pcm * (32768 * 10 ** (SPEECH_DBFS / 20) / rms)
    return np.clip(pcm, -32768, 32767).astype(np.int16)


def padded(speech: np.ndarray, rate: int) -> np.ndarray:
    pad = np.zeros(int(PAD_S * rate), np.int16)
    return np.concatenate([pad, speech, pad])


def score(ref: np.ndarray, deg: np.ndarray, rate: int) -> float:
    return float(pesq(rate, ref.astype(np.float64), deg.astype(np.float64),
                      "nb" if rate == 8000 else "wb"))


def xcorr_lag(signal: np.ndarray, ref: np.ndarray, lo: int = 0, hi: int | None = None) -> int:
    """The shift of ``ref`` in ``signal`` (samples, within [lo, hi)) that correlates best."""
    n = 1 << int(np.ceil(np.log2(len(signal) + len(ref))))
    c = np.fft.irfft(np.fft.rfft(signal, n) * np.conj(np.fft.rfft(ref, n)), n)
    hi = len(signal) if hi is None else min(hi, len(signal))
    return lo + int(np.argmax(c[lo:hi]))


def heard_score(heard: Path, speech: np.ndarray, rate: int) -> tuple[float, float]:
    """(PESQ, the speech's offset in the recording in s): the listener's recording (at
    ``rate``, or brought there) aligned to the speech by cross-correlation."""
    pcm, got = read_wav(heard)
    if got != rate:
        pcm, _ = read_wav(resampled(heard, heard.with_suffix(f".{rate}.wav"), rate))
    return aligned_score(pcm, speech, rate)


def aligned_score(pcm: np.ndarray, speech: np.ndarray, rate: int) -> tuple[float, float]:
    """(PESQ, offset in s) of ``pcm`` against the speech it carries somewhere."""
    lag = xcorr_lag(pcm, speech.astype(np.float64))
    ref = padded(speech, rate)
    start = lag - int(PAD_S * rate)
    deg = np.zeros(len(ref))
    a, b = max(start, 0), min(start + len(ref), len(pcm))
    if b > a:
        deg[a - start:b - start] = pcm[a:b]
    return score(ref, deg, rate), lag / rate


def opus_through(ref: np.ndarray, codec: Codec, lost: set[int]) -> np.ndarray:
    """``ref`` through libopus at 16 kHz as the talker codes it; a lost frame concealed by
    the decoder, or recovered from the next packet's FEC when that one was not lost."""
    from support.opus import Decoder, Encoder

    enc = Encoder(32000, "wb", fec_loss_pct=10 if codec.fec else 0, rate=codec.rate)
    dec = Decoder(codec.rate)
    n = len(ref) // codec.frame
    payloads = [enc.encode(ref[i * codec.frame:(i + 1) * codec.frame]) for i in range(n)]
    out = []
    for i, p in enumerate(payloads):
        if i not in lost:
            out.append(dec.decode(p))
        elif i + 1 < n and i + 1 not in lost:
            out.append(dec.decode(payloads[i + 1], fec=True))
        else:
            out.append(dec.decode(None))
    return np.concatenate(out)[:len(ref)]


def codec_through(ref: np.ndarray, codec: Codec, lost: set[int]) -> np.ndarray:
    """``ref`` coded and decoded in 20 ms frames, the frames in ``lost`` missing: silence
    for G.711 and G.722 (no concealment; G.722's decoder simply skips the packet), Opus'
    own concealment and FEC (``opus_through``)."""
    if codec.name == "opus":
        return opus_through(ref, codec, lost)
    if codec.name == "PCMU":
        out = ulaw_decode(ulaw_encode(ref)).astype(np.float64)
        for i in lost:
            out[i * codec.frame:(i + 1) * codec.frame] = 0
        return out
    enc, dec = g722.Encoder(), g722.Decoder()
    out = np.zeros(len(ref))
    for i in range(len(ref) // codec.frame):
        payload = enc.encode(ref[i * codec.frame:(i + 1) * codec.frame])
        if i not in lost:
            out[i * codec.frame:(i + 1) * codec.frame] = dec.decode(payload)
    return out


def codec_alone(speech: np.ndarray, codec: Codec) -> float:
    ref = padded(speech, codec.rate)
    out = codec_through(ref, codec, set())
    return score(ref[:len(out)], out, codec.rate)


def codec_with_loss(speech: np.ndarray, codec: Codec, loss: float, seed: int) -> float:
    """The codec with the relay's loss pattern on 20 ms frames (``codec_through``)."""
    ref = padded(speech, codec.rate)
    imp = Impairment(loss, 0.0, 0.0, seed)
    lost = {i for i in range(len(ref) // codec.frame) if imp.fate() is None}
    out = codec_through(ref, codec, lost)
    return score(ref[:len(out)], out, codec.rate)


ONSET_DBFS = -35.0  # a frame louder than this starts the speech (over -45 dBFS noise)


@dataclass
class Wire:
    """What the capture says: delays, and what the node sent the listener, decoded."""

    delay_ms: float = float("nan")
    onset_ms: float = float("nan")
    out: np.ndarray | None = None  # laid out by RTP timestamp (an ideal receiver)


def wire(cap: Path, talker: BaresipUA, listener: BaresipUA, node: NodeProcess,
         codec: Codec) -> Wire:
    """Talker's RTP as sent vs the node's RTP to the listener, decoded: the delay
    (``frame_delay``); and the onset delay,
    from the talker's first packet over ONSET_DBFS to the listener's first (a gate that clips
    a first syllable shows here). And the node's RTP decoded and laid out by its timestamps:
    what a listener with a perfect jitter buffer hears, so the node is scored without the
    listener client's own playout (``wire`` column)."""
    sent: list[tuple[float, np.ndarray]] = []
    out: list[tuple[float, np.ndarray]] = []
    out_ts: list[int] = []
    decoders: dict[str, object] = {}

    def decode(which: str, body: bytes) -> np.ndarray:
        if codec.name == "PCMU":
            return ulaw_decode(body[:codec.frame])
        if codec.name == "G722":
            return decoders.setdefault(which, g722.Decoder()).decode(body).astype(np.float64)
        from support.opus import Decoder

        return decoders.setdefault(which, Decoder(codec.rate)).decode(body).astype(np.float64)

    sent_ts: list[int] = []
    for p in read_udp(cap):
        pl = p.payload
        if len(pl) <= 12 + 4 or pl[0] >> 6 != 2:
            continue
        pt = pl[1] & 0x7F
        if pt != codec.payload_type and (codec.payload_type is not None or pt < 96):
            continue  # not RTCP
        if talker.rtp[0] <= p.src[1] <= talker.rtp[1]:
            sent.append((p.t, decode("sent", pl[12:])))
            sent_ts.append(int.from_bytes(pl[4:8], "big"))
        elif (listener.rtp[0] <= p.dst[1] <= listener.rtp[1]
              and node.rtp[0] <= p.src[1] <= node.rtp[1]):
            out.append((p.t, decode("out", pl[12:])))
            out_ts.append(int.from_bytes(pl[4:8], "big"))
    if len(sent) < 100 or len(out) < 100:
        return Wire()
    t0 = min(sent[0][0], out[0][0])
    end = max(sent[-1][0], out[-1][0]) - t0
    rate = codec.rate

    def onset(stream: list[tuple[float, np.ndarray]]) -> float:
        floor = (32768 * 10 ** (ONSET_DBFS / 20)) ** 2
        return next((t for t, pcm in stream if len(pcm) and np.mean(pcm ** 2) > floor),
                    float("nan"))

    spans = [((ts - out_ts[0]) % (1 << 32)) * rate // codec.clock for ts in out_ts]
    heard = np.zeros(min(max(spans) + 6 * codec.frame, int((end + 1) * rate)))
    for i, (_, pcm) in zip(spans, out, strict=True):
        heard[i:i + len(pcm)] = pcm[:max(len(heard) - i, 0)]
    return Wire(frame_delay(sent, sent_ts, out, codec),
                (onset(out) - onset(sent)) * 1000, heard)


MATCH_MIN = 0.9  # a frame the listener got is the talker's audio: correlation at least this
MATCH_DBFS = -40.0  # frames quieter than this are not matched (pauses, concealment's fades)
MATCH_MAX_S = 0.3  # delays looked for: 0..this


def frame_delay(sent: list[tuple[float, np.ndarray]], sent_ts: list[int],
                out: list[tuple[float, np.ndarray]], codec: Codec) -> float:
    """Mouth-to-wire delay, ms: the median over the node's frames to the listener that carry
    the talker's audio (not concealment) of when that frame was sent less when the talker sent
    the same audio. The talker's audio is laid out by its RTP timestamps (gap-free) and each
    frame of the node's is found in it by normalised correlation, to the sample. (One
    cross-correlation of the whole signals laid out by capture time was the measure before: at
    5 % loss + 40+-40 ms, a quarter of the frames concealed, it read 58-87 ms for calls whose
    frames all came 76-79 ms after the talker's.)"""
    if len(sent) < 100 or len(out) < 100:
        return float("nan")
    rate = codec.rate
    pos = np.array([((ts - sent_ts[0] + (1 << 31)) % (1 << 32) - (1 << 31)) * rate // codec.clock
                    for ts in sent_ts], dtype=np.int64)
    order = np.argsort(pos, kind="stable")
    pos, t_sent = pos[order] - pos.min(), np.array([sent[i][0] for i in order])
    talk = np.zeros(int(pos[-1]) + 2 * codec.frame)
    for i, k in enumerate(order):
        pcm = sent[k][1]
        talk[pos[i]:pos[i] + len(pcm)] = pcm
    n = codec.frame
    windows = np.lib.stride_tricks.sliding_window_view(talk, n)
    energy = np.einsum("ij,ij->i", windows, windows)
    floor = n * (32768 * 10 ** (MATCH_DBFS / 20)) ** 2
    delays = []
    for t, pcm in out:
        x = pcm[:n]
        ex = float(np.dot(x, x))
        if len(x) < n or ex < floor:
            continue
        # where the talker's audio sent MATCH_MAX_S..0 s before lies in its timeline
        lo, hi = (int(v) for v in np.interp([t - MATCH_MAX_S, t], t_sent, pos))
        hi = min(hi, len(windows) - 1)
        if hi <= lo:
            continue
        c = windows[lo:hi + 1] @ x / np.sqrt(np.maximum(energy[lo:hi + 1] * ex, 1.0))
        k = int(np.argmax(c))
        if c[k] >= MATCH_MIN:
            delays.append((t - float(np.interp(lo + k, pos, t_sent))) * 1000)
    return float(np.median(delays)) if len(delays) >= 20 else float("nan")


# --------------------------------------------------------------------------- impairment

class Impairment:
    """A seeded fate for each packet: None (lost) or its delay in seconds. Every packet draws
    the same two numbers whatever the settings, so the same seed gives the same pattern."""

    def __init__(self, loss_pct: float, delay_ms: float, jitter_ms: float, seed: int):
        self.loss = loss_pct / 100
        self.delay = delay_ms / 1000
        self.jitter = jitter_ms / 1000
        self.rng = random.Random(seed)

    def fate(self) -> float | None:
        lost = self.rng.random() < self.loss
        d = self.delay + self.rng.uniform(-self.jitter, self.jitter)
        return None if lost else max(d, 0.0)


class ImpairedPath(threading.Thread):
    """A SIP forwarder and an RTP relay in front of the node, for one caller.

    The caller dials ``uri(room)`` (this forwarder's port); requests go to the node and its
    responses come back here (the node answers the packet's source), and the node's SDP
    answer is rewritten to name the relay's ports. The caller's RTP to the relay is impaired
    and sent on to the node's port; the node's RTP to the relay goes back to the caller."""

    def __init__(self, node: NodeProcess, imp: Impairment):
        super().__init__(daemon=True)
        self.node_sip = ("127.0.0.1", node.sip_port)
        self.imp = imp
        base = ports.block(4)
        self.sip = self._bind(base)
        self.rtp = self._bind(base + 2)
        self.rtcp = self._bind(base + 3)
        self.sip_port, self.rtp_port = base, base + 2
        self.caller_sip: tuple[str, int] | None = None
        self.caller_rtp: tuple[str, int] | None = None
        self.caller_rtcp: tuple[str, int] | None = None
        self.node_rtp: tuple[str, int] | None = None
        self.node_rtcp: tuple[str, int] | None = None
        self.seen = self.dropped = 0
        self._queue: list[tuple[float, int, bytes]] = []
        self._done = threading.Event()

    @staticmethod
    def _bind(port: int) -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", port))
        s.setblocking(False)
        return s

    def uri(self, room: str) -> str:
        return f"sip:{room}@127.0.0.1:{self.sip_port}"

    def stop(self) -> None:
        self._done.set()
        self.join(5)
        for s in (self.sip, self.rtp, self.rtcp):
            s.close()

    def _sip(self, data: bytes, src: tuple[str, int]) -> None:
        if src == self.node_sip:
            if self.caller_sip is not None:
                self.sip.sendto(self._rewrite_answer(data), self.caller_sip)
            return
        self.caller_sip = src
        head, sep, rest = data.partition(b"\r\n")
        head = head.replace(f"@127.0.0.1:{self.sip_port}".encode(),
                            f"@127.0.0.1:{self.node_sip[1]}".encode())
        self.sip.sendto(head + sep + rest, self.node_sip)

    def _rewrite_answer(self, data: bytes) -> bytes:
        head, sep, body = data.partition(b"\r\n\r\n")
        m = re.search(rb"^m=audio (\d+) ", body, re.M)
        if not sep or m is None:
            return data
        port = int(m.group(1))
        rtcp = re.search(rb"^a=rtcp:(\d+)", body, re.M)
        self.node_rtp = ("127.0.0.1", port)
        self.node_rtcp = ("127.0.0.1", int(rtcp.group(1)) if rtcp else port + 1)
        body = body.replace(b"m=audio %d " % port, b"m=audio %d " % self.rtp_port)
        body = re.sub(rb"^a=rtcp:\d+", b"a=rtcp:%d" % (self.rtp_port + 1), body, flags=re.M)
        head = re.sub(rb"(?im)^(Content-Length|l)\s*:\s*\d+", lambda h: h.group(1) + b": "
                      + str(len(body)).encode(), head)
        return head + sep + body

    def _media(self, sock: socket.socket, data: bytes, src: tuple[str, int]) -> None:
        if sock is self.rtcp:
            if src == self.node_rtcp:
                if self.caller_rtcp:
                    sock.sendto(data, self.caller_rtcp)
            elif self.node_rtcp:
                self.caller_rtcp = src
                sock.sendto(data, self.node_rtcp)
            return
        if src == self.node_rtp:
            if self.caller_rtp:
                sock.sendto(data, self.caller_rtp)
            return
        if self.node_rtp is None:
            return
        self.caller_rtp = src
        self.seen += 1
        if self.seen <= WARMUP_PACKETS:
            sock.sendto(data, self.node_rtp)
            return
        delay = self.imp.fate()
        if delay is None:
            self.dropped += 1
            return
        heapq.heappush(self._queue, (time.monotonic() + delay, self.seen, data))

    def run(self) -> None:
        sel = selectors.DefaultSelector()
        for s in (self.sip, self.rtp, self.rtcp):
            sel.register(s, selectors.EVENT_READ)
        while not self._done.is_set():
            now = time.monotonic()
            while self._queue and self._queue[0][0] <= now:
                _, _, data = heapq.heappop(self._queue)
                self.rtp.sendto(data, self.node_rtp)
            wait = min(self._queue[0][0] - now, 0.05) if self._queue else 0.05
            for key, _ in sel.select(max(wait, 0.0)):
                sock = key.fileobj
                try:
                    data, src = sock.recvfrom(65535)
                except BlockingIOError:
                    continue
                if sock is self.sip:
                    self._sip(data, src)
                else:
                    self._media(sock, data, src)
        sel.close()


# ----------------------------------------------------------------------------- the calls

@dataclass
class Result:
    pesq: float
    delay_ms: float
    lost_pct: float = float("nan")
    onset_ms: float = float("nan")
    media: dict | None = None  # the talker's member media (the node's API), near the end
    wire: float = float("nan")  # PESQ of the node's RTP decoded by an ideal receiver


TOKEN = "quality"  # the nodes' API token (the talker's jitter buffer figures, --media)


def call(work: Path, node: NodeProcess, room: str, speech: np.ndarray, codec: Codec, kind: str,
         imp: Impairment | None, seed: int) -> Result:
    """One talker and one listener in a room, or two listeners (``kind`` "noise": each with
    its own noise as microphone; "quiet": silent microphones); the first listener's PESQ and
    the wire delay talker -> node -> that listener."""
    work.mkdir(parents=True)
    mic = work / "talker.wav"
    rate = codec.rate
    write_wav(mic, np.concatenate([np.zeros(int(LEAD_S * rate), np.int16), speech,
                                   np.zeros(int(TAIL_S * rate), np.int16)]), rate)
    if codec.mic_rate != rate:
        mic = resampled(mic, work / "talker-mic.wav", codec.mic_rate)
    mic_s = LEAD_S + len(speech) / rate + TAIL_S
    listeners = []
    for i in range(2 if kind else 1):
        lmic = None
        if kind == "noise":
            rng = np.random.default_rng(seed * 10 + i)
            sd = 32768 * 10 ** (NOISE_DBFS / 20)
            lmic = work / f"noise{i}.wav"
            write_wav(lmic, np.clip(rng.normal(0, sd, int(90 * codec.mic_rate)), -32768, 32767)
                      .astype(np.int16), codec.mic_rate)
        listeners.append(BaresipUA(work, f"listener{i}", codecs=codec.name, tone_hz=0.0,
                                   mic_wav=lmic, extra_conf=codec.extra_conf))
    talker = BaresipUA(work, "talker", codecs=codec.name, mic_wav=mic,
                       extra_conf=codec.extra_conf)
    path = ImpairedPath(node, imp) if imp else None
    uas = [*listeners, talker]
    bpf = (f"udp and (portrange {talker.rtp[0]}-{talker.rtp[1]} or "
           f"portrange {listeners[0].rtp[0]}-{listeners[0].rtp[1]})")
    try:
        with Capture(work / "rtp.pcap", bpf):
            for ua in listeners:
                ua.dial(node.uri(room), 60)
                if not ua.wait_for("Call established", 10):
                    raise RuntimeError(f"{ua.name} not in the call:\n{ua.output()[-2000:]}")
            if path:
                path.start()
            talker.dial(path.uri(room) if path else node.uri(room), int(mic_s) + 20)
            if not talker.wait_for("Call established", 10):
                raise RuntimeError(f"talker not in the call:\n{talker.output()[-2000:]}")
            # aufile ends the talker's call when the file ends; its figures a second before
            media = None
            if not talker.wait_for("terminated", mic_s - 1) and not node.args[1].endswith(
                    "pyport_node.py"):
                members = sorted(node.members(TOKEN, room), key=lambda m: m["joined_at"])
                media = members[-1]["media"] if members else None  # it dialled last
            talker.wait_for("terminated", 6)
            time.sleep(0.5)
            for ua in uas:
                ua.stop()
    finally:
        for ua in uas:
            ua.stop()
        if path:
            path.stop()
    pesq_score, _ = heard_score(listeners[0].heard(), speech, rate)
    w = wire(work / "rtp.pcap", talker, listeners[0], node, codec)
    (work / "rtp.pcap").unlink(missing_ok=True)
    lost = path.dropped / max(path.seen - WARMUP_PACKETS, 1) * 100 if path else float("nan")
    on_wire = aligned_score(w.out, speech, rate)[0] if w.out is not None else float("nan")
    return Result(pesq_score, w.delay_ms, lost, w.onset_ms, media, on_wire)


def start_node(work: Path, extra: list[str], bridge: bool = False) -> NodeProcess:
    """The node, or (``bridge``) the baseline: pjsua2's own conference bridge on the same
    pjproject build (benchmarks/pyport_node.py --bridge), its jitter buffer at pjsua's defaults."""
    node = NodeProcess(work, rtp_ports=400, extra=["--log-level", "warning", *extra]
                       + ([] if bridge else ["--api-token", TOKEN]))
    if bridge:
        node.args[1:4] = [str(Path(__file__).with_name("pyport_node.py")), "--bridge"]
    return node.start()


def rep_plan(c: Codec, only: set[str], loss_rows: list[str], seed: int, node: NodeProcess,
             node_ns: NodeProcess | None, bridge: NodeProcess | None,
             ) -> list[tuple[str, NodeProcess, Codec, str, Impairment | None]]:
    """One repetition's calls for one codec: (label, node, codec, room kind, impairment)."""
    plan: list[tuple[str, NodeProcess, Codec, str, Impairment | None]] = []
    if "clean" in only:
        plan.append((f"{c.label}clean, 2 members", node, c, "", None))
        if bridge:
            plan.append((f"{BRIDGE}{c.label}clean, 2 members", bridge, c, "", None))
    if "noise" in only and node_ns:
        plan.append((f"{c.label}no noise, 3 members (reference)", node, c, "quiet", None))
        plan.append((f"{c.label}noise -45 dBFS, 3 members, default", node, c, "noise", None))
        plan.append((f"{c.label}noise -45 dBFS, 3 members, --noise-suppression", node_ns, c,
                     "noise", None))
    if "loss" in only:
        for label, loss, delay, jitter in LOSS_ROWS:
            if loss_rows and not any(t in label for t in loss_rows):
                continue
            plan.append((c.label + label, node, c, "", Impairment(loss, delay, jitter, seed)))
            if bridge:
                plan.append((BRIDGE + c.label + label, bridge, c, "",
                             Impairment(loss, delay, jitter, seed)))
    return plan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="clean,noise,loss",
                    help="comma-separated: clean, noise, loss (default all)")
    ap.add_argument("--node-arg", action="append", default=[], metavar="OPTION",
                    help="an option for every node of the run, e.g. --node-arg=--jb-size-ms=500")
    ap.add_argument("--loss-row", action="append", default=[], metavar="TEXT",
                    help="only the loss rows whose label has TEXT, e.g. --loss-row=40+-40")
    ap.add_argument("--no-bridge", dest="bridge", action="store_false",
                    help="skip the baseline rows (pjsua2's conference bridge)")
    ap.add_argument("--media", action="store_true",
                    help="print the talker's jitter buffer figures for each call on the node")
    ap.add_argument("--codec", default="pcmu",
                    help=f"comma-separated: {', '.join(CODECS)} (default pcmu)")
    args = ap.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if not only <= {"clean", "noise", "loss"}:
        ap.error(f"--only: unknown {sorted(only - {'clean', 'noise', 'loss'})}")
    names = [c.strip() for c in args.codec.split(",") if c.strip()]
    if not names or not set(names) <= set(CODECS):
        ap.error(f"--codec: one or more of {', '.join(CODECS)}")
    codecs = [CODECS[n] for n in names]
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sipconf-quality-") as d:
        work = Path(d)
        speeches = {c.rate: make_speech(work, c.rate) for c in codecs}
        rows: dict[str, list[Result]] = {}
        for c in codecs:
            rows[f"{c.label}codec alone"] = [Result(codec_alone(speeches[c.rate], c),
                                                    float("nan"))]
        node = start_node(work, args.node_arg)
        node_ns = (start_node(work, [*args.node_arg, "--noise-suppression"]) if "noise" in only
                   else None)
        bridge = start_node(work, [], bridge=True) if args.bridge else None
        try:
            for rep in range(args.reps):
                seed = 1000 + rep
                plan: list[tuple[str, NodeProcess, Codec, str, Impairment | None]] = []
                for c in codecs:
                    plan += rep_plan(c, only, args.loss_row, seed, node, node_ns, bridge)
                for i, (label, n, c, room, imp) in enumerate(plan):
                    r = call(work / f"r{rep}-{i}", n, f"q{rep}x{i}", speeches[c.rate], c, room,
                             imp, seed)
                    rows.setdefault(label, []).append(r)
                    extra = f", lost {r.lost_pct:.1f} %" if imp else ""
                    print(f"rep {rep + 1}/{args.reps}: {label}: PESQ {r.pesq:.2f} "
                          f"(wire {r.wire:.2f}), "
                          f"delay {r.delay_ms:.0f} ms, onset {r.onset_ms:.0f} ms{extra}"
                          + (f"; talker's media {r.media}" if args.media and r.media else ""),
                          file=sys.stderr, flush=True)
                    if imp:
                        pct = imp.loss * 100
                        key = (f"  {c.label}codec alone + {pct:g} % loss"
                               + (", silence for a lost frame" if c.name != "opus" else ""))
                        got = rows.setdefault(key, [])
                        if len(got) <= rep:
                            got.append(Result(codec_with_loss(speeches[c.rate], c, pct, seed),
                                              float("nan")))
        finally:
            for n in (node, node_ns, bridge):
                if n is not None and n.alive():
                    n.terminate()
        bands = sorted({"narrowband (8 kHz)" if c.rate == 8000 else "wideband (16 kHz)"
                        for c in codecs})
        print(f"\nPESQ (P.862 {' and '.join(bands)}, MOS-LQO), median of {args.reps} paired "
              f"repetition(s); speech {len(next(iter(speeches.values()))) / codecs[0].rate:.1f}"
              f" s; {', '.join(c.label.rstrip(': ') or 'PCMU' for c in codecs)}")
        print("(PESQ: as the listener client played it; wire: the node's RTP to it decoded by "
              "an ideal receiver)")
        print(f"{'scenario':<60} {'PESQ':>5} {'runs':<20} {'wire':>5} {'runs':<20} "
              f"{'delay ms':>8} {'lost %':>7} {'onset ms':>8}")
        for k in rows:
            rs = rows[k]
            med = statistics.median(r.pesq for r in rs)
            runs = " ".join(f"{r.pesq:.2f}" for r in rs) if len(rs) > 1 else ""
            wires = [r.wire for r in rs if not np.isnan(r.wire)]
            wmed = f"{statistics.median(wires):5.2f}" if wires else f"{'':>5}"
            wruns = " ".join(f"{w:.2f}" for w in wires) if len(wires) > 1 else ""
            delays = [r.delay_ms for r in rs if not np.isnan(r.delay_ms)]
            dl = f"{statistics.median(delays):8.0f}" if delays else f"{'':>8}"
            lost = [r.lost_pct for r in rs if not np.isnan(r.lost_pct)]
            lo = f"{statistics.median(lost):7.1f}" if lost else f"{'':>7}"
            onsets = [r.onset_ms for r in rs if not np.isnan(r.onset_ms)]
            on = f"{statistics.median(onsets):8.0f}" if onsets else ""
            print(f"{k:<60} {med:5.2f} {runs:<20} {wmed} {wruns:<20} {dl} {lo} {on}")
        if bridge:
            print("\nnode - bridge, per paired repetition (PESQ, wire PESQ; delay ms):")
            for k in rows:
                if k.startswith(BRIDGE) and k[len(BRIDGE):] in rows:
                    pairs = list(zip(rows[k[len(BRIDGE):]], rows[k], strict=True))
                    d = [f"{a.pesq - b.pesq:+.2f} {a.wire - b.wire:+.2f}; "
                         f"{a.delay_ms - b.delay_ms:+.0f}" for a, b in pairs]
                    worst = min(a.pesq - b.pesq for a, b in pairs)
                    print(f"  {k[len(BRIDGE):]:<36} {'  '.join(d)}   "
                          f"{'node >= bridge in every run' if worst >= 0 else 'BELOW the bridge'}")
        print(f"(run took {time.monotonic() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
