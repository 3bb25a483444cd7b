"""Supervision at the boundary of each unit of work (a call, a room run, a sound, a recording,
a transcription, a webhook delivery, an API request, one engine event).

An unexpected exception is logged once, with its traceback and the unit's ``call_uuid`` /
``room``, counted by where it happened (``sipconf_faults_total{where=...}``), and ends only its
own unit. Cancellation is not a fault: ``trio.Cancelled`` (and anything else that is not an
``Exception``) passes through untouched, so cancelling is still how things stop.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("sipconf.faults")


def split(exc: BaseException) -> tuple[BaseException | None, BaseException | None]:
    """(the faults in ``exc``, the rest to re-raise): groups are split by leaf type."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(Exception)
    return (exc, None) if isinstance(exc, Exception) else (None, exc)


class Faults:
    """Counts faults by where they happened, and limits hit by their option's name."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.limits: Counter[str] = Counter()

    def record(self, where: str, exc: BaseException, *, call_uuid: str = "",
               room: str = "") -> None:
        self.counts[where] += 1
        extra = {"event": "fault", "where": where}
        if call_uuid:
            extra["call_uuid"] = call_uuid
        if room:
            extra["room"] = room
        whose = " ".join(p for p in (f"call {call_uuid}" if call_uuid else "",
                                     f"room {room}" if room else "") if p)
        log.error("fault in %s%s: %s", where, f" ({whose})" if whose else "",
                  f"{type(exc).__name__}: {exc}",
                  exc_info=(type(exc), exc, exc.__traceback__), extra=extra)

    def limit(self, name: str) -> None:
        """A limit (named by its config option) was hit; the caller logs what it did."""
        self.limits[name] += 1

    def call_soon(self, where: str, fn: Callable[..., Any], *args: Any, call_uuid: str = "",
                  room: str = "") -> Any:
        """Run a plain function as a unit; a fault is recorded and None returned."""
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - the boundary of a unit
            self.record(where, exc, call_uuid=call_uuid, room=room)
            return None

    async def guard(self, where: str, fn: Callable[..., Awaitable[Any]], *args: Any,
                    call_uuid: str = "", room: str = "",
                    on_fault: Callable[[BaseException], None] | None = None) -> bool:
        """Await ``fn(*args)`` as one unit; False if it faulted (recorded, ``on_fault`` run)."""
        try:
            await fn(*args)
            return True
        except BaseException as exc:  # noqa: BLE001 - split below; the rest is re-raised
            fault, rest = split(exc)
            if fault is None:
                raise
            self.record(where, fault, call_uuid=call_uuid, room=room)
            if on_fault is not None:
                self.call_soon(where + "-cleanup", on_fault, fault, call_uuid=call_uuid,
                               room=room)
            if rest is not None:
                raise rest from None
            return False
