"""Audio streams and AI agents, measured.

    .venv/bin/python benchmarks/streams.py [--members 20 100] [--bursts 30] [--stall 150]

Latency: a SIPp caller streams 1 kHz bursts (100 ms every 0.5 s) into a room with an agent
member (a WebSocket server in this process, Plivo's protocol, L16 16 kHz). Caller -> agent: a
burst's onset on the wire into the node (packet capture, sample-accurate) to the arrival of
the media message holding it at the agent. Agent -> caller: the agent sends 100 ms bursts as
playAudio every 0.5 s; from the send to the onset on the wire out of the node to the caller.

CPU: N SIPp calls in rooms of 20 streaming speech, each with a bidirectional <Stream> (the app
hears every call, a media message every 20 ms, and plays a long clip back that the mixer
paces), against the same N calls without streams, in the same run: the node's CPU (% of one
core) over 10 s, per call.

Stall: two SIPp callers talk in a room with an agent whose server never reads after the
handshake (its socket's buffers fill up). The callers' RTP (p99 gap between packets, packets
per leg) before and during the stall, and how long until the node gives the stream up (a send
blocked over 5 s) and the agent leaves.
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np
from websockets.exceptions import ConnectionClosed

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import load  # noqa: E402
from support.answer_server import AnswerServer  # noqa: E402
from support.node import NodeProcess  # noqa: E402
from support.pcap import Capture  # noqa: E402
from support.ws_app import WsApp  # noqa: E402

TOKEN = "bench"


def start_node(work: Path, members: int) -> NodeProcess:
    return NodeProcess(work, rtp_ports=max(200, members * 2 + 20),
                       extra=["--log-level", "warning", "--api-token", TOKEN,
                              "--max-calls", str(max(members, 20)),
                              "--max-agents", str(max(members, 20))]).start()


def add_agent(node: NodeProcess, room: str, url: str) -> dict:
    r = httpx.post(f"{node.http_url}/v1/rooms/{room}/agents", timeout=20,
                   headers={"Authorization": f"Bearer {TOKEN}"},
                   json={"url": url, "contentType": "audio/x-l16;rate=16000"})
    r.raise_for_status()
    return r.json()


def latency(work: Path, bursts: int) -> dict:
    node = start_node(work, 20)
    app = WsApp().start()
    n = 8000 * 60
    tt = np.arange(n) / 8000
    burst = (((tt % 0.5) < 0.1) * 8000 * np.sin(2 * np.pi * 1000 * tt)).astype(np.int16)
    bursts_file = load.ulaw_file(work, "bursts", burst)
    hold_ms = int(bursts * 0.5 * 1000) * 2 + 4000
    results: dict = {}
    try:
        bpf = f"udp and (src portrange {node.rtp[0]}-{node.rtp[1]} or " \
              f"dst portrange {node.rtp[0]}-{node.rtp[1]})"
        with Capture(work / "lat.pcap", bpf) as cap:
            t = load.run_sipp_async(work, node, [["lat"]], bursts_file, hold_ms, 10, results,
                                    "a")
            time.sleep(1.5)
            add_agent(node, "lat", app.url("/lat"))
            conn = app.wait_conn()
            time.sleep(bursts * 0.5 + 1)  # the caller's bursts reach the agent
            # then the agent speaks: bursts of its own while the caller's go on
            t16 = np.arange(1600) / 16000
            tone = (8000 * np.sin(2 * np.pi * 1700 * t16)).astype(np.int16)
            sent = []
            for _ in range(bursts):
                sent.append(time.time())
                app.play(conn, tone, 16000)
                time.sleep(0.5)
            time.sleep(1)
            t.join(hold_ms / 1000 + 90)
        lo, hi = node.rtp
        inbound, outbound = defaultdict(list), defaultdict(list)
        for p in cap.packets():
            if len(p.payload) < 12 + 160:
                continue
            (inbound if lo <= p.dst[1] <= hi else outbound)[
                p.dst[1] if lo <= p.dst[1] <= hi else p.src[1]].append((p.t, p.payload[12:]))
        ins = max((load.onsets(s) for s in inbound.values()), key=len)
        # at the agent: the first loud sample of each burst, by message arrival time
        heard = []
        last = -1e9
        for wall, (_, m) in zip(conn.walls, conn.received, strict=False):
            if m.get("event") != "media":
                continue
            pcm = np.frombuffer(base64.b64decode(m["media"]["payload"]), "<i2")
            if np.abs(pcm).max() > 2000:
                if wall - last > 0.2:
                    heard.append(wall)
                last = wall
        up = [(min((h for h in heard if 0 <= h - t_in < 0.4), default=None), t_in)
              for t_in in ins]
        up = np.array([(h - t_in) * 1000 for h, t_in in up if h is not None])
        # 1700 Hz bursts out of the node to the caller: onsets after each send
        outs = [load.onsets(s, threshold=2000) for s in outbound.values()]
        out_on = sorted(x for o in outs for x in o)
        down = np.array([(min((o for o in out_on if 0 <= o - s < 0.3), default=np.nan) - s)
                         * 1000 for s in sent])
        down = down[~np.isnan(down)]
        return {"caller_to_agent": _stats(up), "agent_to_caller": _stats(down)}
    finally:
        app.stop()
        node.terminate()


def _stats(d: np.ndarray) -> dict:
    return {"n": len(d), "median_ms": float(np.median(d)) if len(d) else float("nan"),
            "p99_ms": float(np.percentile(d, 99)) if len(d) else float("nan")}


def streams_cpu(work: Path, calls: int, speech: Path, chunk_ms: int = 20) -> dict:
    """N SIPp calls in rooms of 20, each with a bidirectional <Stream> to the app (which hears
    every call and plays a long clip back to each): the node's CPU over 10 s with every stream
    up."""
    app = WsApp(keep_media=False).start()
    server = AnswerServer().start()
    rooms = (calls + 19) // 20
    url = server.per_user("/answer", {
        f"load{k}": f'<Response><Stream bidirectional="true">{app.url(f"/s{k}")}</Stream>'
                    f"<Conference>load{k}</Conference></Response>" for k in range(rooms)})
    node = NodeProcess(work, url, rtp_ports=max(200, calls * 2 + 20),
                       extra=["--log-level", "warning", "--max-calls", str(max(calls, 20)),
                              "--stream-chunk-ms", str(chunk_ms)]).start()
    results: dict = {}
    try:
        t = load.run_sipp_async(work, node, [[f"load{i // 20}"] for i in range(calls)], speech,
                                60000, 50, results, "s")
        time.sleep(calls / 50 + 4)
        t8 = np.arange(8000 * 30) / 8000
        talk = (3000 * np.sin(2 * np.pi * 500 * t8)).astype(np.int16)  # 30 s, in 3 messages
        closed = 0
        for conn in list(app.conns):
            try:
                app.play(conn, talk, 8000, chunk_s=10.0)
            except ConnectionClosed:
                closed += 1
        time.sleep(1)
        m0 = app.media_count
        w = load.rtp_window(work, node, 10.0, f"streams{calls}")
        m1 = app.media_count
        t.join(120)
        return {"calls": calls, "streams": len(app.conns), "closed": closed, **w,
                "media_per_stream_s": (m1 - m0) / 10.0 / max(1, len(app.conns))}
    finally:
        node.terminate()
        app.stop()
        server.stop()


def stall(work: Path, limit_s: float) -> dict:
    node = NodeProcess(work, extra=["--log-level", "info", "--api-token", TOKEN,
                                    "--agent-reconnects", "0"]).start()
    speech = load.speech_ulaw(work)
    results: dict = {}
    app = WsApp(stall=True).start()  # accepts, then never reads: its socket fills up
    t = load.run_sipp_async(work, node, [["st"], ["st"]], speech, int((limit_s + 40) * 1000),
                            10, results, "s")
    try:
        time.sleep(3)
        before = load.rtp_window(work, node, 5.0, "before")
        t0 = time.monotonic()
        add_agent(node, "st", app.url("/stall"))
        during = load.rtp_window(work, node, 10.0, "during")
        left = None
        while time.monotonic() - t0 < limit_s:
            members = httpx.get(f"{node.http_url}/v1/rooms/st", timeout=5,
                                headers={"Authorization": f"Bearer {TOKEN}"}).json()["members"]
            if not any(m["agent"] for m in members):
                left = time.monotonic() - t0
                break
            time.sleep(1)
        after = load.rtp_window(work, node, 5.0, "after")
        return {"before": before, "during": during, "after": after,
                "agent_left_after_s": left, "log": [ln for ln in node.log().splitlines()
                                                    if "stall" in ln][-2:]}
    finally:
        app.stop()
        node.terminate()
        t.join(60)  # SIPp ends once the node is gone


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, nargs="*", default=[20, 100])
    ap.add_argument("--bursts", type=int, default=30)
    ap.add_argument("--chunk-ms", type=int, nargs="*", default=[20, 100],
                    help="--stream-chunk-ms values to measure the streams' CPU with")
    ap.add_argument("--stall", type=float, default=150.0,
                    help="seconds to wait for the node to give a stalled stream up (0: skip)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    lat = latency(work, args.bursts) if args.bursts else {}
    for k, v in lat.items():
        print(f"latency {k}: median {v['median_ms']:.1f} ms, p99 {v['p99_ms']:.1f} ms "
              f"({v['n']} bursts)")
    speech = load.speech_ulaw(work)
    for n in args.members:
        p = load.load(work, n, 25.0, speech)
        for chunk_ms in args.chunk_ms:
            a = streams_cpu(work, n, speech, chunk_ms)
            print(f"{n} calls, {chunk_ms} ms chunks: with a bidirectional <Stream> each "
                  f"{a['cpu_pct']:.1f} % of a core "
                  f"({a['cpu_pct'] / n:.2f} %/call, {a['streams']} streams, "
                  f"{a['media_per_stream_s']:.1f} media msg/s each, {a['closed']} closed "
                  f"early, RSS {a['rss_mb']:.0f} MB, RTP back on {a['legs_back']} legs, p99 "
                  f"gap {a['gap_p99_ms']:.1f} ms) vs plain {p['cpu_pct']:.1f} % "
                  f"({p['cpu_pct'] / n:.2f} %/call, {p['ok']}/{n} calls ok); a stream costs "
                  f"{(a['cpu_pct'] - p['cpu_pct']) / n:.2f} % of a core")
    if not args.stall:
        return
    s = stall(work, args.stall)
    for k in ("before", "during", "after"):
        w = s[k]
        print(f"stall {k}: callers' legs back {w['legs_back']}, p99 gap {w['gap_p99_ms']:.1f} "
              f"ms, max gap {w['gap_max_ms']:.1f} ms, node CPU {w['cpu_pct']:.1f} %")
    print(f"stall: the agent left {s['agent_left_after_s']} s after its server stopped reading;"
          f" {s['log']}")


if __name__ == "__main__":
    main()
