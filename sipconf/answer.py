"""Answer XML: the `<Response>` document a customer's web app returns for a call.

Sans-I/O: bytes in, a typed, validated :class:`Document` out (or :class:`AnswerError` saying
exactly what is wrong). Parsing uses defusedxml, so entity tricks in a customer's document
cannot hurt the node. Defaults and ranges follow the reference in ``shared/seeds``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

MAX_ROOM_NAME = 256
MAX_MEMBERS_LIMIT = 20
BEEPS = ("beep:1", "beep:2")
DIGITS_RE = re.compile(r"^[0-9*#A-Da-d]+$")


class AnswerError(ValueError):
    """The document cannot be executed; the message says why, for logs and SIP Warning headers."""


@dataclass(frozen=True)
class Conference:
    """`<Conference>`: put the caller in a room. Field defaults are the reference's."""

    room: str
    muted: bool = False
    enter_sound: str = ""
    exit_sound: str = ""
    max_members: int = 20
    time_limit: int = 86400
    hangup_on_star: bool = False
    stay_alone: bool = True
    start_conference_on_enter: bool = True
    end_conference_on_exit: bool = False
    wait_sound: str | None = None
    record: bool = False
    record_file_format: str = "mp3"
    transcription_type: str | None = None
    transcription_url: str | None = None
    transcription_method: str = "POST"
    action: str | None = None
    method: str = "POST"
    callback_url: str | None = None
    callback_method: str = "POST"
    redirect: bool = True
    digits_match: tuple[str, ...] = ()
    floor_event: bool = False
    relay_dtmf: bool = True


@dataclass(frozen=True)
class Play:
    url: str
    loop: int = 1  # 0 = forever


@dataclass(frozen=True)
class Speak:
    text: str
    voice: str = "WOMAN"
    language: str = "en-US"
    loop: int = 1


@dataclass(frozen=True)
class Wait:
    length: int = 1


@dataclass(frozen=True)
class Redirect:
    url: str
    method: str = "POST"


@dataclass(frozen=True)
class Hangup:
    reason: str = ""


Verb = Conference | Play | Speak | Wait | Redirect | Hangup


@dataclass(frozen=True)
class Document:
    """A parsed `<Response>`: the verbs to run in order, and unknown elements that were skipped."""

    verbs: tuple[Verb, ...]
    skipped: tuple[str, ...] = field(default=())


# --- attribute converters --------------------------------------------------------------------


def _bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v == "true":
        return True
    if v == "false":
        return False
    raise AnswerError(f"{name}={value!r}: expected true or false")


def _int(name: str, value: str, lo: int, hi: int | None = None) -> int:
    try:
        n = int(value.strip(), 10)
    except ValueError:
        raise AnswerError(f"{name}={value!r}: expected an integer") from None
    if n < lo or (hi is not None and n > hi):
        span = f"{lo}-{hi}" if hi is not None else f">= {lo}"
        raise AnswerError(f"{name}={value!r}: must be {span}")
    return n


def _method(name: str, value: str) -> str:
    v = value.strip().upper()
    if v not in ("GET", "POST"):
        raise AnswerError(f"{name}={value!r}: expected GET or POST")
    return v


def _enum(name: str, value: str, allowed: tuple[str, ...]) -> str:
    v = value.strip().lower()
    if v not in allowed:
        raise AnswerError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
    return v


def _url(name: str, value: str, base: str | None) -> str:
    v = value.strip()
    if not v:
        raise AnswerError(f"{name}: empty URL")
    if base and not urlsplit(v).scheme:
        v = urljoin(base, v)
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise AnswerError(f"{name}={value!r}: expected an absolute http(s) URL")
    return v


def _sound(name: str, value: str, base: str | None) -> str:
    v = value.strip()
    if v == "" or v.lower() in BEEPS:
        return v.lower()
    return _url(name, v, base)


def _digits_match(name: str, value: str) -> tuple[str, ...]:
    patterns = tuple(p.strip() for p in value.split(",") if p.strip())
    for p in patterns:
        if not DIGITS_RE.match(p):
            raise AnswerError(f"{name}={value!r}: {p!r} is not a digit string (0-9, *, #, A-D)")
    return tuple(p.upper() for p in patterns)


# attribute name -> (field name, converter(name, value, base))
_CONFERENCE_ATTRS = {
    "muted": ("muted", lambda n, v, b: _bool(n, v)),
    "enterSound": ("enter_sound", _sound),
    "exitSound": ("exit_sound", _sound),
    "maxMembers": ("max_members", lambda n, v, b: _int(n, v, 1, MAX_MEMBERS_LIMIT)),
    "timeLimit": ("time_limit", lambda n, v, b: _int(n, v, 1)),
    "hangupOnStar": ("hangup_on_star", lambda n, v, b: _bool(n, v)),
    "stayAlone": ("stay_alone", lambda n, v, b: _bool(n, v)),
    "startConferenceOnEnter": ("start_conference_on_enter", lambda n, v, b: _bool(n, v)),
    "endConferenceOnExit": ("end_conference_on_exit", lambda n, v, b: _bool(n, v)),
    "waitSound": ("wait_sound", _url),
    "record": ("record", lambda n, v, b: _bool(n, v)),
    "recordFileFormat": ("record_file_format", lambda n, v, b: _enum(n, v, ("mp3", "wav"))),
    "transcriptionType": (
        "transcription_type",
        lambda n, v, b: _enum(n, v, ("auto", "hybrid", "manual")),
    ),
    "transcriptionUrl": ("transcription_url", _url),
    "transcriptionMethod": ("transcription_method", lambda n, v, b: _method(n, v)),
    "action": ("action", _url),
    "method": ("method", lambda n, v, b: _method(n, v)),
    "callbackUrl": ("callback_url", _url),
    "callbackMethod": ("callback_method", lambda n, v, b: _method(n, v)),
    "redirect": ("redirect", lambda n, v, b: _bool(n, v)),
    "digitsMatch": ("digits_match", lambda n, v, b: _digits_match(n, v)),
    "floorEvent": ("floor_event", lambda n, v, b: _bool(n, v)),
    "relayDTMF": ("relay_dtmf", lambda n, v, b: _bool(n, v)),
}


