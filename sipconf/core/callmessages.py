"""The messages of :mod:`sipconf.core.callflow`: the events a driver feeds a call flow, and the
commands the flow returns (plain frozen dataclasses, like h11's ``_events.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sipconf.core.answer import Conference, Play, Speak
from sipconf.core.answer import Dial as DialVerb
from sipconf.core.answer import Record as RecordVerb
from sipconf.core.answer import Stream as StreamVerb

# --- events (driver -> flow) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Fetched:
    """The reply body of the last :class:`Fetch`."""

    body: bytes


@dataclass(frozen=True)
class FetchFailed:
    """The last :class:`Fetch` failed (``retry``: it might work later; ``option``: the node
    limit it went past, if that is why)."""

    reason: str
    retry: bool = True
    option: str | None = None


@dataclass(frozen=True)
class Answered:
    """The result of ``Answer(200)``: ``ok`` False when the call was already gone."""

    ok: bool = True


@dataclass(frozen=True)
class CallGone:
    """The caller hung up (or the call failed); the driver's run is being cancelled."""


@dataclass(frozen=True)
class SoundFinished:
    """The :class:`PlayToCall` sound played to its end."""


@dataclass(frozen=True)
class SoundFailed:
    """The :class:`PlayToCall` sound could not be had (``option``: a node limit)."""

    reason: str
    option: str | None = None


@dataclass(frozen=True)
class WaitOver:
    """The :class:`Sleep` deadline passed."""


@dataclass(frozen=True)
class RoomRefused:
    """:class:`JoinRoom` was refused (room full, ...): the caller never entered it."""

    reason: str


@dataclass(frozen=True)
class LeftRoom:
    """The caller left the room :class:`JoinRoom` put it in. ``member_id`` and ``room_uuid``
    are its membership; ``record_params`` the run's RecordUrl/RecordingID (kept for the call's
    later action requests), or None to keep the call's earlier ones."""

    reason: str
    member_id: str = ""
    room_uuid: str = ""
    record_params: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Drained:
    """The result of :class:`AwaitDrained`: ``in_time`` False if the deadline came first."""

    in_time: bool


@dataclass(frozen=True)
class KeyPressed:
    """A key the caller pressed during :class:`Listen` (or before it, while keys were
    collected): one key press, deduplicated across RFC 2833, SIP INFO and in-band tones."""

    digit: str
    source: str = "rfc2833"


@dataclass(frozen=True)
class DigitsSent:
    """The result of a :class:`SendDigits` that is waited for."""


@dataclass(frozen=True)
class Stopped:
    """The driver's run is over (the flow is done, the call is gone, the node is stopping, or
    ``fault``: something went wrong carrying out a command). Returns the call's last commands."""

    fault: bool = False


@dataclass(frozen=True)
class DialAnswered:
    """A callee of :class:`RingDial` answered (it is on its way into the bridge room)."""

    b_uuid: str


@dataclass(frozen=True)
class DialFailed:
    """No callee of :class:`RingDial` answered: how the dial-outs ended (the most telling
    of them: busy over no-answer over failed), the SIP code, whether any rang."""

    status: str  # core.dialout outcome: busy, no-answer, failed, canceled
    code: int = 0
    rang: bool = False


@dataclass(frozen=True)
class Recorded:
    """:class:`RecordCall` is over: the file's parameters (RecordUrl, RecordingID,
    RecordingDuration, ...; Digits if a key ended it) and why it ended."""

    params: Mapping[str, str]
    reason: str  # "key", "silence", "max-length" or "failed"


@dataclass(frozen=True)
class StreamEnded:
    """A ``<Stream keepCallAlive="true">`` ended (the app closed it, its timeout, a stall)."""

    reason: str


Event = (Fetched | FetchFailed | Answered | CallGone | SoundFinished | SoundFailed | WaitOver
         | RoomRefused | LeftRoom | Drained | KeyPressed | DigitsSent | DialAnswered
         | DialFailed | Recorded | StreamEnded | Stopped)

# --- commands (flow -> driver) --------------------------------------------------------------------


@dataclass(frozen=True)
class Fetch:
    """Request a document now (``purpose``: answer, redirect or action). Result:
    :class:`Fetched` or :class:`FetchFailed`."""

    url: str
    method: str
    params: Mapping[str, str]
    purpose: str


@dataclass(frozen=True)
class Answer:
    """Answer the call. Result (only for 200): :class:`Answered`."""

    code: int = 200
    reason: str = ""
    warning: str = ""


@dataclass(frozen=True)
class Hangup:
    """Hang up (``code`` 0: BYE an answered call; else the final response). No result."""

    code: int = 0
    reason: str = ""


