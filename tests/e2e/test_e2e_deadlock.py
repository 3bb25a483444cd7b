"""Regression: calls joining and leaving under debug logging while /metrics and /v1/rooms are
polled flat out must never freeze the node.

The bug: a mixer clock thread, holding a room's mutex, logged a pjlib line (a new stream's first
frame logs at pjlib level 4) and waited for the GIL in the Python log writer, while the SIP thread
held the GIL waiting for that mutex in MixRoom.stats (which every /metrics and /v1/rooms asks
for): SIP and HTTP froze and SIGTERM was ignored.
"""

from __future__ import annotations

import subprocess
import threading
import time

import httpx
import pytest
from support import sipp

pytestmark = pytest.mark.e2e

WAVES = 8
CALLS_PER_WAVE = 24
ROOMS = 4
HOLD_MS = 1000
BUDGET_S = 2.0  # SIP and HTTP must answer within this, throughout


class Poller(threading.Thread):
    """GET /metrics and /v1/rooms back to back until stopped (or a hard deadline)."""

    def __init__(self, base_url: str, deadline: float):
        super().__init__(daemon=True)
        self.base_url = base_url
        self.deadline = deadline
        self.stop = threading.Event()
        self.requests = 0
        self.worst = 0.0
        self.failures: list[str] = []

    def run(self) -> None:
        headers = {"Authorization": "Bearer t"}
        with httpx.Client(base_url=self.base_url, timeout=BUDGET_S) as client:
            while not self.stop.is_set() and time.monotonic() < self.deadline:
                for path in ("/metrics", "/v1/rooms"):
                    t0 = time.monotonic()
                    try:
                        r = client.get(path, headers=headers)
                        ok = r.status_code == 200
                        why = f"HTTP {r.status_code}"
                    except httpx.HTTPError as exc:
                        ok, why = False, f"{type(exc).__name__}: {exc}"
                    took = time.monotonic() - t0
                    self.requests += 1
                    self.worst = max(self.worst, took)
                    if not ok or took > BUDGET_S:
                        self.failures.append(f"{path} after {took:.2f} s: {why}")
                        if len(self.failures) >= 3:
                            return  # the node is stuck: no point hammering it


def _waves(tmp_path, node, tone, stop: threading.Event, results: list) -> None:
    rows = [[f"dl-{i % ROOMS}"] for i in range(CALLS_PER_WAVE)]
    for _ in range(WAVES):
        if stop.is_set():
            return
        # Bounded: SIPp gives up after 8 s even if the node never answers.
        results.append(sipp.run(tmp_path, f"127.0.0.1:{node.sip_port}", "uac_pcmu.xml", rows,
                                calls=CALLS_PER_WAVE, concurrent=CALLS_PER_WAVE, rate=40,
                                subs={"RTPFILE": tone, "HOLD_MS": HOLD_MS}, timeout=8))


def test_calls_and_stats_polling_under_debug_logging_never_freeze(tmp_path, node_factory):
    tone = tmp_path / "tone.ulaw"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-e", "u-law", "-t", "raw", str(tone),
                    "synth", "2", "sine", "600"], check=True, timeout=30)
    node = node_factory(None, extra=["--log-level", "debug", "--api-token", "t"])

    poller = Poller(node.http_url, time.monotonic() + 40)
    stop = threading.Event()
    results: list[sipp.SippResult] = []
    caller = threading.Thread(target=_waves, args=(tmp_path, node, tone, stop, results),
                              daemon=True)
    poller.start()
    caller.start()
    sip_failures: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while caller.is_alive() and time.monotonic() < deadline:
            t0 = time.monotonic()
            if not node.options_ok(timeout=BUDGET_S):
                sip_failures.append(f"OPTIONS unanswered after {time.monotonic() - t0:.2f} s")
                break
            if poller.failures or not poller.is_alive():
                break
            time.sleep(0.2)
    finally:
        stop.set()
        poller.stop.set()
        caller.join(12)
        poller.join(2 * BUDGET_S + 1)

    assert not sip_failures, sip_failures + [node.log()[-2000:]]
    assert not poller.failures, poller.failures
    assert poller.requests > 50, f"only {poller.requests} HTTP requests made"
    placed = CALLS_PER_WAVE * len(results)
    ok = sum(r.successful for r in results)
    assert len(results) == WAVES and ok >= placed * 0.9, (
        f"{ok}/{placed} calls in {len(results)} waves", results[-1].output[-2000:] if results
        else "")
    assert node.options_ok(timeout=BUDGET_S)
    print(f"{ok}/{placed} calls, {poller.requests} HTTP requests (slowest {poller.worst:.3f} s)")

    rc, took = node.terminate(timeout=10)
    assert rc == 0 and took < 10, (rc, took, node.log()[-2000:])
