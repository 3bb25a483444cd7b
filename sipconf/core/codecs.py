"""The codecs the node takes: one table, read by everything that needs to know.

The pjsua setup gives these their priorities (and every other codec 0, i.e. off), the INVITE
check (``sipmsg``) accepts an offer only if it names one of them, and a 488's Warning lists them.
Adding or dropping a codec is one line here.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Codec:
    name: str  # the SDP rtpmap encoding name, as we write it
    pjsua_id: str  # pjsua's codec id (encoding/clock rate/channels)
    static_pt: int | None  # RFC 3551 static payload type, None when only dynamic
    priority: int  # pjsua codec priority: higher is preferred in our answers


# Listed in the order the 488 Warning names them; preference is ``priority`` (wideband first).
CODECS: tuple[Codec, ...] = (
    Codec("PCMU", "PCMU/8000/1", 0, 230),
    Codec("PCMA", "PCMA/8000/1", 8, 220),
    Codec("G722", "G722/16000/1", 9, 240),
    Codec("opus", "opus/48000/2", None, 250),
)

# Encoding name (lower case) -> static payload type (None: dynamic only).
BY_ENCODING: dict[str, int | None] = {c.name.lower(): c.static_pt for c in CODECS}


def pjsua_priority(codec_id: str) -> int:
    """The priority pjsua gets for ``codec_id``: ours as listed, anything else 0 (disabled)."""
    for c in CODECS:
        if c.pjsua_id == codec_id:
            return c.priority
    return 0


def no_common_codec_warning() -> str:
    """The Warning text of a 488 to an offer that names none of ours."""
    return "no codec in common: we take " + ", ".join(c.name for c in CODECS)