@dataclass(frozen=True)
class PlayToCall:
    """Play or Speak to this caller alone, ``loops`` times (0: until the call ends), then take
    the sound off again. Result: :class:`SoundFinished` or :class:`SoundFailed`."""

    verb: Play | Speak
    loops: int


@dataclass(frozen=True)
class Sleep:
    """Result: :class:`WaitOver` at ``until``."""

    until: float


@dataclass(frozen=True)
class JoinRoom:
    """Put the caller in the room and wait until it leaves. Result: :class:`RoomRefused` or
    :class:`LeftRoom`."""

    conference: Conference


@dataclass(frozen=True)
class LeaveRoom:
    """Take the caller out of its room now (the exit event). Result: :class:`LeftRoom`."""


@dataclass(frozen=True)
class AwaitDrained:
    """Wait until the call's queued events are delivered, or ``until``. Result:
    :class:`Drained`."""

    until: float


@dataclass(frozen=True)
class Submit:
    """Spool an event for delivery, in order after the call's earlier ones. No result."""

    url: str
    method: str
    params: Mapping[str, str]


@dataclass(frozen=True)
class LimitHit:
    """Count a node limit that was hit (named by its option). No result."""

    option: str


@dataclass(frozen=True)
class End:
    """The call's record ends (``outcome`` for the calls metric); a final :class:`Hangup` or
    :class:`Answer` may follow (the call is still up). No result."""

    outcome: str


@dataclass(frozen=True)
class CollectKeys:
    """Start (``on``) or stop keeping the caller's key presses for the flow (a GetDigits);
    while on, they reach the flow as :class:`KeyPressed` from :class:`Listen`, not a room.
    No result."""

    on: bool


@dataclass(frozen=True)
class Listen:
    """Play ``prompt`` (a Play/Speak, or a built-in sound such as ``beep:1``; None: silence)
    to the caller ``loops`` times and wait for the first of: a key press (result
    :class:`KeyPressed`; the prompt is taken off at once), the prompt's end
    (:class:`SoundFinished` or :class:`SoundFailed`) or ``until`` (:class:`WaitOver`).
    ``flush``: keys pressed before it are dropped."""

    prompt: Play | Speak | str | None
    loops: int = 1
    until: float | None = None
    flush: bool = False


@dataclass(frozen=True)
class SendDigits:
    """Send ``digits`` to the caller (``w``/``W``: pause 0.5 s / 1 s): RFC 2833 events, or
    in-band tones to a phone that took none. Result (only when ``wait``): :class:`DigitsSent`;
    otherwise it runs beside what the call does next."""

    digits: str
    wait: bool = False


@dataclass(frozen=True)
class ScheduleHangup:
    """Hang the call up at ``at`` (``<Hangup schedule>``), whatever it does then. No result."""

    at: float


@dataclass(frozen=True)
class RingDial:
    """``<Dial>``: call its targets at once (within the node's dial-out limits and
    ``--dial-allow``), the first to answer goes into the bridge room, the others are
    cancelled. Result: :class:`DialAnswered` or :class:`DialFailed`."""

    dial: DialVerb


@dataclass(frozen=True)
class RecordCall:
    """``<Record>``: the caller's voice to a file (after a beep if asked) until a finish
    key, the silence timeout or maxLength. Result: :class:`Recorded`. If the caller hangs up
    meanwhile the driver reports the file to the action and callback itself."""

    record: RecordVerb


@dataclass(frozen=True)
class StartStream:
    """``<Stream>``: the call's audio to the app's WebSocket (and back) from now on, beside
    the rest of the document; with ``keepCallAlive`` the document waits for its end (result
    :class:`StreamEnded`), otherwise no result."""

    stream: StreamVerb


Command = (Fetch | Answer | Hangup | PlayToCall | Sleep | JoinRoom | LeaveRoom | AwaitDrained
           | Submit | LimitHit | End | CollectKeys | Listen | SendDigits | ScheduleHangup
           | RingDial | RecordCall | StartStream)

#: commands the driver feeds a result back for
WITH_RESULT = (Fetch, PlayToCall, Sleep, JoinRoom, LeaveRoom, AwaitDrained, Listen, RingDial,
               RecordCall)


def has_result(cmd: Command) -> bool:
    return (isinstance(cmd, WITH_RESULT) or (isinstance(cmd, Answer) and cmd.code == 200)
            or (isinstance(cmd, SendDigits) and cmd.wait)
            or (isinstance(cmd, StartStream) and cmd.stream.keep_call_alive))
