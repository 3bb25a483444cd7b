"""Soak: 100 legs (five rooms of 20, SIPp streaming speech) for 30 minutes.

    .venv/bin/python benchmarks/soak.py [--legs 100] [--minutes 30]

Every 30 s: the node's RSS and CPU, and the calls it has (/metrics). RTP windows (legs back,
p99 gap) at the start and at the end. Passes when every call lasts the whole soak (SIPp counts
a call the node hung up as failed) and RSS grew < 5 % from the 2-minute mark to the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from load import cpu_seconds, rss_mb, rtp_window, run_sipp_async, speech_ulaw, start_load_node


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--legs", type=int, default=100)
    ap.add_argument("--minutes", type=float, default=30.0)
    args = ap.parse_args()
    hold_s = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="sipconf-soak-") as d:
        work = Path(d)
        speech = speech_ulaw(work)
        node = start_load_node(work, args.legs)
        results: dict = {}
        try:
            rows = [[f"soak{i // 20}"] for i in range(args.legs)]
            t = run_sipp_async(work, node, rows, speech, int(hold_s * 1000), 50, results, "s")
            t_start = time.monotonic()
            time.sleep(args.legs / 50 + 3)
            first = rtp_window(work, node, 10.0, "soak-first")
            print(f"start: {first}", flush=True)
            samples = []
            c_prev, t_prev = cpu_seconds(node.proc.pid), time.monotonic()
            while time.monotonic() - t_start < hold_s - 45:
                time.sleep(30)
                c, now = cpu_seconds(node.proc.pid), time.monotonic()
                active = node.metrics()["sipconf_calls_active"]
                samples.append((now - t_start, rss_mb(node.proc.pid),
                                (c - c_prev) / (now - t_prev) * 100, active))
                c_prev, t_prev = c, now
                m, rss, cpu, act = samples[-1]
                print(f"{m / 60:5.1f} min  rss {rss:6.1f} MB  cpu {cpu:5.1f} %  calls {act:.0f}",
                      flush=True)
            last = rtp_window(work, node, 10.0, "soak-last")
            print(f"end: {last}", flush=True)
            t.join(hold_s + 180)
            res = results.get("s")
        finally:
            node.terminate()
    base = next(rss for m, rss, _, _ in samples if m >= 120)
    growth = (samples[-1][1] - base) / base * 100
    dropped = args.legs - (res.successful if res else 0)
    print(f"\nsoak {args.legs} legs {args.minutes:g} min: calls ok {res.successful if res else 0}"
          f" failed {res.failed if res else '?'}; RSS {base:.1f} MB at 2 min -> "
          f"{samples[-1][1]:.1f} MB at end ({growth:+.2f} %); CPU mean "
          f"{sum(s[2] for s in samples) / len(samples):.1f} % of a core; min calls seen "
          f"{min(s[3] for s in samples):.0f}; p99 gap {first['gap_p99_ms']:.1f} -> "
          f"{last['gap_p99_ms']:.1f} ms; legs back {first['legs_back']} -> {last['legs_back']}")
    return 0 if dropped == 0 and growth < 5.0 else 1


if __name__ == "__main__":
    sys.exit(main())
