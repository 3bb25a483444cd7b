"""Mixer tick cost: mixer_ext (C) against numpy doing the same maths, in the same run.

One room tick = every leg's int32 contribution summed, each leg's N-1 frame saturated to
int16. Printed: microseconds per tick and the numpy/C ratio, for 2/5/10/20 legs at 8 kHz, 20
legs at 16 kHz, and 20 legs with one wideband member (19 legs resampled both ways); and 20
legs with four coaches (private legs each heard by one member) against plain N-1.
Targets (issue 3): 20-leg tick <= 5 us and >= 10x numpy.

    .venv/bin/python benchmarks/mixer.py
"""

from __future__ import annotations

import time

import numpy as np

from mixer_ext import mixer


def numpy_tick(inputs: np.ndarray, muted: np.ndarray) -> np.ndarray:
    """The same N-1 maths in numpy: int32 sum, subtract own, saturate."""
    contrib = np.where(muted[:, None], 0, inputs.astype(np.int32))
    total = contrib.sum(axis=0, dtype=np.int32)
    return np.clip(total[None, :] - contrib, -32768, 32767).astype(np.int16)


def bench_c(legs: int, rate: int, wideband_legs: int = 0, ticks: int = 20000,
            coaches: int = 0, amp: int = 8000) -> float:
    """``coaches``: that many legs are private, each heard by one other leg (coach/whisper)."""
    room = mixer.Room()
    rng = np.random.default_rng(1)
    idxs = []
    for i in range(legs):
        r = 16000 if i < wideband_legs else rate
        idx = room.add_leg(r, flags=mixer.PRIVATE if i >= legs - coaches else 0)
        room.put(idx, rng.integers(-amp, amp, r // 50, dtype=np.int16))
        idxs.append(idx)
    for k in range(coaches):
        room.relate(idxs[k], idxs[legs - 1 - k])
    room.tick_n(200)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter_ns()
        room.tick_n(ticks)
        best = min(best, (time.perf_counter_ns() - t0) / ticks / 1000)
    return best


def bench_numpy(legs: int, rate: int, ticks: int = 5000) -> float:
    rng = np.random.default_rng(1)
    inputs = rng.integers(-8000, 8000, (legs, rate // 50), dtype=np.int16)
    muted = np.zeros(legs, dtype=bool)
    for _ in range(100):
        numpy_tick(inputs, muted)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(ticks):
            numpy_tick(inputs, muted)
        best = min(best, (time.perf_counter_ns() - t0) / ticks / 1000)
    return best


def main() -> None:
    print(f"{'case':<34} {'mixer_ext us':>13} {'numpy us':>10} {'ratio':>7}")
    for legs, rate, wb, label in [
        (2, 8000, 0, "2 legs, 8 kHz"),
        (5, 8000, 0, "5 legs, 8 kHz"),
        (10, 8000, 0, "10 legs, 8 kHz"),
        (20, 8000, 0, "20 legs, 8 kHz"),
        (20, 16000, 20, "20 legs, 16 kHz"),
        (20, 8000, 1, "20 legs, 1 wideband (resampling)"),
    ]:
        c = bench_c(legs, rate, wb)
        n = bench_numpy(legs, 16000 if wb else rate)
        print(f"{label:<34} {c:>13.2f} {n:>10.2f} {n / c:>6.1f}x")
    plain, coached = bench_c(20, 8000), bench_c(20, 8000, coaches=4)
    print(f"who hears whom: 20 legs at 8 kHz, 4 of them coaches each heard by one member: "
          f"{coached:.2f} us a tick against {plain:.2f} us plain N-1 (same run)")
    quiet = bench_c(20, 8000, amp=1000)
    print(f"soft limiter: 20 legs at 8 kHz all loud (+/-8000 each: every listener's mix over "
          f"-1 dBFS, limited) {plain:.2f} us a tick against {quiet:.2f} us at +/-1000 "
          f"(limiter idle; same run)")
    # Resampling is not in the numpy version; the last row's ratio is against plain 16 kHz maths.
    # The tick above includes the floor update; in-band DTMF detection runs per call leg on top.
    for rate in (8000, 16000):
        print(f"in-band DTMF detector, one leg-frame at {rate // 1000} kHz: "
              f"{bench_dtmf(rate):.2f} us (x20 legs: {20 * bench_dtmf(rate):.1f} us a tick)")


def bench_dtmf(rate: int, seconds: int = 60) -> float:
    """Microseconds per 20 ms frame for the Goertzel detector, on speech-like noise."""
    rng = np.random.default_rng(3)
    pcm = (rng.normal(0, 3000, rate * seconds)).astype(np.int16)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        mixer.detect_dtmf(pcm, rate)
        best = min(best, time.perf_counter() - t0)
    return best / (seconds * 50) * 1e6


if __name__ == "__main__":
    main()
