"""How late packets come (mixer_ext/transit.c): the measure the jitter buffer's playout point
follows under jitter (issue 18), fed packets by hand with known arrival times."""

from __future__ import annotations

import random
import struct

import numpy as np
import pytest

mixer = pytest.importorskip("mixer_ext.mixer")

PT, RATE = 0, 8000          # PCMU
STEP = 160                  # 20 ms of timestamp


def rtp(seq: int, ts: int, ssrc: int = 0x1234, pt: int = PT) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + bytes(160)


def feed(t, late_ms: list[float], *, seq0=0, ts0=1000, t0_ns=10**12, ssrc=0x1234, pt=PT):
    """Packet i sent at 20*i ms arrives late_ms[i] ms after that (in the order of arrival)."""
    arrivals = sorted((20.0 * i + d, i) for i, d in enumerate(late_ms))
    for at, i in arrivals:
        t.feed(rtp(seq0 + i, ts0 + i * STEP, ssrc, pt), t0_ns + int(at * 1e6))
    return arrivals


@pytest.fixture(autouse=True)
def _default_pct():
    saved = mixer.Transit.pct()
    mixer.Transit.set_pct(98)  # the figures below are for 98 %
    yield
    mixer.Transit.set_pct(saved)


def test_nothing_until_fifty_packets():
    t = mixer.Transit(PT, RATE)
    feed(t, [0.0] * 49)
    assert t.view() is None
    feed(t, [0.0] * 60, seq0=49, ts0=1000 + 49 * STEP, t0_ns=10**12 + 49 * 20 * 10**6)
    v = t.view()
    assert v is not None and v["count"] >= 50
    assert v["packet_us"] == 20000


