"""Facts read from raw SIP messages: the dialled user, the caller's name, offered codecs.

Sans-I/O: plain text in, plain values out. pjsua2 hands us the INVITE as text
(`SipRxData.wholeMsg`); these helpers read what the answer request and codec check need.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote

from sipconf.core.codecs import BY_ENCODING, CODECS

# Codecs the node mixes, by rtpmap encoding name (lower case) and static payload type: the
# codec table's (sipconf.core.codecs).
SUPPORTED_CODECS = BY_ENCODING
# Static payload types an offer may name without an rtpmap line: ours, plus a few common ones
# we do not take (so a 488's log line can say what was offered).
_STATIC_PT = {c.static_pt: c.name.lower() for c in CODECS if c.static_pt is not None} | {
    18: "g729", 3: "gsm", 4: "g723"}

_URI_USER = re.compile(r"^(?:sips?|tel):(?:([^@;?]+)@)?", re.I)
_NAME_ADDR = re.compile(r'^\s*(?:"((?:[^"\\]|\\.)*)"|([^<"]*?))\s*<([^>]*)>')


def request_line(msg: str) -> tuple[str, str]:
    """(method, request-URI) of a SIP request's first line."""
    first = msg.split("\r\n", 1)[0].split("\n", 1)[0]
    parts = first.split()
    if len(parts) != 3 or not parts[2].upper().startswith("SIP/"):
        raise ValueError(f"not a SIP request line: {first[:80]!r}")
    return parts[0], parts[1]


def uri_user(uri: str) -> str:
    """The user part of a SIP URI ('' if it has none), percent-decoded."""
    uri = uri.strip()
    m = _NAME_ADDR.match(uri)
    if m:
        uri = m.group(3)
    m = _URI_USER.match(uri)
    if not m or m.group(1) is None:
        return ""
    return unquote(m.group(1).split(":", 1)[0])


def display_name(name_addr: str) -> str:
    """The display name of a From/To value (`"Alice" <sip:a@x>` -> Alice), '' if none."""
    m = _NAME_ADDR.match(name_addr)
    if not m:
        return ""
    if m.group(1) is not None:
        return re.sub(r"\\(.)", r"\1", m.group(1))
    return (m.group(2) or "").strip()


def bare_uri(name_addr: str) -> str:
    """`"Alice" <sip:a@x>;tag=1` -> sip:a@x."""
    m = _NAME_ADDR.match(name_addr)
    if m:
        return m.group(3).strip()
    return name_addr.split(";", 1)[0].strip()


# what the node may put in a dial-out's Request-URI: a SIP(S) URI user@host[:port][;params] (no
# spaces, quotes or brackets), or a bare number/extension for the PBX it registers with
DIAL_URI = re.compile(r"^sips?:(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/%#]{1,64}@)?"
                      r"(?:[A-Za-z0-9.\-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?"
                      r"(?:;[A-Za-z0-9\-_.!~*'()%=]{1,64}){0,8}$")
DIAL_NUMBER = re.compile(r"^[+A-Za-z0-9_.\-*#]{1,64}$")
MAX_DIAL_URI = 256

_COMPACT = {"f": "from", "t": "to", "m": "contact", "i": "call-id", "v": "via"}
MAX_CUSTOM_HEADERS = 20  # X-PH-* headers passed on to the web app, at most
MAX_CUSTOM_NAME = 64
MAX_CUSTOM_VALUE = 256
_CUSTOM_NAME = re.compile(r"^X-PH-[A-Za-z0-9-]+$", re.I)


def headers(msg: str) -> list[tuple[str, str]]:
    """The header fields of a SIP message, in order, as (name, value): folded lines joined,
    names as written (compact forms not expanded), values stripped. Lines without a colon are
    skipped (pjsip parsed the message already; this only reads it)."""
    head = msg.replace("\r\n", "\n").split("\n\n", 1)[0].split("\n")[1:]
    out: list[tuple[str, str]] = []
    for line in head:
        if line[:1] in (" ", "\t") and out:
            name, value = out[-1]
            out[-1] = (name, f"{value} {line.strip()}")
            continue
        name, sep, value = line.partition(":")
        if sep and name.strip():
            out.append((name.strip(), value.strip()))
    return out


