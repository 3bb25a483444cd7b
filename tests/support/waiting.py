"""Polling with a time bound, for tests that wait on a real process or a real receiver."""

from __future__ import annotations

import time


def wait_until(pred, timeout: float, step: float = 0.1):
    """``pred()``'s first truthy value within ``timeout`` seconds, else its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    return pred()


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    """(word edits between reference and hypothesis, reference words): WER = edits / words."""
    r, h = ref.lower().split(), hyp.lower().split()
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(h)], len(r)
