"""Prometheus metrics: counters the node keeps, and the text exposition format.

Sans-I/O: :class:`Metrics` is updated by the node; :func:`render` turns it and a snapshot of
the engine's statistics into the text a Prometheus server scrapes from ``/metrics``.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field

ANSWER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.counts):
            self.counts[i] += 1
        self.total += value
        self.n += 1


@dataclass
class Metrics:
    calls_total: Counter = field(default_factory=Counter)  # by outcome
    answer_latency: Histogram = field(default_factory=lambda: Histogram(ANSWER_BUCKETS))


def render(m: Metrics, *, calls: int, rooms: int, legs: int, engine: dict,
           webhooks: dict) -> str:
    out: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{name}{labels} {value:g}" for labels, value in samples)

    metric("sipconf_calls_active", "gauge", "Calls the node has now.", [("", calls)])
    metric("sipconf_rooms_active", "gauge", "Conference rooms with members.", [("", rooms)])
    metric("sipconf_legs_active", "gauge", "Members in conference rooms.", [("", legs)])
    outcomes = m.calls_total + Counter(engine.get("refused", {}))
    metric("sipconf_calls_total", "counter",
           "Calls ended, by outcome (forbidden, no-codec and bad-request: refused by SIP).",
           [(f'{{outcome="{k}"}}', v) for k, v in sorted(outcomes.items())])
    h = m.answer_latency
    cum, samples = 0, []
    for b, c in zip(h.buckets, h.counts, strict=True):
        cum += c
        samples.append((f'_bucket{{le="{b:g}"}}', cum))
    samples += [('_bucket{le="+Inf"}', h.n), ("_sum", h.total), ("_count", h.n)]
    out.append("# HELP sipconf_answer_url_seconds Answer URL request time.")
    out.append("# TYPE sipconf_answer_url_seconds histogram")
    out.extend(f"sipconf_answer_url_seconds{s} {v:g}" for s, v in samples)
    clock = engine.get("clock", {})
    metric("sipconf_mixer_ticks_total", "counter", "Mixer clock ticks.",
           [("", clock.get("ticks", 0))])
    metric("sipconf_mixer_late_ticks_total", "counter",
           "Ticks that started over 10 ms after their deadline.", [("", clock.get("late", 0))])
    rooms_st = engine.get("rooms", {}).values()
    metric("sipconf_mixer_tick_seconds_max", "gauge",
           "Longest room tick seen, over the rooms now open.",
           [("", max((r["tick_ns_max"] for r in rooms_st), default=0) / 1e9)])
    metric("sipconf_mixer_tick_seconds_avg", "gauge", "Mean room tick, over the rooms now open.",
           [("", (sum(r["tick_ns_avg"] for r in rooms_st) / len(rooms_st) / 1e9)
             if rooms_st else 0)])
    legs_st = engine.get("legs", {}).values()
    metric("sipconf_rtp_frames_empty_total", "counter",
           "Frames with no decoded audio (loss or late packets), over live legs.",
           [("", sum(st["rx_empty"] for st in legs_st))])
    reg = engine.get("registration")
    if reg is not None:
        metric("sipconf_registered", "gauge", "1 while the PBX holds our registration.",
               [("", int(reg["registered"]))])
        metric("sipconf_registration_failures_total", "counter",
               "REGISTER attempts that failed (each retried with backoff).",
               [("", reg["failures"])])
    metric("sipconf_webhook_queue_depth", "gauge", "Events waiting to be delivered.",
           [("", webhooks.get("depth", 0))])
    metric("sipconf_webhook_delivered_total", "counter", "Events delivered.",
           [("", webhooks.get("delivered", 0))])
    metric("sipconf_webhook_retries_total", "counter", "Delivery attempts that will be retried.",
           [("", webhooks.get("retries", 0))])
    metric("sipconf_webhook_failures_total", "counter", "Events given up on.",
           [("", webhooks.get("failed", 0))])
    return "\n".join(out) + "\n"