def header(msg: str, name: str) -> str | None:
    """The first value of header ``name`` (its compact form too), None if absent."""
    want = name.lower()
    for n, v in headers(msg):
        if _COMPACT.get(n.lower(), n.lower()) == want:
            return v
    return None


def custom_headers(msg: str) -> tuple[tuple[str, str], ...]:
    """The INVITE's custom ``X-PH-*`` headers (Plivo's convention), for the web app: at most
    MAX_CUSTOM_HEADERS, names of letters, digits and '-' up to MAX_CUSTOM_NAME, values cut to
    MAX_CUSTOM_VALUE characters with control characters dropped; a repeated name keeps its
    first value."""
    out: dict[str, str] = {}
    for name, value in headers(msg):
        if len(out) >= MAX_CUSTOM_HEADERS:
            break
        if len(name) > MAX_CUSTOM_NAME or not _CUSTOM_NAME.match(name) or name in out:
            continue
        clean = "".join(c for c in value if c.isprintable())
        out[name] = clean[:MAX_CUSTOM_VALUE]
    return tuple(out.items())


def message_body(msg: str) -> str:
    for sep in ("\r\n\r\n", "\n\n"):
        if sep in msg:
            return msg.split(sep, 1)[1]
    return ""


def session_description(msg: str) -> str:
    """The SDP a request carries: its body, or with a multipart body (RFC 5621: an SDP part
    beside, say, ISUP or a location object) the first application/sdp part; "" if none."""
    body = message_body(msg)
    ctype = header(msg, "content-type") or ""
    if not ctype.lower().lstrip().startswith("multipart/"):
        return body
    m = re.search(r';\s*boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))', ctype, re.I)
    if not m:
        raise ValueError("multipart body without a boundary")
    delimiter = "--" + (m.group(1) or m.group(2))
    for part in body.split(delimiter)[1:]:
        if part.startswith("--"):  # the closing delimiter
            break
        part = part.replace("\r\n", "\n").split("\n", 1)[-1]  # past the delimiter's line
        head, _, content = ("\n" + part).partition("\n\n")  # a part may have no headers
        part_type = next((ln.split(":", 1)[1].strip().lower() for ln in head.split("\n")
                          if ln.lower().startswith("content-type:")), "text/plain")
        if part_type.startswith("application/sdp"):
            return content.rstrip("\n") + "\n"
    return ""


@dataclass(frozen=True)
class Offer:
    """What an SDP offer proposes for audio."""

    has_audio: bool
    codecs: tuple[str, ...]  # encoding names, lower case, in offer order

    @property
    def supported(self) -> tuple[str, ...]:
        return tuple(c for c in self.codecs if c in SUPPORTED_CODECS)


def parse_offer(sdp: str) -> Offer:
    """Audio codecs offered in an SDP body (ValueError if it is not SDP at all)."""
    lines = [ln.strip() for ln in sdp.replace("\r\n", "\n").split("\n") if ln.strip()]
    if not lines or not lines[0].startswith("v="):
        raise ValueError("SDP does not start with v=")
    pts: list[int] = []
    rtpmap: dict[int, str] = {}
    in_audio = False
    has_audio = False
    for ln in lines:
        if ln.startswith("m="):
            fields = ln[2:].split()
            in_audio = len(fields) >= 4 and fields[0] == "audio" and fields[1] != "0"
            if in_audio:
                has_audio = True
                for f in fields[3:]:
                    if f.isdigit():
                        pts.append(int(f))
        elif in_audio and ln.startswith("a=rtpmap:"):
            m = re.match(r"a=rtpmap:(\d+)\s+([^/\s]+)", ln)
            if m:
                rtpmap[int(m.group(1))] = m.group(2).lower()
    codecs = tuple(rtpmap.get(pt) or _STATIC_PT.get(pt, f"pt{pt}") for pt in pts)
    return Offer(has_audio=has_audio, codecs=codecs)
