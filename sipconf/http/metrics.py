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


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(m: Metrics, *, calls: int, rooms: int, legs: int, engine: dict,
           webhooks: dict, faults=None, dials: dict | None = None) -> str:
    out: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: list[tuple[str, float]]) -> None:
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(f"{name}{labels} {value:g}" for labels, value in samples)

    def histogram(name: str, help_: str, buckets, counts, total: float, n: int) -> None:
        """``counts`` per bucket (not cumulative); the last one may be the +Inf overflow."""
        out.append(f"# HELP {name} {help_}")
        out.append(f"# TYPE {name} histogram")
        cum = 0
        for b, c in zip(buckets, counts, strict=False):
            cum += c
            out.append(f'{name}_bucket{{le="{b:g}"}} {cum:g}')
        out.extend([f'{name}_bucket{{le="+Inf"}} {n:g}', f"{name}_sum {total:g}",
                    f"{name}_count {n:g}"])

    metric("sipconf_calls_active", "gauge", "Calls the node has now.", [("", calls)])
    metric("sipconf_sip_calls", "gauge",
           "pjsua's call slots in use (also calls being set up or torn down); --max-calls "
           "caps this one.", [("", engine.get("sip_calls", 0))])
    metric("sipconf_rooms_active", "gauge", "Conference rooms with members.", [("", rooms)])
    metric("sipconf_legs_active", "gauge", "Members in conference rooms.", [("", legs)])
    outcomes = m.calls_total + Counter(engine.get("refused", {}))
    metric("sipconf_calls_total", "counter",
           "Calls ended, by outcome (forbidden, no-codec and bad-request: refused by SIP).",
           [(f'{{outcome="{k}"}}', v) for k, v in sorted(outcomes.items())])
    metric("sipconf_dials_total", "counter",
           "Dial-outs ended ringing, by outcome (answered, busy, no-answer, failed, canceled).",
           [(f'{{outcome="{k}"}}', v) for k, v in sorted((dials or {}).items())])
    h = m.answer_latency
    histogram("sipconf_answer_url_seconds", "Answer URL request time.", h.buckets, h.counts,
              h.total, h.n)
    clock = engine.get("clock", {})
    metric("sipconf_mixer_ticks_total", "counter", "Mixer clock ticks.",
           [("", clock.get("ticks", 0))])
    metric("sipconf_mixer_late_ticks_total", "counter",
           "Ticks that started over 10 ms after their deadline.", [("", clock.get("late", 0))])
    rooms_st = engine.get("rooms", {}).values()
    metric("sipconf_mixer_tick_seconds_max", "gauge",
           "Longest room tick seen, over the rooms now open.",
           [("", max((r["tick_ns_max"] for r in rooms_st), default=0) / 1e9)])
    metric("sipconf_mixer_tick_moves", "gauge",
           "Times the rooms now open moved their tick to their talker's packets.",
           [("", sum(r.get("phase_moves", 0) for r in rooms_st))])
    histogram("sipconf_mixer_room_tick_seconds",
              "Time one room's 20 ms tick took (read, mix, write every leg).",
              clock.get("room_tick_buckets_s", []), clock.get("room_tick_hist", []),
              clock.get("room_tick_s", 0.0),
              clock.get("room_ticks", 0))
    legs_st = engine.get("legs", {}).values()
    metric("sipconf_rtp_frames_empty_total", "counter",
           "Frames with no decoded audio (loss or late packets), over live legs.",
           [("", sum(st["rx_empty"] for st in legs_st))])
    metric("sipconf_rtp_catchups_total", "counter",
           "Frames dropped to bring a leg whose jitter buffer kept a whole frame back for a "
           "second 20 ms nearer real time, over live legs.",
           [("", sum(st.get("catchups", 0) for st in legs_st))])
    metric("sipconf_rtp_concealed_in_place_total", "counter",
           "Lost frames concealed in their own slot: the buffer ran dry at the lost packet's "
           "tick, and the next packet was played in its slot, not 20 ms late, over live legs.",
           [("", sum(st.get("in_place", 0) for st in legs_st))])
    metric("sipconf_rtp_delay_steps_total", "counter",
           "Delay steps (a leg's packets later for good: a route change, a sender's hiccup) its "
           "lateness measure started again from, over live legs.",
           [("", sum(st.get("delay_steps", 0) for st in legs_st))])
    metric("sipconf_rtp_frames_shared_total", "counter",
           "Frames sent as a payload encoded once for every member of a room hearing the same "
           "mix (--shared-encoding), over live legs.",
           [("", sum(st.get("shared", 0) for st in legs_st))])
    reg = engine.get("registration")
    if reg is not None:
        metric("sipconf_registered", "gauge", "1 while the PBX holds our registration.",
               [("", int(reg["registered"]))])
        metric("sipconf_registration_failures_total", "counter",
               "REGISTER attempts that failed (each retried with backoff).",
               [("", reg["failures"])])
    rtp = engine.get("rtp", {})

    def per_leg_raw(key: str) -> list[tuple[str, float | None]]:
        return [(f'{{call_uuid="{u}",room="{_label(st["room"])}"}}', st.get(key))
                for u, st in sorted(rtp.items())]

    def per_leg(key: str) -> list[tuple[str, float]]:
        return [(f'{{call_uuid="{u}",room="{_label(st["room"])}"}}', st[key])
                for u, st in sorted(rtp.items())]

    def per_leg_known(key: str) -> list[tuple[str, float]]:
        return [(k, v) for k, v in per_leg_raw(key) if v is not None]

    metric("sipconf_leg_rtp_received_packets", "gauge",
           "RTP packets received on a live leg (pjsua stream statistics).",
           per_leg("rx_packets"))
    metric("sipconf_leg_rtp_lost_packets", "gauge",
           "RTP packets lost on the way in on a live leg (sequence gaps).", per_leg("rx_lost"))
    metric("sipconf_leg_rtp_peer_lost_packets", "gauge",
           "Packets the caller reports (RTCP) it lost of ours.", per_leg("peer_lost"))
    metric("sipconf_leg_rtp_jitter_seconds", "gauge",
           "Interarrival jitter on a live leg, last RFC 3550 estimate.", per_leg("jitter_s"))
    metric("sipconf_leg_rtp_jitter_max_seconds", "gauge",
           "Largest interarrival jitter seen on a live leg.", per_leg("jitter_max_s"))
    metric("sipconf_leg_concealed_frames", "gauge",
           "Frames the jitter buffer had no packet for on a live leg (lost or too late), "
           "filled in by the codec's concealment.", per_leg("concealed"))
    metric("sipconf_leg_jb_discarded_frames", "gauge",
           "Frames the jitter buffer discarded on a live leg (too late, or to shorten its "
           "delay).", per_leg("jb_discarded"))
    metric("sipconf_leg_jb_empty_frames", "gauge",
           "Reads of a live leg's jitter buffer that found it empty (before the first packet, "
           "or a packet late).", per_leg("jb_empty"))
    metric("sipconf_leg_jb_playout_seconds", "gauge",
           "How long after its earliest possible arrival a live leg's packet is played "
           "(the node's playout point; legs with 50 packets or more).",
           per_leg_known("playout_s"))
    metric("sipconf_leg_jb_target_seconds", "gauge",
           "The lateness a live leg's jitter buffer waits for (--jb-wait-pct of its packets, at "
           "most --jb-delay-max-ms).", per_leg_known("target_s"))
    metric("sipconf_leg_fec_loss_percent", "gauge",
           "The loss a live Opus leg's encoder codes in-band FEC for, following the peer's "
           "receiver reports (legs with a report).", per_leg_known("fec_pct"))
    metric("sipconf_leg_fec_recovered_frames", "gauge",
           "Lost frames a live Opus leg's decoder rebuilt from the peer's in-band FEC.",
           per_leg_known("fec_recovered"))
    metric("sipconf_leg_jb_delay_seconds", "gauge",
           "Average delay of a live leg's jitter buffer.", per_leg("jb_delay_s"))
    metric("sipconf_rtp_concealed_frames", "gauge", "Concealed frames, over the live legs.",
           [("", sum(st["concealed"] for st in rtp.values()))])
    metric("sipconf_rtp_lost_packets", "gauge", "RTP packets lost, over the live legs.",
           [("", sum(st["rx_lost"] for st in rtp.values()))])
    metric("sipconf_webhook_queue_depth", "gauge", "Events waiting to be delivered.",
           [("", webhooks.get("depth", 0))])
    metric("sipconf_webhook_delivered_total", "counter", "Events delivered.",
           [("", webhooks.get("delivered", 0))])
    metric("sipconf_webhook_retries_total", "counter", "Delivery attempts that will be retried.",
           [("", webhooks.get("retries", 0))])
    metric("sipconf_webhook_failures_total", "counter", "Events given up on.",
           [("", webhooks.get("failed", 0))])
    metric("sipconf_webhook_dead_letters", "gauge",
           "Events no retry could deliver, kept with their reason (GET /v1/dead-letters).",
           [("", webhooks.get("dead_letters", 0))])
    if faults is not None:
        metric("sipconf_faults_total", "counter",
               "Unexpected errors, by the unit they ended (call, room, sound, recording, "
               "transcription, webhook, api, sip-event).",
               [(f'{{where="{_label(k)}"}}', v) for k, v in sorted(faults.counts.items())])
        metric("sipconf_limits_hit_total", "counter",
               "Times a document or request went past a limit, by the option that set it.",
               [(f'{{limit="{_label(k)}"}}', v) for k, v in sorted(faults.limits.items())])
    metric("sipconf_sip_requests_refused_total", "counter",
           "SIP requests the node answered without serving them: malformed (400), "
           "method_not_allowed (405), unknown_method (501), bad_event (489), info_body (415), "
           "no_dialog (481).",
           [(f'{{reason="{_label(k)}"}}', v)
            for k, v in sorted(engine.get("sip_refused", {}).items())])
    guard = engine.get("rtp_guard", {})
    metric("sipconf_rtp_foreign_packets_total", "counter",
           "RTP and RTCP packets dropped because they did not come from the call's source "
           "(strict_rtp).",
           [(f'{{kind="{k}"}}', guard.get(f"foreign_{k}", 0)) for k in ("rtp", "rtcp")])
    metric("sipconf_rtp_source_changes_total", "counter",
           "Calls' RTP sources taken other than the SDP's: learned (NAT, from the first "
           "packets) and relatched (after the old source's silence, same SSRC).",
           [(f'{{how="{k}"}}', guard.get(k, 0)) for k in ("learned", "relatched")])
    metric("sipconf_log_lines_dropped_total", "counter",
           "pjlib log lines dropped because the log ring was full.",
           [("", engine.get("log_dropped", 0))])
    return "\n".join(out) + "\n"
