"""Keypad digits of one room member: deduplicated across the ways a phone sends them, matched
against ``digitsMatch``.

Sans-I/O: ``feed`` takes a digit, where it came from (``rfc2833``, ``info``, ``inband``) and the
time, and says whether it is a new key press and which ``digitsMatch`` pattern it completes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GAP_S = 1.5  # a pause longer than this between digits starts the match afresh
DUPLICATE_S = 0.5  # the same digit from another source within this is the same key press
DIGITS = set("0123456789*#ABCD")


@dataclass(frozen=True)
class Press:
    digit: str
    source: str
    matched: str | None  # the digitsMatch pattern this press completed, if any


@dataclass
class DigitCollector:
    patterns: tuple[str, ...] = ()
    gap: float = GAP_S
    duplicate: float = DUPLICATE_S
    recent: str = ""
    _last: tuple[str, str, float] | None = field(default=None, repr=False)

    def feed(self, digit: str, source: str, now: float) -> Press | None:
        """A key press, or None for a duplicate (a phone sending RFC 2833 and in-band at once)
        or a character that is no DTMF digit."""
        digit = digit.upper()
        if digit not in DIGITS:
            return None
        last = self._last
        if last is not None:
            ldigit, lsource, lt = last
            if ldigit == digit and lsource != source and now - lt < self.duplicate:
                return None
            if now - lt > self.gap:
                self.recent = ""
        self._last = (digit, source, now)
        self.recent = (self.recent + digit)[-64:]
        matched = next((p for p in sorted(self.patterns, key=len, reverse=True)
                        if self.recent.endswith(p)), None)
        if matched is not None:
            self.recent = ""
        return Press(digit, source, matched)