def test_the_quantile_of_how_late_packets_came_over_the_window():
    rng = random.Random(7)
    late = [rng.uniform(0, 80) for _ in range(400)]  # 40+-40 ms of jitter, reordering
    t = mixer.Transit(PT, RATE)
    arrivals = feed(t, late)
    v = t.view()
    window = np.array([late[i] for _at, i in arrivals[-256:]])
    expect = np.sort(window)[(len(window) - 1) * 98 // 100] - window.min()
    # the quantile is taken every 16 packets: within the last few arrivals' reach
    assert v["target_us"] / 1000 == pytest.approx(expect, abs=3.0)
    assert 60 <= v["target_us"] / 1000 <= 80
    newest = max(i for _at, i in arrivals)
    # against the window's earliest as of the last update (up to 16 packets back)
    assert v["newest_us"] / 1000 == pytest.approx(late[newest] - window.min(), abs=1.0)

    mixer.Transit.set_pct(50)
    feed(t, [rng.uniform(0, 80) for _ in range(64)], seq0=400, ts0=1000 + 400 * STEP,
         t0_ns=10**12 + 400 * 20 * 10**6)
    assert 25 <= t.view()["target_us"] / 1000 <= 55  # about the median now


def test_steady_packets_have_no_lateness():
    t = mixer.Transit(PT, RATE)
    feed(t, [0.3] * 200)
    v = t.view()
    assert v["target_us"] <= 2 and v["newest_us"] <= 2  # (us: rounding)


def test_other_payload_types_are_not_measured():
    t = mixer.Transit(PT, RATE)
    feed(t, [0.0] * 100, pt=101)  # telephone-event: its timestamp stays for an event
    assert t.view() is None


def test_a_pause_with_its_timestamps_is_no_lateness():
    """DTX: the sender stops for 1 s, its timestamps jump with it."""
    t = mixer.Transit(PT, RATE)
    feed(t, [1.0] * 100)
    feed(t, [1.0] * 100, seq0=100, ts0=1000 + 150 * STEP, t0_ns=10**12 + 150 * 20 * 10**6)
    assert t.view()["target_us"] <= 2


def test_a_new_sender_or_a_jump_starts_again():
    t = mixer.Transit(PT, RATE)
    feed(t, [0.0] * 100)
    assert t.view() is not None
    feed(t, [0.0] * 10, ssrc=0x9999, t0_ns=10**12 + 3 * 10**9)
    assert t.view() is None  # a new SSRC: its own window
    t2 = mixer.Transit(PT, RATE)
    feed(t2, [0.0] * 100)
    # the same sender 5 s later but its timestamps only 20 ms on (a restart): not 5 s "late"
    feed(t2, [0.0] * 60, seq0=100, ts0=1000 + 100 * STEP, t0_ns=10**12 + 7 * 10**9)
    assert t2.view()["target_us"] < 1000


def test_timestamps_wrap():
    t = mixer.Transit(PT, RATE)
    feed(t, [0.0] * 120, ts0=0xFFFFFFFF - 60 * STEP)
    assert t.view()["target_us"] <= 2


def test_unconfigured_measures_nothing():
    t = mixer.Transit(PT, 0)
    feed(t, [0.0] * 100)
    assert t.view() is None


def test_a_timestamps_earliest_arrival_is_its_slot_plus_the_least_lateness():
    """The playout point is taken from the timestamp the jitter buffer reads next: how long
    after that packet could have come at the earliest it is played."""
    rng = random.Random(11)
    late = [5.0 + rng.uniform(0, 40) for _ in range(300)]
    t = mixer.Transit(PT, RATE)
    arrivals = feed(t, late, ts0=0xFFFFF000)  # across the timestamp's wrap
    v = t.view()
    assert v["newest_ts"] == (0xFFFFF000 + 299 * STEP) & 0xFFFFFFFF
    least = min(late[i] for _at, i in arrivals[-256:])
    for i in (250, 299, 320):  # in the window, the newest, one not come yet
        sent_ns = 10**12 + i * 20 * 10**6
        got = t.earliest_ns((0xFFFFF000 + i * STEP) & 0xFFFFFFFF)
        assert (got - sent_ns) / 1e6 == pytest.approx(least, abs=1.0)


def test_a_delay_step_starts_the_window_again_from_it():
    """Every packet 150 ms later from packet 300 on (a route change), under 0-30 ms of jitter:
    the window's earliest is the step's within a few packets, not ~5 s later when the old ones
    are gone (the playout point read ~175 ms against a 60 ms target, and audio was dropped)."""
    rng = random.Random(5)
    late = [rng.uniform(0, 30) + (150.0 if i >= 300 else 0.0) for i in range(320)]
    t = mixer.Transit(PT, RATE)
    feed(t, late)
    v = t.view()
    assert v["steps"] == 1
    least = min(late[300:])
    for i in (310, 319, 330):
        sent_ns = 10**12 + i * 20 * 10**6
        got = t.earliest_ns((1000 + i * STEP) & 0xFFFFFFFF)
        assert (got - sent_ns) / 1e6 == pytest.approx(least, abs=1.0)
    # too few packets since the step for a quantile: the spread from before it (~30 ms)
    assert 20 <= v["target_us"] / 1000 <= 31
    assert v["newest_us"] / 1000 <= 31
    # then the window's own quantile over the packets since the step
    more = [rng.uniform(0, 30) + 150.0 for _ in range(200)]
    feed(t, more, seq0=320, ts0=1000 + 320 * STEP, t0_ns=10**12 + 320 * 20 * 10**6)
    v = t.view()
    assert v["steps"] == 1 and 20 <= v["target_us"] / 1000 <= 31


def test_jitter_and_a_short_spike_are_no_step():
    """40+-40 ms of jitter (reordering) never makes five packets in a row 20 ms over its 98 %
    quantile; a spike of four late packets does not either."""
    rng = random.Random(9)
    t = mixer.Transit(PT, RATE)
    feed(t, [rng.uniform(0, 80) for _ in range(2000)])
    assert t.view()["steps"] == 0
    t2 = mixer.Transit(PT, RATE)
    feed(t2, [1.0] * 100 + [120.0] * 4 + [1.0] * 100)
    assert t2.view()["steps"] == 0 and t2.view()["target_us"] <= 2000


def test_a_stall_and_its_burst_keep_the_earliest():
    """A sender stalls 200 ms and then sends its backlog at once, then on time: a step is seen
    at the backlog's head, but its own packets and the next ones bring the earliest straight
    back to where it was."""
    t = mixer.Transit(PT, RATE)
    late = [1.0] * 100 + [200.0 - 20.0 * k for k in range(10)] + [1.0] * 60
    feed(t, late)
    v = t.view()
    assert v["steps"] == 1
    sent_ns = 10**12 + 169 * 20 * 10**6
    assert (t.earliest_ns((1000 + 169 * STEP) & 0xFFFFFFFF) - sent_ns) / 1e6 == pytest.approx(
        1.0, abs=0.5)


@pytest.mark.parametrize("later", [0.0, 150.0])
def test_jitter_that_starts_with_a_step_is_one_step(later):
    """A clean line that turns to 0-80 ms of jitter (and `later` ms later still) is one step
    at most, and then the window's own quantile: not a step again and again against the
    clean line's spread (the window never filled, the target stayed ~1 ms)."""
    rng = random.Random(3)
    late = [1.0] * 100 + [later + rng.uniform(0, 80) for _ in range(400)]
    t = mixer.Transit(PT, RATE)
    arrivals = feed(t, late)
    v = t.view()
    assert v["steps"] <= 1
    window = np.array([late[i] for _at, i in arrivals[-256:]])
    expect = np.sort(window)[(len(window) - 1) * 98 // 100] - window.min()
    assert v["target_us"] / 1000 == pytest.approx(expect, abs=3.0)
