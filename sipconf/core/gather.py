"""`<GetDigits>` as a sans-I/O state machine: the caller's keys in, what to listen for out.

One :class:`Gather` runs one GetDigits for :mod:`sipconf.core.callflow`. Each attempt plays
the nested prompts (a key stops them: barge-in), then the beep if ``playBeep``, then waits
``timeout`` seconds for the first key and ``digitTimeout`` between keys, until ``numDigits``
keys, ``finishOnKey`` (not part of the digits) or a timeout with digits. A key outside
``validDigits`` plays ``invalidDigitsSound`` and ends the attempt; an attempt without digits
ends too. After ``retries`` attempts without digits it gives up (the call goes on with the next
element). Keys come deduplicated (one press however many ways the phone sends it).
"""

from __future__ import annotations

from dataclasses import dataclass

from sipconf.core.answer import GetDigits, Play, Wait
from sipconf.core.callmessages import (
    Command,
    Event,
    KeyPressed,
    Listen,
    PlayToCall,
    SoundFailed,
    SoundFinished,
    WaitOver,
)

BEEP = "beep:1"

# phases
PROMPTS, WAITING, INVALID = "prompts", "waiting", "invalid"


@dataclass(frozen=True)
class Gathered:
    """The GetDigits is over: ``digits`` (None: no valid input after every attempt)."""

    digits: str | None
    attempts: int
    invalid: int = 0  # keys outside validDigits


class Gather:
    """See the module docstring. :meth:`start` and :meth:`handle` return the next command
    (whose result is the next event) or :class:`Gathered`."""

    def __init__(self, verb: GetDigits):
        self.verb = verb
        self.attempt = 0
        self.digits = ""
        self.invalid = 0
        self.phase = PROMPTS
        self._prompts: list = []
        self._flush = False

    def start(self, now: float) -> Command | Gathered:
        return self._attempt(now)

    def _attempt(self, now: float) -> Command | Gathered:
        if self.attempt >= self.verb.retries:
            return Gathered(None, self.attempt, self.invalid)
        self.attempt += 1
        self.digits = ""
        self.phase = PROMPTS
        self._prompts = list(self.verb.prompts) + ([BEEP] if self.verb.play_beep else [])
        self._flush = True  # keys from an earlier attempt (or its invalid sound) are gone
        return self._listen(now)

    def _listen(self, now: float) -> Command:
        flush, self._flush = self._flush, False
        while self.phase == PROMPTS and self._prompts:
            p = self._prompts.pop(0)
            if isinstance(p, Wait):
                return Listen(None, until=now + p.length, flush=flush)
            if isinstance(p, str):
                return Listen(p, flush=flush)
            return Listen(p, p.loop, flush=flush)
        self.phase = WAITING
        wait = self.verb.digit_timeout if self.digits else self.verb.timeout
        return Listen(None, until=now + wait, flush=flush)

    def handle(self, event: Event, now: float) -> Command | Gathered:
        if self.phase == INVALID:  # the invalid-digits sound is over (or failed)
            return self._attempt(now)
        if isinstance(event, KeyPressed):
            return self._key(event.digit, now)
        if isinstance(event, (SoundFinished, SoundFailed)) or (
                isinstance(event, WaitOver) and self.phase == PROMPTS):
            return self._listen(now)  # the next prompt, or the wait for keys
        if isinstance(event, WaitOver):
            if self.digits:
                return Gathered(self.digits, self.attempt, self.invalid)
            return self._attempt(now)
        raise ValueError(f"GetDigits cannot handle {event!r}")

    def _key(self, digit: str, now: float) -> Command | Gathered:
        verb = self.verb
        self.phase = WAITING  # a key stops the prompts
        self._prompts = []
        if verb.finish_on_key and digit == verb.finish_on_key:
            if self.digits:
                return Gathered(self.digits, self.attempt, self.invalid)
            return self._attempt(now)  # the finish key alone is no input
        if digit not in verb.valid_digits:
            self.invalid += 1
            if verb.invalid_digits_sound:
                self.phase = INVALID
                return PlayToCall(Play(verb.invalid_digits_sound), 1)
            return self._attempt(now)
        self.digits += digit
        if len(self.digits) >= verb.num_digits:
            return Gathered(self.digits, self.attempt, self.invalid)
        return self._listen(now)
