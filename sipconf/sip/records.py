"""What the SIP thread remembers about each call and each mixer room.

Plain records, owned by the SIP thread (never read from trio): the call callbacks create and end
them, the commands and the media placement read and change them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CallRec:
    uuid: str
    call: Any  # the pjsua2 Call
    leg: Any = None  # mixer_ext.streams.Leg
    room_key: str | None = None  # the conference room's mixer, None = the call's own solo room
    mix_key: str | None = None  # the mixer room the leg is in now
    flags: int = 0
    gains: tuple[int, int] = (4096, 4096)
    private: bool = False  # a coach: heard only by coach_of's leg (or, without it, nobody)
    coach_of: str | None = None  # the mixer's Q12 gains: (in, out), 4096 = 0 dB
    overlay: tuple[Any, int] | None = None  # (clip, loops) played to this caller alone
    rfc2833: bool | None = None  # the peer takes telephone-events (None: not tried yet)
    answered: bool = False
    outbound: bool = False  # placed by the node (a dial-out), not taken
    agent: bool = False  # an AI agent member: no SIP call (call None), its leg an Agent
    pipe: Any = None  # mixer_ext.streams.Pipe: a <Stream>'s or the agent's audio
    rang: bool = False  # a dial-out's ringing was reported
    ended: bool = False
    offer_ok: bool = True
    src_ip: str = ""  # where the INVITE came from (calls per source)
    rx_packets: int = -1  # RTP packets received when last looked (media.check_rtp)
    rx_at: float = 0.0  # when that count last moved (or the call was answered, or held)
    media_timeout: bool = False  # hung up by the node for want of RTP


@dataclass
class MixRoomRec:
    mix: Any  # mixer_ext.streams.MixRoom
    members: set[str] = field(default_factory=set)
    sources: set[int] = field(default_factory=set)
