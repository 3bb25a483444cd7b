"""Audio streams and AI agents, measured.

    .venv/bin/python benchmarks/streams.py [--members 20 100] [--bursts 30] [--stall 150]

Latency: a SIPp caller streams 1 kHz bursts (100 ms every 0.5 s) into a room with an agent
member (a WebSocket server in this process, Plivo's protocol, L16 16 kHz). Caller -> agent: a
burst's onset on the wire into the node (packet capture, sample-accurate) to the arrival of
the media message holding it at the agent. Agent -> caller: the agent sends 100 ms bursts as
playAudio every 0.5 s; from the send to the onset on the wire out of the node to the caller.

CPU: N agent members in rooms of 20, each hearing its room (a media message every 20 ms) and
speaking (a long playAudio the mixer paces), against N plain SIPp legs in rooms of 20 streaming
speech, in the same run: the node's CPU (% of one core) over 10 s, per member.

Stall: two SIPp callers talk in a room with an agent whose server stops reading after the
handshake. The callers' RTP (p99 gap between packets, packets per leg) before and during the
stall, and how long until the node gives the stream up (a send blocked over 5 s) and the agent
leaves.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import socket
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import load  # noqa: E402
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


def agents_cpu(work: Path, members: int) -> dict:
    node = start_node(work, members)
    app = WsApp(keep_media=False).start()
    try:
        t16 = np.arange(16000 * 60) / 16000
        talk = (3000 * np.sin(2 * np.pi * 500 * t16)).astype(np.int16)
        for i in range(members):
            add_agent(node, f"agents{i // 20}", app.url(f"/a{i}"))
        for i in range(members):
            app.play(app.wait_conn(i), talk, 16000, chunk_s=5.0)
        time.sleep(2)
        c0, t0, m0 = load.cpu_seconds(node.proc.pid), time.monotonic(), app.media_count
        time.sleep(10)
        c1, t1, m1 = load.cpu_seconds(node.proc.pid), time.monotonic(), app.media_count
        return {"members": members, "cpu_pct": (c1 - c0) / (t1 - t0) * 100,
                "rss_mb": load.rss_mb(node.proc.pid),
                "media_per_member_s": (m1 - m0) / (t1 - t0) / members}
    finally:
        app.stop()
        node.terminate()


def _stalling_server(port: int, stop: threading.Event) -> None:
    """Accepts one WebSocket handshake, then never reads again (a stalled app)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    srv.bind(("127.0.0.1", port))
    srv.listen(1)
    srv.settimeout(30)
    conn, _ = srv.accept()
    req = conn.recv(4096).decode(errors="replace")
    key = next(ln.split(":", 1)[1].strip() for ln in req.split("\r\n")
               if ln.lower().startswith("sec-websocket-key"))
    accept = base64.b64encode(hashlib.sha1(
        (key + "258EAFA5-E914-47DA-95CA-C5AB0DC65B11").encode()).digest()).decode()
    conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode())
    stop.wait(600)
    conn.close()
    srv.close()


def stall(work: Path, limit_s: float) -> dict:
    node = start_node(work, 20)
    speech = load.speech_ulaw(work)
    results: dict = {}
    port = load.ports.block(1)
    stop = threading.Event()
    threading.Thread(target=_stalling_server, args=(port, stop), daemon=True).start()
    t = load.run_sipp_async(work, node, [["st"], ["st"]], speech, int((limit_s + 40) * 1000),
                            10, results, "s")
    try:
        time.sleep(3)
        before = load.rtp_window(work, node, 5.0, "before")
        t0 = time.monotonic()
        add_agent(node, "st", f"ws://127.0.0.1:{port}/stall")
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
        stop.set()
        node.terminate()
        t.join(60)  # SIPp ends once the node is gone


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--members", type=int, nargs="*", default=[20, 100])
    ap.add_argument("--bursts", type=int, default=30)
    ap.add_argument("--stall", type=float, default=150.0,
                    help="seconds to wait for the node to give a stalled stream up")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-streams-"))
    lat = latency(work, args.bursts)
    for k, v in lat.items():
        print(f"latency {k}: median {v['median_ms']:.1f} ms, p99 {v['p99_ms']:.1f} ms "
              f"({v['n']} bursts)")
    speech = load.speech_ulaw(work)
    for n in args.members:
        a = agents_cpu(work, n)
        p = load.load(work, n, 25.0, speech)
        print(f"{n} members: agents {a['cpu_pct']:.1f} % of a core "
              f"({a['cpu_pct'] / n:.2f} %/member, {a['media_per_member_s']:.1f} media msg/s "
              f"each, RSS {a['rss_mb']:.0f} MB) vs plain SIPp legs {p['cpu_pct']:.1f} % "
              f"({p['cpu_pct'] / n:.2f} %/leg, {p['ok']}/{n} calls ok); "
              f"ratio {a['cpu_pct'] / max(p['cpu_pct'], 1e-9):.1f}x")
    s = stall(work, args.stall)
    for k in ("before", "during", "after"):
        w = s[k]
        print(f"stall {k}: callers' legs back {w['legs_back']}, p99 gap {w['gap_p99_ms']:.1f} "
              f"ms, max gap {w['gap_max_ms']:.1f} ms, node CPU {w['cpu_pct']:.1f} %")
    print(f"stall: the agent left {s['agent_left_after_s']} s after its server stopped reading;"
          f" {s['log']}")


if __name__ == "__main__":
    main()
