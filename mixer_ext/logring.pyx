# cython: language_level=3
"""pjlib's log lines, through a lock-free ring (pjlog.c) instead of a Python callback.
(Not named pjlog: Cython would write its C file over pjlog.c.)

pjlib logs from any thread, often holding a lock; its log function must never wait for the
GIL. The ring's writer only copies; ``drain`` takes the lines out on a Python thread.
``sipconf.pjlog`` is the Python side (levels, logging, the trio pump).
"""
from mixer_ext._pjlog cimport *

SLOTS = PJLOG_SLOTS


def install(int level, unsigned decor) -> None:
    """Set pjlib's log level and decor and route its lines into the ring."""
    pjlog_install(level, decor)


def drain(int max_lines=PJLOG_SLOTS) -> list:
    """Up to ``max_lines`` pending lines, oldest first, as ``(pjlib level, text)``. Returns
    what it has at once: an empty ring, or another thread draining, ends the batch."""
    cdef char buf[PJLOG_TEXT_MAX]
    cdef int level = 0
    cdef int n
    out = []
    while len(out) < max_lines:
        n = pjlog_pop(&level, buf, PJLOG_TEXT_MAX)
        if n < 0:
            break
        out.append((level, buf[:n].decode("utf-8", "replace")))
    return out


def dropped() -> int:
    """Lines lost to a full ring since the start."""
    return pjlog_dropped()
