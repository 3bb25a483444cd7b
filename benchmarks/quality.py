"""What a listener hears through the node, scored with PESQ (ITU-T P.862, narrowband).

    .venv/bin/python benchmarks/quality.py [--reps 3] [--only clean,noise,loss]

Speech in: a few sentences of espeak-ng (8 kHz, about 9 s, scaled to -26 dBFS over the
utterance) with 2 s of silence before it, as the microphone (baresip ``aufile``) of a talker
calling the node with PCMU. Speech out: what a listener (baresip, ``sndfile``) decoded. The
listener's recording is aligned to the speech by cross-correlation and scored with
``pesq(8000, ref, deg, 'nb')`` (ref and deg with 0.5 s of silence either side). Delay: the
talker's RTP as it leaves the talker and the node's RTP to the listener, captured on ``lo``
(dumpcap), decoded and laid out by capture time, cross-correlated: mouth-to-wire delay of the
node plus the impairment's own delay (jitter buffer, mixer tick, encoder, relay).

Rows (each the median of --reps paired repetitions: one repetition runs every selected row,
with the same seeds):

- codec alone: the same speech through G.711 mu-law encode/decode in numpy (the ceiling);
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
  frames in numpy with silence in place of a lost frame (no concealment; what the loss alone
  costs without any jitter buffer or PLC);
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

from support import ports  # noqa: E402
from support.audio import read_wav, ulaw_decode, ulaw_encode, write_wav  # noqa: E402
from support.baresip import BaresipUA  # noqa: E402
from support.node import NodeProcess  # noqa: E402
from support.pcap import Capture, read_udp  # noqa: E402

RATE = 8000
FRAME = 160  # 20 ms of PCMU
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

LOSS_ROWS = [  # (label, loss %, delay ms, jitter ms)
    ("3 % loss", 3.0, 0.0, 0.0),
    ("10 % loss", 10.0, 0.0, 0.0),
    ("5 % loss + 20+-10 ms", 5.0, 20.0, 10.0),
    ("5 % loss + 40+-40 ms", 5.0, 40.0, 40.0),
]


# ---------------------------------------------------------------------------------- audio

def make_speech(work: Path) -> np.ndarray:
    """espeak-ng speech at 8 kHz, int16, scaled to SPEECH_DBFS (RMS over the utterance)."""
    raw, wav = work / "speech-22k.wav", work / "speech-8k.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), TEXT], check=True, timeout=60)
    subprocess.run(["sox", str(raw), "-r", str(RATE), "-c", "1", "-b", "16", str(wav)],
                   check=True, timeout=60)
    pcm, _ = read_wav(wav)
    loud = np.nonzero(np.abs(pcm) > 100)[0]
    pcm = pcm[loud[0]:loud[-1] + 1]
    rms = np.sqrt(np.mean(pcm ** 2))
    pcm = pcm * (32768 * 10 ** (SPEECH_DBFS / 20) / rms)
    return np.clip(pcm, -32768, 32767).astype(np.int16)


def padded(speech: np.ndarray) -> np.ndarray:
    pad = np.zeros(int(PAD_S * RATE), np.int16)
    return np.concatenate([pad, speech, pad])


def score(ref: np.ndarray, deg: np.ndarray) -> float:
    return float(pesq(RATE, ref.astype(np.float64), deg.astype(np.float64), "nb"))


def xcorr_lag(signal: np.ndarray, ref: np.ndarray, lo: int = 0, hi: int | None = None) -> int:
    """The shift of ``ref`` in ``signal`` (samples, within [lo, hi)) that correlates best."""
    n = 1 << int(np.ceil(np.log2(len(signal) + len(ref))))
    c = np.fft.irfft(np.fft.rfft(signal, n) * np.conj(np.fft.rfft(ref, n)), n)
    hi = len(signal) if hi is None else min(hi, len(signal))
    return lo + int(np.argmax(c[lo:hi]))


def heard_score(heard: Path, speech: np.ndarray) -> tuple[float, float]:
    """(PESQ, the speech's offset in the recording in s): the listener's recording aligned
    to the speech by cross-correlation."""
    pcm, rate = read_wav(heard)
    assert rate == RATE, f"{heard}: {rate} Hz"
    lag = xcorr_lag(pcm, speech.astype(np.float64))
    ref = padded(speech)
    start = lag - int(PAD_S * RATE)
    deg = np.zeros(len(ref))
    a, b = max(start, 0), min(start + len(ref), len(pcm))
    if b > a:
        deg[a - start:b - start] = pcm[a:b]
    return score(ref, deg), lag / RATE


def codec_alone(speech: np.ndarray) -> float:
    ref = padded(speech)
    return score(ref, ulaw_decode(ulaw_encode(ref)))


def codec_with_loss(speech: np.ndarray, loss: float, seed: int) -> float:
    """G.711 with the relay's loss pattern on 20 ms frames, silence for a lost frame."""
    ref = padded(speech)
    dec = ulaw_decode(ulaw_encode(ref)).astype(np.float64)
    imp = Impairment(loss, 0.0, 0.0, seed)
    for i in range(0, len(dec), FRAME):
        if imp.fate() is None:
            dec[i:i + FRAME] = 0
    return score(ref, dec)


ONSET_DBFS = -35.0  # a frame louder than this starts the speech (over -45 dBFS noise)


def wire_delay_ms(cap: Path, talker: BaresipUA, listener: BaresipUA, node: NodeProcess,
                  ) -> tuple[float, float]:
    """Talker's RTP as sent vs the node's RTP to the listener, both laid out by capture time
    and decoded: the lag (0..1 s) of the best cross-correlation, in ms; and the onset delay,
    from the talker's first packet over ONSET_DBFS to the listener's first (a gate that clips
    a first syllable shows here)."""
    sent: list[tuple[float, bytes]] = []
    out: list[tuple[float, bytes]] = []

    for p in read_udp(cap):
        pl = p.payload
        if len(pl) < 12 + FRAME or pl[0] >> 6 != 2 or pl[1] & 0x7F != 0:
            continue  # PCMU only, not RTCP / events
        if talker.rtp[0] <= p.src[1] <= talker.rtp[1]:
            sent.append((p.t, pl[12:12 + FRAME]))
        elif (listener.rtp[0] <= p.dst[1] <= listener.rtp[1]
              and node.rtp[0] <= p.src[1] <= node.rtp[1]):
            out.append((p.t, pl[12:12 + FRAME]))
    if len(sent) < 100 or len(out) < 100:
        return float("nan"), float("nan")
    t0 = min(sent[0][0], out[0][0])
    end = max(sent[-1][0], out[-1][0]) - t0

    def lay(stream: list[tuple[float, bytes]]) -> np.ndarray:
        sig = np.zeros(int((end + 1) * RATE))
        for t, body in stream:
            i = int(round((t - t0) * RATE))
            sig[i:i + FRAME] = ulaw_decode(body)
        return sig

    def onset(stream: list[tuple[float, bytes]]) -> float:
        floor = (32768 * 10 ** (ONSET_DBFS / 20)) ** 2
        return next((t for t, body in stream if np.mean(ulaw_decode(body) ** 2) > floor),
                    float("nan"))

    return (xcorr_lag(lay(out), lay(sent), 0, RATE) / RATE * 1000,
            (onset(out) - onset(sent)) * 1000)


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


def call(work: Path, node: NodeProcess, room: str, speech: np.ndarray, kind: str,
         imp: Impairment | None, seed: int) -> Result:
    """One talker and one listener in a room, or two listeners (``kind`` "noise": each with
    its own noise as microphone; "quiet": silent microphones); the first listener's PESQ and
    the wire delay talker -> node -> that listener."""
    work.mkdir(parents=True)
    mic = work / "talker.wav"
    write_wav(mic, np.concatenate([np.zeros(int(LEAD_S * RATE), np.int16), speech,
                                   np.zeros(int(TAIL_S * RATE), np.int16)]), RATE)
    mic_s = LEAD_S + len(speech) / RATE + TAIL_S
    listeners = []
    for i in range(2 if kind else 1):
        lmic = None
        if kind == "noise":
            rng = np.random.default_rng(seed * 10 + i)
            sd = 32768 * 10 ** (NOISE_DBFS / 20)
            lmic = work / f"noise{i}.wav"
            write_wav(lmic, np.clip(rng.normal(0, sd, int(90 * RATE)), -32768, 32767)
                      .astype(np.int16), RATE)
        listeners.append(BaresipUA(work, f"listener{i}", codecs="PCMU", tone_hz=0.0,
                                   mic_wav=lmic))
    talker = BaresipUA(work, "talker", codecs="PCMU", mic_wav=mic)
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
            # aufile ends the talker's call when the file ends
            talker.wait_for("terminated", mic_s + 5)
            time.sleep(0.5)
            for ua in uas:
                ua.stop()
    finally:
        for ua in uas:
            ua.stop()
        if path:
            path.stop()
    pesq_score, _ = heard_score(listeners[0].heard(), speech)
    delay, onset = wire_delay_ms(work / "rtp.pcap", talker, listeners[0], node)
    (work / "rtp.pcap").unlink(missing_ok=True)
    lost = path.dropped / max(path.seen - WARMUP_PACKETS, 1) * 100 if path else float("nan")
    return Result(pesq_score, delay, lost, onset)


def start_node(work: Path, extra: list[str], bridge: bool = False) -> NodeProcess:
    """The node, or (``bridge``) the baseline: pjsua2's own conference bridge on the same
    pjproject build (benchmarks/pyport_node.py --bridge), its jitter buffer at pjsua's defaults."""
    node = NodeProcess(work, rtp_ports=400, extra=["--log-level", "warning", *extra])
    if bridge:
        node.args[1:4] = [str(Path(__file__).with_name("pyport_node.py")), "--bridge"]
    return node.start()


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
    args = ap.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if not only <= {"clean", "noise", "loss"}:
        ap.error(f"--only: unknown {sorted(only - {'clean', 'noise', 'loss'})}")
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sipconf-quality-") as d:
        work = Path(d)
        speech = make_speech(work)
        rows: dict[str, list[Result]] = {}
        rows["codec alone (G.711 in numpy)"] = [Result(codec_alone(speech), float("nan"))]
        node = start_node(work, args.node_arg)
        node_ns = (start_node(work, [*args.node_arg, "--noise-suppression"]) if "noise" in only
                   else None)
        bridge = start_node(work, [], bridge=True) if args.bridge else None
        try:
            for rep in range(args.reps):
                seed = 1000 + rep
                plan: list[tuple[str, NodeProcess, str, Impairment | None]] = []
                if "clean" in only:
                    plan.append(("clean, 2 members", node, "", None))
                    if bridge:
                        plan.append((f"{BRIDGE}clean", bridge, "", None))
                if "noise" in only:
                    plan.append(("no noise, 3 members (reference)", node, "quiet", None))
                    plan.append(("noise -45 dBFS, 3 members, default", node, "noise", None))
                    plan.append(("noise -45 dBFS, 3 members, --noise-suppression", node_ns,
                                 "noise", None))
                if "loss" in only:
                    for label, loss, delay, jitter in LOSS_ROWS:
                        if args.loss_row and not any(t in label for t in args.loss_row):
                            continue
                        plan.append((label, node, "", Impairment(loss, delay, jitter, seed)))
                        if bridge:
                            plan.append((BRIDGE + label, bridge, "",
                                         Impairment(loss, delay, jitter, seed)))
                for i, (label, n, room, imp) in enumerate(plan):
                    r = call(work / f"r{rep}-{i}", n, f"q{rep}x{i}", speech, room, imp, seed)
                    rows.setdefault(label, []).append(r)
                    extra = f", lost {r.lost_pct:.1f} %" if imp else ""
                    print(f"rep {rep + 1}/{args.reps}: {label}: PESQ {r.pesq:.2f}, "
                          f"delay {r.delay_ms:.0f} ms, onset {r.onset_ms:.0f} ms{extra}",
                          file=sys.stderr, flush=True)
                    if imp:
                        pct = imp.loss * 100
                        key = f"  codec alone + {pct:g} % loss, silence for a lost frame"
                        rows.setdefault(key, [])
                        if len(rows[key]) <= rep:
                            rows[key].append(Result(codec_with_loss(speech, pct, seed),
                                                    float("nan")))
        finally:
            for n in (node, node_ns, bridge):
                if n is not None and n.alive():
                    n.terminate()
        print(f"\nPESQ (P.862 narrowband, MOS-LQO), median of {args.reps} paired "
              f"repetition(s); speech {len(speech) / RATE:.1f} s, PCMU")
        print(f"{'scenario':<54} {'PESQ':>5} {'runs':<20} {'delay ms':>8} {'lost %':>7} "
              f"{'onset ms':>8}")
        for k in rows:
            rs = rows[k]
            med = statistics.median(r.pesq for r in rs)
            runs = " ".join(f"{r.pesq:.2f}" for r in rs) if len(rs) > 1 else ""
            delays = [r.delay_ms for r in rs if not np.isnan(r.delay_ms)]
            dl = f"{statistics.median(delays):8.0f}" if delays else f"{'':>8}"
            lost = [r.lost_pct for r in rs if not np.isnan(r.lost_pct)]
            lo = f"{statistics.median(lost):7.1f}" if lost else f"{'':>7}"
            onsets = [r.onset_ms for r in rs if not np.isnan(r.onset_ms)]
            on = f"{statistics.median(onsets):8.0f}" if onsets else ""
            print(f"{k:<54} {med:5.2f} {runs:<20} {dl} {lo} {on}")
        if bridge:
            print("\nnode - bridge, per paired repetition (PESQ; delay ms):")
            for k in rows:
                if k.startswith(BRIDGE) and k[len(BRIDGE):] in rows:
                    mine, base = rows[k[len(BRIDGE):]], rows[k]
                    d = [f"{a.pesq - b.pesq:+.2f}; {a.delay_ms - b.delay_ms:+.0f}"
                         for a, b in zip(mine, base, strict=True)]
                    worst = min(a.pesq - b.pesq for a, b in zip(mine, base, strict=True))
                    print(f"  {k[len(BRIDGE):]:<30} {'  '.join(d)}   "
                          f"{'node >= bridge in every run' if worst >= 0 else 'BELOW the bridge'}")
        print(f"(run took {time.monotonic() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
