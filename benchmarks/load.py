"""Node under SIPp load, and node-added latency, measured on the wire.

    .venv/bin/python benchmarks/load.py [--calls 20 100 200] [--hold 20] [--node-arg=--OPTION=V]
    .venv/bin/python benchmarks/load.py --codec pcmu opus g722 --calls 100 [--talkers 2]

Load: N SIPp calls in rooms of 20, each streaming speech (espeak-ng, PCMU). Over a 10 s window
with every call up: the node's CPU (% of one core, /proc), its RSS, how many legs get RTP back
(loopback capture) and the p99 gap between consecutive RTP packets on a leg.

Codecs (``--codec pcmu g722 opus``, any of them, one table): N legs in rooms of 20, each
offering only that codec; ``--talkers`` legs a room (default 2) send speech, the others quiet
noise (-64 dBFS). SIPp replays pre-encoded RTP (``play_pcap_audio``, pcaps written by
``rtpgen.py`` with libopus / spandsp's G.722 / mu-law), two SIPp processes (talkers,
listeners) whose CPU is measured over the same window as the node's and printed apart
("gen %core"). The capture of the node's RTP also checks that every leg gets the codec's
payload type back ("pt ok"). ``--share-baseline`` repeats each row with shared encoding off,
``--with-arg=OPTION`` with that node option on (e.g. ``--with-arg=--noise-suppression``: the
cost of suppression per leg, printed beside the row without it).

Latency: in each of ``--latency-calls`` rooms (default 24, run ``--latency-parallel`` at a
time) one caller streams silence and another, started a random 0-1 s later (so at a random
phase against the node's 20 ms tick), 1 kHz bursts (100 ms on, 400 ms off). Onsets of bursts in
the RTP going into the node are matched to the onsets in the RTP coming out of it to the other
caller (sample-accurate: packet capture time plus the offset of the first loud sample), giving
the node-added delay: jitter buffer, mixer tick, encoder. A call's figure is the median over its
bursts (its phase does not change during the call); printed: p50/p99/min/max over calls, and
each call's delay beside its phase (from a packet's arrival to the node's next packet out to
the listener, median over the call).

Targets (issue 3): latency <= 25 ms median; 100 legs < 30 % of one core; 200 legs with
p99 gap <= 25 ms.

SRTP (``--srtp``): SIPp cannot do SRTP, so the same N legs are placed twice by baresip (25
calls per process, PCMU, a tone as microphone): once as plain RTP/AVP, once as RTP/SAVP with
SDES keys (``mediaenc=srtp-mand``), against one node each, in the same run. The difference in
the node's CPU over a 10 s window, divided by N, is the cost of SRTP per leg.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import rtpgen  # noqa: E402
from support import ports, sipp  # noqa: E402
from support.audio import ulaw_decode, write_tone_wav  # noqa: E402
from support.node import NodeProcess  # noqa: E402
from support.pcap import Capture  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def speech_ulaw(work: Path) -> Path:
    wav, raw = work / "speech.wav", work / "speech.ulaw"
    text = ("This is a conference load test. Every caller speaks this sentence again and "
            "again, so that the mixer has real speech to add up for every leg of every room.")
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, timeout=60)
    subprocess.run(["sox", str(wav), "-r", "8000", "-c", "1", "-e", "u-law", "-t", "raw",
                    str(raw)], check=True, timeout=60)
    return raw


def ulaw_file(work: Path, name: str, pcm: np.ndarray) -> Path:
    """Write 8 kHz int16 samples as raw mu-law (via sox)."""
    s16 = work / f"{name}.s16"
    out = work / f"{name}.ulaw"
    s16.write_bytes(pcm.astype("<i2").tobytes())
    subprocess.run(["sox", "-t", "raw", "-r", "8000", "-c", "1", "-e", "signed", "-b", "16",
                    str(s16), "-e", "u-law", "-t", "raw", str(out)], check=True, timeout=60)
    return out


def run_sipp_async(work, node, rows, rtpfile, hold_ms, rate, results, key):
    def target():
        results[key] = sipp.run(work, f"127.0.0.1:{node.sip_port}", "uac_pcmu.xml", rows,
                                calls=len(rows), subs={"RTPFILE": rtpfile, "HOLD_MS": hold_ms},
                                concurrent=len(rows), rate=rate, timeout=hold_ms / 1000 + 60)

    t = threading.Thread(target=target)
    t.start()
    return t


def rtp_window(work: Path, node: NodeProcess, window: float, tag: str,
               gen_pids: tuple[int, ...] = (), want_pt: int | None = None,
               codec: str | None = None) -> dict:
    """Over ``window`` seconds: the node's CPU (% of one core) and RSS, the legs that got RTP
    back (>= 80 % of the packets due), and the gaps between consecutive packets on a leg; with
    ``gen_pids`` the load generator's CPU over the same window, with ``want_pt`` the legs whose
    RTP back is all of that payload type."""
    bpf = f"udp and src portrange {node.rtp[0]}-{node.rtp[1]}"
    with Capture(work / f"{tag}.pcap", bpf) as cap:
        c0, g0, t0 = (cpu_seconds(node.proc.pid), sum(cpu_seconds(p) for p in gen_pids),
                      time.monotonic())
        time.sleep(window)
        c1, g1, t1 = (cpu_seconds(node.proc.pid), sum(cpu_seconds(p) for p in gen_pids),
                      time.monotonic())
        rss = rss_mb(node.proc.pid)
    per_leg: dict[int, list[float]] = defaultdict(list)
    pts: dict[int, Counter] = defaultdict(Counter)
    bodies: dict[int, list[bytes]] = defaultdict(list)
    for p in cap.packets():
        if len(p.payload) >= 12 and not 200 <= p.payload[1] <= 204:  # RTP, not RTCP
            per_leg[p.src[1]].append(p.t)
            pts[p.src[1]][p.payload[1] & 0x7F] += 1
            if codec and len(bodies[p.src[1]]) < 50:
                cc = p.payload[0] & 0x0F  # no CSRCs or extensions expected; skip them anyway
                bodies[p.src[1]].append(p.payload[12 + 4 * cc:])
    (work / f"{tag}.pcap").unlink(missing_ok=True)
    gaps = [np.diff(sorted(ts)) for ts in per_leg.values() if len(ts) > 1]
    gaps = np.concatenate(gaps) if gaps else np.zeros(0)
    back = [port for port, ts in per_leg.items() if len(ts) > window * 50 * 0.8]
    every = [t for ts in per_leg.values() for t in ts]
    span = max(every) - min(every) + 0.02 if every else window  # the capture's own length
    seen = Counter()
    for c in pts.values():
        seen.update(c)
    return {
        "cpu_pct": (c1 - c0) / (t1 - t0) * 100,
        "gen_cpu_pct": (g1 - g0) / (t1 - t0) * 100,
        "rss_mb": rss,
        "legs_back": len(back),
        "back_pct": sum(len(ts) for ts in per_leg.values()) / max(1, len(per_leg))
        / (span * 50) * 100,
        "legs_pt_ok": len([p for p in back if set(pts[p]) == {want_pt}]),
        "pts_seen": dict(seen),
        "payload_check": rtpgen.check_payloads(codec, list(bodies.values())) if codec else "",
        "gap_p99_ms": float(np.percentile(gaps, 99) * 1000) if len(gaps) else float("nan"),
        "gap_max_ms": float(gaps.max() * 1000) if len(gaps) else float("nan"),
    }


NODE_ARGS: list[str] = []  # --node-arg: the same load against the node with other options


def start_load_node(work: Path, calls: int, media: str = "mixer_ext") -> NodeProcess:
    node = NodeProcess(work, rtp_ports=max(200, calls * 2 + 20),
                       extra=["--log-level", "warning", "--max-calls", str(max(calls, 20)),
                              # one SIPp address places every call
                              "--max-calls-per-source", str(max(calls, 20)), *NODE_ARGS])
    if media == "pyport":  # the baseline: same SIP stack, rooms mixed in Python media ports
        node.args[1:4] = [str(Path(__file__).with_name("pyport_node.py"))]
    return node.start()


def load(work: Path, calls: int, hold_s: float, speech: Path, media: str = "mixer_ext") -> dict:
    node = start_load_node(work, calls, media)
    rows = [[f"load{i // 20}"] for i in range(calls)]
    rate = 50
    results: dict = {}
    try:
        idle0 = cpu_seconds(node.proc.pid)
        time.sleep(3)
        idle_pct = (cpu_seconds(node.proc.pid) - idle0) / 3 * 100
        idle_rss = rss_mb(node.proc.pid)
        t = run_sipp_async(work, node, rows, speech, int(hold_s * 1000), rate, results, "r")
        time.sleep(calls / rate + 3)
        w = rtp_window(work, node, 10.0, f"load{calls}")
        t.join(hold_s + 120)
        res = results.get("r")
        return {
            "calls": calls,
            "ok": res.successful if res else 0,
            "failed": res.failed if res else calls,
            "idle_cpu_pct": idle_pct,
            "idle_rss_mb": idle_rss,
            **w,
        }
    finally:
        node.terminate()


PLAY_PCAP = Path(__file__).with_name("uac_play_pcap.xml")
QUIET_RMS = 20  # the listeners' noise: -64 dBFS, white


def speech_pcm(work: Path, rate: int, seconds: float) -> np.ndarray:
    """espeak-ng speech at ``rate`` (int16), repeated to ``seconds``."""
    wav, raw = work / "speech-src.wav", work / f"speech-{rate}.s16"
    if not wav.exists():
        text = ("This is a conference load test. Two callers in every room speak this "
                "sentence again and again, and the others listen, so that the mixer has "
                "real speech to add up and every leg has a mix to hear.")
        subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, timeout=60)
    subprocess.run(["sox", str(wav), "-r", str(rate), "-c", "1", "-e", "signed", "-b", "16",
                    "-t", "raw", str(raw)], check=True, timeout=60)
    pcm = np.frombuffer(raw.read_bytes(), dtype="<i2")
    return np.resize(pcm, int(seconds * rate))


def codec_pcaps(work: Path, codec: str, seconds: float,
                opus_peer: str = "asked") -> tuple[Path, Path]:
    """(talker, listener) pcaps of ``codec`` RTP, ``seconds`` long: speech, quiet noise.
    Opus as the node's answer asks (``opus_peer`` asked: wideband, the quiet with DTX) or
    fullband and continuous (plain)."""
    spec = rtpgen.CODECS[codec]
    talk = speech_pcm(work, spec.rate, seconds)
    quiet = np.random.default_rng(7).normal(0, QUIET_RMS, len(talk)).astype(np.int16)
    out = []
    asked = opus_peer == "asked"
    for tag, pcm in (("talk", talk), ("quiet", quiet)):
        out.append(rtpgen.write_rtp_pcap(work / f"{codec}-{tag}.pcap", codec,
                                         rtpgen.encode_frames(
                                             codec, pcm,
                                             opus_bandwidth="wb" if asked else "fb",
                                             opus_dtx=asked and tag == "quiet")))
    return out[0], out[1]


def codec_load(work: Path, calls: int, hold_s: float, codec: str, talkers: int,
               media: str = "mixer_ext", opus_peer: str = "asked") -> dict:
    """``calls`` legs offering only ``codec``, rooms of 20, ``talkers`` a room speaking."""
    rate = 50
    ramp = calls / rate + 3
    talk, quiet = codec_pcaps(work, codec, hold_s + ramp + 10, opus_peer)
    spec = rtpgen.CODECS[codec]
    rooms = [f"{codec}{i // 20}" for i in range(calls)]
    talk_rows = [[r] for i, r in enumerate(rooms) if i % 20 < talkers]
    quiet_rows = [[r] for i, r in enumerate(rooms) if i % 20 >= talkers]
    node = start_load_node(work, calls, media)
    gens: list[sipp.Uac] = []
    try:
        idle0 = cpu_seconds(node.proc.pid)
        time.sleep(3)
        idle_pct = (cpu_seconds(node.proc.pid) - idle0) / 3 * 100
        idle_rss = rss_mb(node.proc.pid)
        target = f"127.0.0.1:{node.sip_port}"
        for rows, pcap in ((talk_rows, talk), (quiet_rows, quiet)):
            if rows:
                subs = {"PT": spec.pt, "SDP_ATTRS": "\n      ".join(spec.sdp),
                        "PCAP": pcap, "HOLD_MS": int(hold_s * 1000)}
                gens.append(sipp.Uac(work, target, str(PLAY_PCAP), rows, subs, rate=rate,
                                     timeout=hold_s + ramp + 60))
        time.sleep(ramp)
        w = rtp_window(work, node, 10.0, f"{codec}{calls}",
                       tuple(g.proc.pid for g in gens), spec.pt, codec)
        m = node.metrics()
        sent = m.get("sipconf_rtp_frames_shared_total", 0.0)
        res = [g.wait() for g in gens]
        ok = sum(r.successful for r in res)
        if ok < calls:
            for r in res:
                print(r.output[-1500:], file=sys.stderr)
        return {"calls": calls, "codec": codec, "ok": ok, "shared_frames": sent,
                "failed": calls - ok, "idle_cpu_pct": idle_pct, "idle_rss_mb": idle_rss, **w}
    finally:
        for g in gens:
            if g.proc.poll() is None:
                g.proc.kill()
                g.proc.wait(10)
        if not node.alive():
            print(f"the node exited ({node.proc.returncode}); its log ends:\n"
                  + node.log()[-3000:], file=sys.stderr)
        node.terminate()


def onsets(stream: list[tuple[float, bytes]], threshold: int = 2000,
           quiet_s: float = 0.2) -> list[float]:
    out: list[float] = []
    last_loud = -1e9
    for t, payload in sorted(stream):
        pcm = ulaw_decode(payload)
        loud = np.nonzero(np.abs(pcm) > threshold)[0]
        if len(loud):
            at = t + loud[0] / 8000
            if at - last_loud > quiet_s:
                out.append(at)
            last_loud = t + loud[-1] / 8000
    return out


def burst_files(work: Path) -> tuple[Path, Path]:
    n = 8000 * 60
    tt = np.arange(n) / 8000
    on = (tt % 0.5) < 0.1
    burst = (on * 8000 * np.sin(2 * np.pi * 1000 * tt)).astype(np.int16)
    return (ulaw_file(work, "bursts", burst),
            ulaw_file(work, "silence", np.zeros(8000 * 10, dtype=np.int16)))


def latency_call(work: Path, node: NodeProcess, room: str, bursts: int, files: tuple[Path, Path],
                 start_delay: float) -> tuple[int, int]:
    """One room: a silent listener, then after ``start_delay`` s a caller streaming ``bursts``
    bursts. Returns the SIPp media ports (talker, listener) to find their RTP in a capture."""
    bursts_file, silence_file = files
    hold_ms = int(bursts * 500) + 300
    target = f"127.0.0.1:{node.sip_port}"
    listener = sipp.Uac(work, target, "uac_pcmu.xml", [[room]],
                        {"RTPFILE": silence_file, "HOLD_MS": hold_ms + 2500, "ROOM": room}, rate=10,
                        timeout=hold_ms / 1000 + 60)
    time.sleep(1.0 + start_delay)
    talker = sipp.Uac(work, target, "uac_pcmu.xml", [[room]],
                      {"RTPFILE": bursts_file, "HOLD_MS": hold_ms, "ROOM": room}, rate=10,
                      timeout=hold_ms / 1000 + 60)  # ROOM: a scenario file of its own
    talker.wait()
    listener.wait()
    return talker.media_port, listener.media_port


def latency(work: Path, media: str = "mixer_ext", calls: int = 24, parallel: int = 4,
            bursts: int = 10) -> dict:
    """Node-added latency over ``calls`` calls, each at a random phase (see the module doc)."""
    node = start_load_node(work, 2 * parallel + 4, media)
    files = burst_files(work)
    rng = random.Random()
    try:
        bpf = f"udp and (src portrange {node.rtp[0]}-{node.rtp[1]} or " \
              f"dst portrange {node.rtp[0]}-{node.rtp[1]})"
        with Capture(work / "latency.pcap", bpf) as cap:
            with ThreadPoolExecutor(parallel) as pool:
                futs = []
                for i in range(calls):
                    futs.append(pool.submit(latency_call, work, node, f"lat{i}", bursts, files,
                                            rng.uniform(0, 1.0)))
                    if i < parallel:
                        time.sleep(0.37)  # spread the first ones
                legs = [f.result(timeout=bursts * 0.5 + 200) for f in futs]
        lo, hi = node.rtp
        inbound: dict[int, list] = defaultdict(list)  # by the talker's SIPp media port
        outbound: dict[int, list] = defaultdict(list)  # by the listener's SIPp media port
        for p in cap.packets():
            if len(p.payload) < 12 + 160 or 200 <= p.payload[1] <= 204:
                continue
            body = p.payload[12:]
            if lo <= p.dst[1] <= hi:
                inbound[p.src[1]].append((p.t, body))
            elif lo <= p.src[1] <= hi:
                outbound[p.dst[1]].append((p.t, body))
        per_call, phases, pooled, missing = [], [], [], 0
        for talker_port, listener_port in legs:
            ins = onsets(inbound[talker_port])
            outs = onsets(outbound[listener_port])
            delays = []
            for t_in in ins:
                later = [t for t in outs if 0 <= t - t_in < 0.3]
                if later:
                    delays.append((later[0] - t_in) * 1000)
            if not delays:
                missing += 1
                continue
            out_t = np.array(sorted(t for t, _ in outbound[listener_port]))
            in_t = np.array(sorted(t for t, _ in inbound[talker_port]))
            nxt = np.searchsorted(out_t, in_t)
            ok = nxt < len(out_t)
            phases.append(float(np.median(out_t[nxt[ok]] - in_t[ok])) * 1000)
            per_call.append(float(np.median(delays)))
            pooled += delays
        d = np.array(per_call)
        pct = (lambda q: float(np.percentile(d, q))) if len(d) else (lambda q: float("nan"))
        return {"calls": calls, "measured": len(d), "missing": missing,
                "bursts": len(pooled), "p50_ms": pct(50), "p99_ms": pct(99),
                "min_ms": float(d.min()) if len(d) else float("nan"),
                "max_ms": float(d.max()) if len(d) else float("nan"),
                "bursts_p50_ms": float(np.median(pooled)) if pooled else float("nan"),
                "bursts_p99_ms": float(np.percentile(pooled, 99)) if pooled else float("nan"),
                "per_call": sorted(zip(phases, per_call, strict=True))}
    finally:
        node.terminate()


def baresip_caller(work: Path, name: str, node: NodeProcess, calls: int, first: int,
                   mediaenc: str | None) -> tuple[subprocess.Popen, Path]:
    """One baresip process placing ``calls`` calls (rooms of 20 by call number)."""
    d = work / name
    d.mkdir(exist_ok=True)
    base = ports.block(4 + 4 * calls)
    mic = write_tone_wav(d / "mic.wav", 440.0, 120, 8000)
    mods = ["g711.so", "aufile.so", "cons.so", *(["srtp.so"] if mediaenc else [])]
    conf = ["poll_method epoll", f"sip_listen 127.0.0.1:{base}", "net_interface 127.0.0.1",
            f"rtp_ports {base + 4}-{base + 3 + 4 * calls}", "rtp_timeout 0",
            "jitter_buffer_delay 1-10", f"audio_source aufile,{mic}", "audio_player",
            f"call_max_calls {calls + 2}", "module_path /usr/lib/baresip/modules",
            *[f"module {m}" for m in mods], "module_app account.so", "module_app menu.so",
            f"cons_listen 127.0.0.1:{base + 2}"]
    (d / "config").write_text("\n".join(conf) + "\n")
    enc = f";mediaenc={mediaenc}" if mediaenc else ""
    (d / "accounts").write_text(f"<sip:{name}@127.0.0.1:{base}>;regint=0;"
                                f"audio_codecs=PCMU{enc}\n")
    log = d / "baresip.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["baresip", "-4", "-f", str(d), "-t", "300"], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=d)
    time.sleep(1.0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(first, first + calls):
            s.sendto(f"/dial {node.uri(f'srtp{i // 20}')}\n".encode(), ("127.0.0.1", base + 2))
            time.sleep(0.05)
    return proc, log


def srtp_load(work: Path, calls: int, mediaenc: str | None) -> dict:
    """The node's CPU with ``calls`` baresip legs, plain or SRTP."""
    node = start_load_node(work, calls)
    callers: list[tuple[subprocess.Popen, Path]] = []
    try:
        idle0 = cpu_seconds(node.proc.pid)
        time.sleep(3)
        idle_pct = (cpu_seconds(node.proc.pid) - idle0) / 3 * 100
        for k in range(0, calls, 25):
            callers.append(baresip_caller(work, f"{mediaenc or 'plain'}{k}", node,
                                          min(25, calls - k), k, mediaenc))
        deadline = time.monotonic() + 30
        up = 0
        while time.monotonic() < deadline:
            up = sum(log.read_text(errors="replace").count("Call established")
                     for _, log in callers)
            if up >= calls:
                break
            time.sleep(0.5)
        time.sleep(2)
        c0, b0, t0 = (cpu_seconds(node.proc.pid),
                      sum(cpu_seconds(p.pid) for p, _ in callers), time.monotonic())
        time.sleep(10)
        c1, b1, t1 = (cpu_seconds(node.proc.pid),
                      sum(cpu_seconds(p.pid) for p, _ in callers), time.monotonic())
        srtp_calls = sum(log.read_text(errors="replace").count("SRTP") > 0 for _, log in callers)
        return {"up": up, "cpu_pct": (c1 - c0) / (t1 - t0) * 100, "idle_cpu_pct": idle_pct,
                "callers_cpu_pct": (b1 - b0) / (t1 - t0) * 100, "srtp_logs": srtp_calls}
    finally:
        for proc, _ in callers:
            proc.kill()
            proc.wait(10)
        node.terminate()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, nargs="*", default=[20, 100, 200, 300])
    ap.add_argument("--hold", type=float, default=20.0)
    ap.add_argument("--no-latency", action="store_true")
    ap.add_argument("--media", choices=("mixer_ext", "pyport"), default="mixer_ext",
                    help="pyport: the baseline, pjsua2's bridge with Python media ports")
    ap.add_argument("--node-arg", action="append", default=[], metavar="OPTION",
                    help="an option for the node, repeatable (e.g. --node-arg=--strict-rtp=off)")
    ap.add_argument("--srtp", type=int, nargs="?", const=100, metavar="LEGS",
                    help="only the SRTP cost: LEGS baresip legs (default 100), plain then SRTP")
    ap.add_argument("--codec", nargs="+", choices=sorted(rtpgen.CODECS), metavar="CODEC",
                    help="pcmu, g722 and/or opus: legs offering only that codec, --talkers a "
                         "room speaking, the others quiet; one table")
    ap.add_argument("--talkers", type=int, default=2, help="with --codec: talkers a room")
    ap.add_argument("--opus-peer", choices=("asked", "plain"), default="asked",
                    help="with --codec opus: callers that do what the node's answer asks "
                         "(default: maxplaybackrate=16000, usedtx=1: wideband, the quiet in "
                         "DTX as a pjsip peer at complexity 5 does), or plain ones (fullband, "
                         "continuous, whatever the answer says)")
    ap.add_argument("--share-baseline", action="store_true",
                    help="with --codec: each row also on a node with --shared-encoding off "
                         "(every leg encodes its own), in the same run")
    ap.add_argument("--with-arg", action="append", default=[], metavar="OPTION",
                    help="with --codec: each row also on a node with this option too, in the "
                         "same run (e.g. --with-arg=--noise-suppression: its cost per leg)")
    ap.add_argument("--latency-calls", type=int, default=24,
                    help="calls the latency is measured over, each at a random phase")
    ap.add_argument("--latency-parallel", type=int, default=4,
                    help="latency calls (rooms) up at once")
    ap.add_argument("--latency-baseline-arg", action="append", default=[], metavar="OPTION",
                    help="also measure the latency, in the same run, on a node with this "
                         "option too (e.g. --latency-baseline-arg=--jb-catchup-ms=0)")
    args = ap.parse_args()
    NODE_ARGS[:] = args.node_arg
    with tempfile.TemporaryDirectory(prefix="sipconf-load-") as d:
        work = Path(d)
        if args.srtp:
            n = args.srtp
            plain = srtp_load(work, n, None)
            srtp = srtp_load(work, n, "srtp-mand")
            for tag, r in (("RTP/AVP", plain), ("RTP/SAVP (SRTP, SDES)", srtp)):
                print(f"{tag:>22}: {r['up']}/{n} legs up, node {r['cpu_pct']:.1f} % of a core "
                      f"(idle {r['idle_cpu_pct']:.1f} %), {r['cpu_pct'] / n:.3f} %/leg; "
                      f"baresip callers {r['callers_cpu_pct']:.1f} %", flush=True)
            extra = (srtp["cpu_pct"] - plain["cpu_pct"]) / n
            print(f"SRTP costs {extra:.3f} % of a core per leg more than plain RTP "
                  f"(x{srtp['cpu_pct'] / plain['cpu_pct']:.2f}); baresip logs naming SRTP: "
                  f"{srtp['srtp_logs']}/{len(range(0, n, 25))}")
            return
        if not args.no_latency:
            variants = [("", [])]
            if args.latency_baseline_arg:
                variants.insert(0, (f"baseline ({' '.join(args.latency_baseline_arg)}): ",
                                    args.latency_baseline_arg))
            for label, extra in variants:
                NODE_ARGS[:] = [*args.node_arg, *extra]
                lat = latency(work, args.media, args.latency_calls, args.latency_parallel)
                print(f"{label}node-added latency (RTP in -> RTP out) over {lat['measured']}/"
                      f"{lat['calls']} calls at random phases ({lat['bursts']} bursts): p50 "
                      f"{lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms, min "
                      f"{lat['min_ms']:.1f} ms, max {lat['max_ms']:.1f} ms (over bursts: p50 "
                      f"{lat['bursts_p50_ms']:.1f}, p99 {lat['bursts_p99_ms']:.1f})", flush=True)
                print("  by phase (ms from arrival to the node's next packet out: delay ms): " +
                      ", ".join(f"{ph:.1f}: {dl:.1f}" for ph, dl in lat["per_call"]), flush=True)
            NODE_ARGS[:] = args.node_arg
        if args.codec:
            withs = ("no", "yes") if args.with_arg else ("no",)
            if args.with_arg:
                print(f"'with': the node also has {' '.join(args.with_arg)}")
            print(f"{'legs':>5} {'codec':>5} {'share':>5} {'with':>4} {'ok':>4} {'fail':>4} "
                  f"{'node %core':>10} "
                  f"{'%/leg':>6} {'idle %':>6} {'gen %core':>9} {'rss MB':>7} {'MB/leg':>6} "
                  f"{'legs back':>9} {'rtp back %':>10} {'pt ok':>5} {'gap p99 ms':>10} "
                  f"{'gap max ms':>10}",
                  flush=True)
            for n in args.calls:
                rows = []
                shares = ("off", "on") if args.share_baseline else ("on",)
                for codec, share, w in ((c, s, w) for c in args.codec for s in shares
                                        for w in withs):
                    NODE_ARGS[:] = [*args.node_arg, f"--shared-encoding={share}",
                                    *(args.with_arg if w == "yes" else [])]
                    r = codec_load(work, n, args.hold, codec, args.talkers, args.media,
                                   args.opus_peer)
                    r["codec"] = codec + (f"/{share}" if args.share_baseline else "") + (
                        "/with" if w == "yes" else "")
                    rows.append(r)
                    print(f"{n:>5} {codec:>5} {share:>5} {w:>4} {r['ok']:>4} {r['failed']:>4} "
                          f"{r['cpu_pct']:>10.1f} {(r['cpu_pct'] - r['idle_cpu_pct']) / n:>6.3f} "
                          f"{r['idle_cpu_pct']:>6.1f} {r['gen_cpu_pct']:>9.1f} "
                          f"{r['rss_mb']:>7.1f} {(r['rss_mb'] - r['idle_rss_mb']) / n:>6.3f} "
                          f"{r['legs_back']:>9} {r['back_pct']:>10.1f} {r['legs_pt_ok']:>5} "
                          f"{r['gap_p99_ms']:>10.1f} "
                          f"{r['gap_max_ms']:>10.1f}", flush=True)
                print(f"{n:>5} legs, {args.talkers} talkers a room: payload types back "
                      + "; ".join(f"{r['codec']} {r['pts_seen']}" for r in rows)
                      + "; node %/leg " + ", ".join(
                          f"{r['codec']} {(r['cpu_pct'] - r['idle_cpu_pct']) / n:.3f}"
                          for r in rows), flush=True)
                if args.with_arg:
                    per = {r["codec"]: (r["cpu_pct"] - r["idle_cpu_pct"]) / n for r in rows}
                    print(f"{n:>5} legs, {' '.join(args.with_arg)} costs per leg: " + ", ".join(
                        f"{k} {per[k + '/with'] - per[k]:+.3f} % of a core "
                        f"({per[k]:.3f} -> {per[k + '/with']:.3f})"
                        for k in per if not k.endswith("/with")), flush=True)
                for r in rows:
                    print(f"{n:>5} legs, {r['codec']}: RTP back {r['payload_check']}; "
                          f"{r['shared_frames']:.0f} frames sent as a shared encode",
                          flush=True)
            return
        speech = speech_ulaw(work)
        print(f"{'legs':>5} {'ok':>4} {'fail':>4} {'cpu %core':>9} {'%/leg':>6} {'idle %':>7} "
              f"{'rss MB':>7} {'MB/leg':>6} {'legs back':>9} {'gap p99 ms':>10} "
              f"{'gap max ms':>10}")
        for n in args.calls:
            r = load(work, n, args.hold, speech, args.media)
            print(f"{r['calls']:>5} {r['ok']:>4} {r['failed']:>4} {r['cpu_pct']:>9.1f} "
                  f"{(r['cpu_pct'] - r['idle_cpu_pct']) / n:>6.3f} {r['idle_cpu_pct']:>7.1f} "
                  f"{r['rss_mb']:>7.1f} {(r['rss_mb'] - r['idle_rss_mb']) / n:>6.3f} "
                  f"{r['legs_back']:>9} {r['gap_p99_ms']:>10.1f} {r['gap_max_ms']:>10.1f}",
                  flush=True)


if __name__ == "__main__":
    main()