def _attrs(el: Element, table: dict, base: str | None) -> dict:
    out = {}
    for name, value in el.attrib.items():
        if name not in table:
            known = ", ".join(sorted(table)) or "none"
            raise AnswerError(f"<{el.tag}>: unknown attribute {name!r} (known: {known})")
        fname, conv = table[name]
        out[fname] = conv(f"{el.tag}.{name}", value, base)
    return out


def _text(el: Element) -> str:
    return (el.text or "").strip()


def _no_children(el: Element) -> None:
    if len(el):
        raise AnswerError(f"<{el.tag}> must not contain elements (found <{el[0].tag}>)")


def _conference(el: Element, base: str | None) -> Conference:
    _no_children(el)
    room = _text(el)
    if not room:
        raise AnswerError("<Conference>: empty room name")
    if len(room) > MAX_ROOM_NAME:
        raise AnswerError(f"<Conference>: room name longer than {MAX_ROOM_NAME} characters")
    if any(ord(c) < 32 for c in room):
        raise AnswerError("<Conference>: room name contains control characters")
    conf = Conference(room=room, **_attrs(el, _CONFERENCE_ATTRS, base))
    if conf.transcription_url and not conf.record:
        raise AnswerError("<Conference>: transcriptionUrl needs record=\"true\"")
    return conf


_LOOP = ("loop", lambda n, v, b: _int(n, v, 0))


def _play(el: Element, base: str | None) -> Play:
    _no_children(el)
    return Play(url=_url("Play", _text(el), base), **_attrs(el, {"loop": _LOOP}, base))


def _speak(el: Element, base: str | None) -> Speak:
    _no_children(el)
    text = _text(el)
    if not text:
        raise AnswerError("<Speak>: empty text")
    table = {
        "loop": _LOOP,
        "voice": ("voice", lambda n, v, b: _enum(n, v, ("woman", "man")).upper()),
        "language": ("language", lambda n, v, b: v.strip() or "en-US"),
    }
    return Speak(text=text, **_attrs(el, table, base))


def _wait(el: Element, base: str | None) -> Wait:
    _no_children(el)
    return Wait(**_attrs(el, {"length": ("length", lambda n, v, b: _int(n, v, 1))}, base))


def _redirect(el: Element, base: str | None) -> Redirect:
    _no_children(el)
    table = {"method": ("method", lambda n, v, b: _method(n, v))}
    return Redirect(url=_url("Redirect", _text(el), base), **_attrs(el, table, base))


def _hangup(el: Element, base: str | None) -> Hangup:
    _no_children(el)
    table = {"reason": ("reason", lambda n, v, b: v.strip())}
    return Hangup(**_attrs(el, table, base))


_VERBS = {
    "Conference": _conference,
    "Play": _play,
    "Speak": _speak,
    "Wait": _wait,
    "Redirect": _redirect,
    "Hangup": _hangup,
}

# Elements that may appear in a sound document (enterSound, exitSound, waitSound URLs).
SOUND_VERBS = (Play, Speak, Wait)


def parse_document(data: bytes | str, base_url: str | None = None) -> Document:
    """Parse a `<Response>` document; relative URLs resolve against ``base_url``."""
    if isinstance(data, str):
        data = data.encode()
    if not data.strip():
        raise AnswerError("empty document")
    try:
        root = SafeET.fromstring(data)
    except DefusedXmlException as exc:
        raise AnswerError(f"forbidden XML construct: {exc.__class__.__name__}") from None
    except SafeET.ParseError as exc:
        raise AnswerError(f"not valid XML: {exc}") from None
    if root.tag != "Response":
        raise AnswerError(f"root element is <{root.tag}>, expected <Response>")
    verbs: list[Verb] = []
    skipped: list[str] = []
    for el in root:
        parser = _VERBS.get(el.tag)
        if parser is None:
            skipped.append(str(el.tag))
            continue
        verbs.append(parser(el, base_url))
    return Document(verbs=tuple(verbs), skipped=tuple(skipped))


def parse_sound_document(data: bytes | str, base_url: str | None = None) -> Document:
    """Parse the document behind an enter/exit/wait sound URL: only Play, Speak, Wait count."""
    doc = parse_document(data, base_url)
    kept = tuple(v for v in doc.verbs if isinstance(v, SOUND_VERBS))
    dropped = tuple(type(v).__name__ for v in doc.verbs if not isinstance(v, SOUND_VERBS))
    return Document(verbs=kept, skipped=doc.skipped + dropped)


def builtin_document(room: str) -> Document:
    """What a node without an answer URL runs: every call joins the room it dialled."""
    return Document(verbs=(Conference(room=room),))
