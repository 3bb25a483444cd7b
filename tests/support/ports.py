"""Port blocks for tests: every UA and node gets its own, never reused within a run."""

from __future__ import annotations

import os
import socket
import threading

_lock = threading.Lock()
# Spread concurrent runs (different pids) apart.
_next = 20000 + (os.getpid() % 100) * 400


def block(size: int = 20) -> int:
    """The first port of a fresh block of ``size`` ports whose ends are free."""
    global _next
    with _lock:
        for _ in range(1000):
            start = _next
            _next += size
            if _next > 60000:
                _next = 20000
            if all(_free(p) for p in range(start, start + size)):
                return start
    raise RuntimeError("no free port block")


def _free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True
