"""What the control plane asks of SIP and media, and what it hears back.

The node (trio) drives calls through an :class:`Engine`; the pjsua2 adapter (``sip.py``) is the
real one, tests stand in a fake. The engine reports what happens as the plain event objects
below, through the ``emit`` function the node gives it. ``emit`` only queues: the node drains
its queue in a supervised task, so a failing handler costs one call, never the node.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

# --- events (engine -> node) -------------------------------------------------------------------


@dataclass(frozen=True)
class IncomingCall:
    uuid: str
    from_uri: str
    to_uri: str
    to_user: str
    caller_name: str
    sip_call_id: str
    # the INVITE's custom X-PH-* headers (name, value), for the web app as SIP-H-X-PH-*
    sip_headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class DialProgress:
    """A dial-out's INVITE got a provisional answer (``ringing``) or was answered."""

    uuid: str
    status: str  # "ringing" or "answered"
    code: int
    sip_call_id: str = ""


@dataclass(frozen=True)
class CallEnded:
    uuid: str
    status: int
    reason: str
    media_timeout: bool = False  # the node hung up: no RTP for rtp_timeout seconds


@dataclass(frozen=True)
class MediaUp:
    uuid: str
    rate: int


@dataclass(frozen=True)
class Dtmf:
    uuid: str
    digit: str
    source: str  # "rfc2833", "info" or "inband"
    at: float = 0.0  # time.monotonic() when the SIP thread saw it


@dataclass(frozen=True)
class Floor:
    """The mixer's talker detection gave a conference room's floor to this call."""

    room_key: str
    uuid: str


@dataclass(frozen=True)
class Talk:
    """The mixer's talker detection: this call started (on) or stopped talking in a
    conference room (a smoothed level with hysteresis: no flapping on noise)."""

    room_key: str
    uuid: str
    on: bool
    at: float = 0.0  # time.monotonic() when the SIP thread saw it


@dataclass(frozen=True)
class MediaError:
    uuid: str
    reason: str


class EngineError(RuntimeError):
    """The SIP stack could not start or a command failed."""


Emit = Callable[[object], None]


class Engine(Protocol):
    """Commands are async; each returns False (or None) when the call/room is already gone."""

    async def start(self) -> None: ...
    async def stop(self) -> None: ...

    async def housekeeping(self) -> None:
        """Background work the engine needs on the trio side; runs until cancelled."""

    def health(self) -> str | None:
        """None while healthy; otherwise why the node cannot go on (it will exit)."""

    async def answer(self, call_uuid: str, code: int = 200, reason: str = "",
                     warning: str = "") -> bool: ...
    async def hangup(self, call_uuid: str, code: int = 0, reason: str = "") -> bool: ...
    async def join(self, call_uuid: str, room_key: str, muted: bool = False,
                   deaf: bool = False) -> bool: ...
    async def leave(self, call_uuid: str, room_key: str) -> bool:
        """Take the call out of conference room ``room_key``; nothing (False) if the call is
        not in it (any more: it went on to another room meanwhile)."""
    async def set_member(self, call_uuid: str, muted: bool, deaf: bool = False,
                         volume_in: float = 0.0, volume_out: float = 0.0,
                         denoise: bool = False, agc: bool = False) -> bool:
        """The member's mixer state: muted, deaf, its volumes in dB (in: what the room
        hears of it; out: what it hears), whether its voice is denoised and gated, and
        whether its level is set automatically."""
    async def set_coach(self, call_uuid: str, private: bool, target: str | None) -> bool:
        """The call coaches ``target``: heard by it alone (``private`` without a target:
        by nobody); neither flag: an ordinary member."""
    async def dial(self, call_uuid: str, to_uri: str, local_uri: str = "",
                   caller_name: str = "", headers: tuple[tuple[str, str], ...] = ()
                   ) -> str | None:
        """Place an outbound call (through the registered PBX's account when there is one):
        None once the INVITE is on its way, else why it could not be sent. Progress comes
        as DialProgress events, the end as CallEnded."""
    async def pipe(self, call_uuid: str, want: int) -> Any:
        """A pipe (``mixer_ext.streams.Pipe``) on the call's leg for a <Stream>: ``want``
        IN (what it says) and/or OUT (what it hears) up, audio to it down; None without
        media or with a pipe already."""
    async def unpipe(self, call_uuid: str) -> None: ...
    async def add_agent(self, call_uuid: str) -> Any:
        """An AI agent member (no SIP call) with this UUID: its Pipe (16 kHz) is what it
        hears (OUT) and its voice (written down)."""
    async def play_to_call(self, call_uuid: str, clip: Any, loops: int = 1) -> bool: ...
    async def stop_call_sound(self, call_uuid: str) -> bool: ...
    async def play_to_room(self, room_key: str, clip: Any, loops: int = 1) -> int | None: ...
    async def stop_room_sound(self, sound_id: int) -> bool: ...
    async def send_digits(self, call_uuid: str, digits: str, tones: bool = True) -> bool: ...
    async def tap_room(self, room_key: str, tracks: int = 0) -> Any: ...
    async def untap(self, tap: Any) -> None: ...
    async def stats(self, rtp: bool = False) -> dict: ...
    async def reload_tls(self, cert: str, key: str) -> str | None:
        """The SIP TLS listener takes ``cert`` and ``key`` (read again from disk): None if
        taken, else why not."""
