"""The Prometheus text the node serves, from plain inputs (no node)."""

from sipconf.http.metrics import Metrics, render


def _parse(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_render_counts_refusals_histograms_and_per_leg_rtp():
    m = Metrics()
    m.calls_total["answered"] += 2
    for v in (0.003, 0.04, 7.0):
        m.answer_latency.observe(v)
    engine = {
        "refused": {"forbidden": 1, "no-codec": 2},
        "clock": {"ticks": 10, "late": 0, "room_ticks": 6, "room_tick_s": 0.00003,
                  "room_tick_hist": [4, 2, 0, 0], "room_tick_buckets_s": [1e-6, 2e-6, 5e-6]},
        "rooms": {},
        "legs": {},
        "rtp": {"u1": {"rx_packets": 500, "rx_lost": 3, "rx_discarded": 0, "jitter_s": 0.002,
                       "jitter_max_s": 0.004, "peer_lost": 1, "concealed": 7,
                       "jb_discarded": 2, "jb_empty": 4, "jb_delay_s": 0.03,
                       "jb_delay_max_s": 0.06, "playout_s": 0.065, "target_s": 0.06,
                       "room": 'we"ird'},
                "u2": {"rx_packets": 20, "rx_lost": 0, "rx_discarded": 0, "jitter_s": 0.0,
                       "jitter_max_s": 0.0, "peer_lost": 0, "concealed": 0,
                       "jb_discarded": 0, "jb_empty": 0, "jb_delay_s": 0.0,
                       "jb_delay_max_s": 0.0, "playout_s": None, "target_s": None,
                       "room": "r"}},
        "registration": {"registered": True, "failures": 2, "last_code": 200, "expires": 300},
    }
    text = render(m, calls=1, rooms=1, legs=1, engine=engine, webhooks={})
    v = _parse(text)
    assert v['sipconf_calls_total{outcome="answered"}'] == 2
    assert v['sipconf_calls_total{outcome="forbidden"}'] == 1
    assert v['sipconf_calls_total{outcome="no-codec"}'] == 2
    # cumulative buckets; a value past the last bucket only in +Inf
    assert v['sipconf_answer_url_seconds_bucket{le="0.005"}'] == 1
    assert v['sipconf_answer_url_seconds_bucket{le="5"}'] == 2
    assert v['sipconf_answer_url_seconds_bucket{le="+Inf"}'] == 3
    assert v['sipconf_mixer_room_tick_seconds_bucket{le="1e-06"}'] == 4
    assert v['sipconf_mixer_room_tick_seconds_bucket{le="5e-06"}'] == 6
    assert v['sipconf_mixer_room_tick_seconds_count'] == 6
    leg = '{call_uuid="u1",room="we\\"ird"}'
    assert v[f"sipconf_leg_rtp_lost_packets{leg}"] == 3
    assert v[f"sipconf_leg_rtp_jitter_seconds{leg}"] == 0.002
    assert v[f"sipconf_leg_rtp_peer_lost_packets{leg}"] == 1
    assert v["sipconf_rtp_lost_packets"] == 3
    assert v[f"sipconf_leg_concealed_frames{leg}"] == 7 and v["sipconf_rtp_concealed_frames"] == 7
    assert v[f"sipconf_leg_jb_discarded_frames{leg}"] == 2
    assert v[f"sipconf_leg_jb_empty_frames{leg}"] == 4
    assert v[f"sipconf_leg_jb_playout_seconds{leg}"] == 0.065
    assert v[f"sipconf_leg_jb_target_seconds{leg}"] == 0.06
    # a leg whose transit is not known yet (under 50 packets) has no such sample
    assert not any(k.startswith("sipconf_leg_jb_target_seconds") and 'call_uuid="u2"' in k
                   for k in v)
    assert v[f"sipconf_leg_jb_delay_seconds{leg}"] == 0.03
    assert v["sipconf_registered"] == 1 and v["sipconf_registration_failures_total"] == 2
    assert "# TYPE sipconf_mixer_room_tick_seconds histogram" in text


def test_no_registration_no_registration_metrics():
    text = render(Metrics(), calls=0, rooms=0, legs=0, engine={}, webhooks={})
    assert "sipconf_registered" not in text and "sipconf_calls_active 0" in text


def test_leg_counters_are_summed_over_live_legs():
    engine = {"legs": {1: {"rx_empty": 3, "catchups": 1, "in_place": 2, "delay_steps": 1},
                       2: {"rx_empty": 4, "delay_steps": 2}}}
    v = _parse(render(Metrics(), calls=0, rooms=0, legs=2, engine=engine, webhooks={}))
    assert v["sipconf_rtp_frames_empty_total"] == 7
    assert v["sipconf_rtp_catchups_total"] == 1
    assert v["sipconf_rtp_concealed_in_place_total"] == 2
    assert v["sipconf_rtp_delay_steps_total"] == 3
