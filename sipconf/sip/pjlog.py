"""pjlib's log lines into Python logging, without pjlib ever calling Python.

pjlib logs from any thread (SIP, media, the mixer's clock threads), often while holding a lock.
Its log function is a lock-free ring in C (mixer_ext/pjlog.c) that only copies the line; here a
trio task (``pump``) moves the lines to the ``sipconf.pjsip`` logger every 50 ms, so
``--log-format json`` covers them too.
"""

from __future__ import annotations

import logging

import trio

from mixer_ext import logring

log = logging.getLogger("sipconf.pjsip")

# pjlib levels: 0-1 errors, 2 warnings, 3 info, 4 and up debug.
_LEVELS = {0: logging.ERROR, 1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO}


def install(level: int, decor: int) -> None:
    """Set pjlib's log level and decor, and send its lines to the ring. Call before
    ``libCreate`` and again right after ``libInit`` (pjsua installs its own writer there)."""
    logring.install(level, decor)


def drain(max_lines: int = 4 * logring.SLOTS) -> int:
    """Log the pending lines (whitespace folded to single spaces), at most ``max_lines`` so a
    flood cannot hold the caller; returns how many. Safe from any thread: a second concurrent
    drainer returns at once."""
    lines = logring.drain(max_lines)
    for level, text in lines:
        line(level, text)
    return len(lines)


def line(level: int, text: str) -> None:
    """One pjlib line to the logger (whitespace folded to single spaces)."""
    log.log(_LEVELS.get(level, logging.DEBUG), "%s", " ".join(text.split()))


def dropped() -> int:
    """Lines lost because the ring was full (the pump fell behind), since the start."""
    return logring.dropped()


async def pump(interval: float = 0.05) -> None:
    """Drain every ``interval`` seconds until cancelled, then once more."""
    try:
        while True:
            drain()
            await trio.sleep(interval)
    finally:
        with trio.CancelScope(shield=True):
            drain()
