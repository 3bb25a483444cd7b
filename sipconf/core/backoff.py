"""One backoff for everything the node retries (webhook deliveries, PBX registration)."""

from __future__ import annotations


def backoff(attempt: int, base: float = 1.0, cap: float = 30.0) -> float:
    """Delay before retry number ``attempt`` (1, 2, ...): base, 2·base, 4·base ... up to cap."""
    return min(cap, base * 2.0 ** min(max(0, attempt - 1), 64))
