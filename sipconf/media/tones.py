"""DTMF tones for the in-band digit relay, made in Python (numpy).

A caller whose phone takes no RFC 2833 events hears relayed digits as tone pairs played on its
leg. The same shape as the mixer's C generator (``dtmf_tone`` in mixer_ext/dtmf.c): the row and
column sines at ``amplitude`` each, summed and rounded to int16, so the mixer's own Goertzel
detector accepts them (tests/test_tones.py checks both). Production code uses this module, never
the offline mixer harness (``mixer_ext.mixer``).
"""

from __future__ import annotations

import math

import numpy as np

ROW_HZ = (697, 770, 852, 941)
COL_HZ = (1209, 1336, 1477, 1633)
KEYS = ("123A", "456B", "789C", "*0#D")

TONE_MS = 100  # the relay: each digit's tone pair, then a gap
GAP_MS = 60
AMPLITUDE = 6000  # per sine: about -14.7 dBFS each, -8.7 dBFS peak for the pair


def _freqs(digit: str) -> tuple[int, int]:
    for r, row in enumerate(KEYS):
        if len(digit) == 1 and digit in row:
            return ROW_HZ[r], COL_HZ[row.index(digit)]
    raise ValueError(f"not a DTMF digit: {digit!r}")


def dtmf_tone(digit: str, rate: int = 8000, ms: int = 100, amplitude: int = AMPLITUDE):
    """The tone pair of one DTMF digit (``0-9 * # A-D``), int16 at ``rate``, ``ms`` long."""
    n = rate * ms // 1000
    if n <= 0:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    fr, fc = _freqs(digit)
    i = np.arange(n, dtype=np.float64)
    wr = 2.0 * math.pi * fr / rate
    wc = 2.0 * math.pi * fc / rate
    return np.rint(amplitude * (np.sin(wr * i) + np.sin(wc * i))).astype(np.int16)


def relay_tones(digits: str, rate: int, tone_ms: int = TONE_MS, gap_ms: int = GAP_MS):
    """What the relay plays for ``digits``: each digit's tone pair followed by silence."""
    gap = np.zeros(rate * gap_ms // 1000, np.int16)
    return np.concatenate([part for d in digits for part in (dtmf_tone(d, rate, tone_ms), gap)])
