"""Answer XML: the `<Response>` document a customer's web app returns for a call.

Sans-I/O: bytes in, a typed, validated :class:`Document` out (or :class:`AnswerError` saying
exactly what is wrong). Parsing uses defusedxml, so entity tricks in a customer's document
cannot hurt the node. Defaults and ranges follow the reference in ``shared/seeds`` (and
Plivo's documentation for the elements around Conference). Attributes the node does not know
are noted in ``Document.ignored`` (logged once per document), never refused: the official SDK
emits more than the reference lists.

Long (~600 lines) because it is the one document model: each element is a small dataclass and
a reader built from the same attribute helpers, limits and error type; the next split, when
it grows again, is the element readers into their own module beside this one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from sipconf.core.sipmsg import DIAL_NUMBER, DIAL_URI, MAX_DIAL_URI
from sipconf.core.urls import BadUrl, check_url

MAX_ROOM_NAME = 256
MAX_MEMBERS_LIMIT = 20
MAX_TIME_LIMIT = 86400  # the reference's default is also the longest a room timer runs
MAX_DIGIT_PATTERNS = 100
MAX_DIGIT_PATTERN_LENGTH = 32
MAX_ATTRIBUTE_LENGTH = 4096
BEEPS = ("beep:1", "beep:2")
DIGITS_RE = re.compile(r"^[0-9*#A-Da-d]+$")
SEND_DIGITS_RE = re.compile(r"^[0-9*#A-Da-dwW]+$")  # w/W: wait 0.5 s / 1 s (Plivo's)
MAX_SEND_DIGITS = 64  # sendDigits, <DTMF>: characters, waits included
MAX_GET_DIGITS = 99  # numDigits: Plivo's default is also its most
MAX_GET_DIGITS_RETRIES = 10  # GetDigits attempts
MAX_PROMPTS = 20  # nested Play/Speak/Wait in a GetDigits or PreAnswer
MAX_VOICE_NAME = 64
MAX_SSML_DEPTH = 8
LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8}){0,3}$")


@dataclass(frozen=True)
class Limits:
    """What one document may ask for (the node's ``max_*`` options). Numbers past a limit are
    cut to it (noted in ``Document.clamped``); sizes past a limit refuse the document."""

    max_bytes: int = 256 * 1024
    max_elements: int = 100
    max_wait: int = 3600
    max_loops: int = 100
    max_speak_chars: int = 3000


DEFAULT_LIMITS = Limits()


class AnswerError(ValueError):
    """The document cannot be executed; the message says why, for logs and SIP Warning headers.
    ``option`` names the node limit it went past, if that is why."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option


class _BadSound(AnswerError):
    """A sound element that cannot be played: skipped (and logged), the document goes on."""


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
    talk_event: bool = False  # sipconf's own: talking / stopped-talking callbacks
    relay_dtmf: bool = True
    send_digits: str = ""  # sent to the member right after it joins (w/W wait)
    # None: the node's behaviour (the recording starts with the run); True: the same; False:
    # the recording starts once two members are live (Plivo's default, FreeSWITCH's)
    record_when_alone: bool | None = None
    record_tracks: bool = False  # sipconf's own: with record, one file per member too
    coach: str = ""  # sipconf's own: the member (ID or CallUUID) this one coaches on joining
    agent_url: str = ""  # sipconf's own: an AI agent (ws/wss) joins with the run's first member
    agent_content_type: str = "audio/x-l16;rate=16000"
    agent_protocol: str = "plivo"  # sipconf's own: the agent's dialect (STREAM_PROTOCOLS)
    noise_suppression: bool | None = None  # sipconf's own: denoised and gated (None: node's)
    agc: bool | None = None  # sipconf's own: automatic level (None: the node's --agc)


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
    schedule: int = 0  # > 0: hang up this many seconds from now; the document goes on


Prompt = Play | Speak | Wait


@dataclass(frozen=True)
class GetDigits:
    """`<GetDigits>`: prompts (played until the first key), then digits until ``num_digits``,
    ``finish_on_key`` or a timeout; posted to ``action`` as ``Digits``. Defaults are Plivo's;
    ``retries`` is the number of attempts (Plivo's, 1 = one)."""

    action: str | None = None
    method: str = "POST"
    timeout: int = 5
    digit_timeout: int = 2
    finish_on_key: str = "#"  # "" = none
    num_digits: int = MAX_GET_DIGITS
    retries: int = 1
    redirect: bool = True
    play_beep: bool = False
    valid_digits: str = "1234567890*#"
    invalid_digits_sound: str | None = None
    log: bool = True  # False: digits never appear in the node's log
    prompts: tuple[Prompt, ...] = ()


@dataclass(frozen=True)
class PreAnswer:
    """`<PreAnswer>`: its Play/Speak/Wait as early media (183) before the call is answered."""

    prompts: tuple[Prompt, ...] = ()


@dataclass(frozen=True)
class Dtmf:
    """`<DTMF>`: send digits to the caller (RFC 2833, in-band tones if the phone took none)."""

    digits: str
    async_: bool = True  # Plivo: go on at once; False: after the digits have been sent


@dataclass(frozen=True)
class DialTarget:
    """A ``<User>`` (a SIP URI) or ``<Number>`` (a number at the PBX the node registers with)
    of a ``<Dial>``; ``send_digits`` go to the callee once it answers."""

    to: str
    send_digits: str = ""
    headers: tuple[tuple[str, str], ...] = ()  # X-PH-* for its INVITE


@dataclass(frozen=True)
class Dial:
    """`<Dial>`: call the targets at once, bridge the first to answer to the caller until
    either hangs up (or ``time_limit``); then ``action`` gets DialStatus. Defaults are
    Plivo's; ``timeout`` (Plivo: none) is the node's dial-out default, at most 120 s."""

    targets: tuple[DialTarget, ...]
    action: str | None = None
    method: str = "POST"
    redirect: bool = True
    timeout: int = 30
    time_limit: int = 14400
    hangup_on_star: bool = False
    caller_id: str = ""
    caller_name: str = ""
    callback_url: str | None = None
    callback_method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Record:
    """`<Record>` (outside a conference): the caller's voice to a file until ``finish_on_key``,
    ``timeout`` seconds of silence or ``max_length``; then ``action`` gets RecordUrl etc.
    Defaults are Plivo's."""

    action: str | None = None
    method: str = "POST"
    file_format: str = "mp3"
    redirect: bool = True
    timeout: int = 15  # seconds of silence that end it
    max_length: int = 60
    play_beep: bool = True
    finish_on_key: str = "#"  # any of these keys ends it; "" = none
    callback_url: str | None = None
    callback_method: str = "POST"
    transcription_url: str | None = None
    transcription_method: str = "POST"


@dataclass(frozen=True)
class Stream:
    """`<Stream>`: the call's audio to a WebSocket (Plivo's Audio Streaming protocol) and,
    ``bidirectional``, the app's audio back to the caller. Runs beside the rest of the
    document (into a Conference too) until the call ends, ``stream_timeout`` or the socket
    closes; with ``keep_call_alive`` the document waits for it. Defaults are Plivo's."""

    url: str
    bidirectional: bool = False
    audio_track: str = "inbound"  # inbound, outbound or both
    stream_timeout: int = 86400
    status_callback_url: str | None = None
    status_callback_method: str = "POST"
    content_type: str = "audio/x-l16;rate=8000"
    extra_headers: str = ""
    keep_call_alive: bool = False
    protocol: str = "plivo"  # sipconf's own: "twilio" speaks Twilio's Media Streams (μ-law)


Verb = (Conference | Play | Speak | Wait | Redirect | Hangup | GetDigits | PreAnswer | Dtmf
        | Dial | Record | Stream)


@dataclass(frozen=True)
class Document:
    """A parsed `<Response>`: the verbs to run in order, and unknown elements that were skipped."""

    verbs: tuple[Verb, ...]
    skipped: tuple[str, ...] = field(default=())
    # "Element.attribute (why)": attributes accepted but not acted on, each named once
    ignored: tuple[str, ...] = field(default=())
    # (limit option, what was cut): values the document asked for past a node limit
    clamped: tuple[tuple[str, str], ...] = field(default=())


@dataclass
class _Ctx:
    base: str | None
    limits: Limits
    clamped: list[tuple[str, str]] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def ignore(self, what: str) -> None:
        if what not in self.ignored:
            self.ignored.append(what)

    def clamp(self, name: str, value: int, hi: int, option: str) -> int:
        if value <= hi:
            return value
        self.clamped.append((option, f"{name}={value} cut to {hi}"))
        return hi


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


def _url(name: str, value: str, ctx: _Ctx) -> str:
    try:
        return check_url(value, ctx.base)
    except BadUrl as exc:
        raise AnswerError(f"{name}={_show(value)}: {exc}") from None


def _show(value: str) -> str:
    return repr(value if len(value) <= 80 else value[:80] + "...")


def _sound(name: str, value: str, ctx: _Ctx) -> str:
    v = value.strip()
    if v == "" or v.lower() in BEEPS:
        return v.lower()
    return _url(name, v, ctx)


def _send_digits(name: str, value: str) -> str:
    v = value.strip()
    if not v:
        return ""
    if len(v) > MAX_SEND_DIGITS:
        raise AnswerError(f"{name}: longer than {MAX_SEND_DIGITS} characters")
    if not SEND_DIGITS_RE.match(v):
        raise AnswerError(f"{name}={_show(v)}: expected digits (0-9, *, #, A-D) and w/W waits")
    return "".join(c if c in "wW" else c.upper() for c in v)


def _digits_match(name: str, value: str) -> tuple[str, ...]:
    patterns = tuple(p.strip() for p in value.split(",") if p.strip())
    if len(patterns) > MAX_DIGIT_PATTERNS:
        raise AnswerError(f"{name}: more than {MAX_DIGIT_PATTERNS} patterns")
    for p in patterns:
        if len(p) > MAX_DIGIT_PATTERN_LENGTH:
            raise AnswerError(f"{name}: a pattern longer than {MAX_DIGIT_PATTERN_LENGTH} digits")
        if not DIGITS_RE.match(p):
            raise AnswerError(f"{name}={value!r}: {p!r} is not a digit string (0-9, *, #, A-D)")
    return tuple(p.upper() for p in patterns)


# attribute name -> (field name, converter(name, value, parse context))
_CONFERENCE_ATTRS = {
    "muted": ("muted", lambda n, v, c: _bool(n, v)),
    "enterSound": ("enter_sound", _sound),
    "exitSound": ("exit_sound", _sound),
    "maxMembers": ("max_members", lambda n, v, c: _int(n, v, 1, MAX_MEMBERS_LIMIT)),
    "timeLimit": ("time_limit",
                  lambda n, v, c: c.clamp(n, _int(n, v, 1), MAX_TIME_LIMIT, "timeLimit")),
    "hangupOnStar": ("hangup_on_star", lambda n, v, c: _bool(n, v)),
    "stayAlone": ("stay_alone", lambda n, v, c: _bool(n, v)),
    "startConferenceOnEnter": ("start_conference_on_enter", lambda n, v, c: _bool(n, v)),
    "endConferenceOnExit": ("end_conference_on_exit", lambda n, v, c: _bool(n, v)),
    "waitSound": ("wait_sound", _url),
    "record": ("record", lambda n, v, c: _bool(n, v)),
    "recordFileFormat": ("record_file_format", lambda n, v, c: _enum(n, v, ("mp3", "wav"))),
    "transcriptionType": (
        "transcription_type",
        lambda n, v, c: _enum(n, v, ("auto", "hybrid", "manual")),
    ),
    "transcriptionUrl": ("transcription_url", _url),
    "transcriptionMethod": ("transcription_method", lambda n, v, c: _method(n, v)),
    "action": ("action", _url),
    "method": ("method", lambda n, v, c: _method(n, v)),
    "callbackUrl": ("callback_url", _url),
    "callbackMethod": ("callback_method", lambda n, v, c: _method(n, v)),
    "redirect": ("redirect", lambda n, v, c: _bool(n, v)),
    "digitsMatch": ("digits_match", lambda n, v, c: _digits_match(n, v)),
    "floorEvent": ("floor_event", lambda n, v, c: _bool(n, v)),
    "talkEvent": ("talk_event", lambda n, v, c: _bool(n, v)),
    "relayDTMF": ("relay_dtmf", lambda n, v, c: _bool(n, v)),
    "sendDigits": ("send_digits", lambda n, v, c: _send_digits(n, v)),
    # the SDK writes this one with str(): "True"/"False" (_bool takes any case)
    "recordWhenAlone": ("record_when_alone", lambda n, v, c: _bool(n, v)),
    "recordTracks": ("record_tracks", lambda n, v, c: _bool(n, v)),
    "coach": ("coach", lambda n, v, c: _member_ref(n, v)),
    "noiseSuppression": ("noise_suppression", lambda n, v, c: _bool(n, v)),
    "agc": ("agc", lambda n, v, c: _bool(n, v)),
    "agentUrl": ("agent_url", lambda n, v, c: ws_url(n, v)),
    "agentContentType": ("agent_content_type",
                         lambda n, v, c: _enum(n, v.replace(" ", ""), STREAM_CONTENT_TYPES)),
    "agentProtocol": ("agent_protocol", lambda n, v, c: _enum(n, v, STREAM_PROTOCOLS)),
}

# Attributes the official SDK can emit that the node accepts without acting on them: why.
NOT_ACTED_ON = {
    "Wait": {"silence": "silence detection is not implemented: the whole length is waited",
             "minSilence": "silence detection is not implemented",
             "beep": "answering-machine beep detection is not implemented"},
    "Conference": {"beep": "legacy attribute: use enterSound/exitSound"},
    "Dial": {"confirmSound": "call screening is not implemented: the callee is bridged when it "
                             "answers",
             "confirmKey": "call screening is not implemented",
             "confirmTimeout": "call screening is not implemented",
             "dialMusic": "the caller hears silence while the callee rings",
             "digitsMatch": "digit events during a Dial are not implemented",
             "digitsMatchBLeg": "digit events during a Dial are not implemented"},
    "Record": {"recordSession": "background recording of the whole call is not implemented: "
                                "record the call in a <Conference record=\"true\">",
               "startOnDialAnswer": "recording a Dial's bridge is not implemented",
               "recordChannelType": "recordings are mono",
               "transcriptionType": "transcription is local (pocketsphinx), one kind"},
    "Number": {"sendOnPreanswer": "digits are sent once the callee answers"},
    "User": {"sendOnPreanswer": "digits are sent once the callee answers"},
}


def _attrs(el: Element, table: dict, ctx: _Ctx) -> dict:
    """Convert the attributes ``table`` knows; any other is noted in ``ctx.ignored`` (the SDK
    and Plivo's docs have more than the node acts on: ignored, never a refusal)."""
    out = {}
    for name, value in el.attrib.items():
        if name not in table:
            why = NOT_ACTED_ON.get(str(el.tag), {}).get(name, "unknown attribute")
            ctx.ignore(f"{el.tag}.{_show(str(name))[1:-1]} ({why})")
            continue
        if len(value) > MAX_ATTRIBUTE_LENGTH:
            raise AnswerError(f"{el.tag}.{name}: longer than {MAX_ATTRIBUTE_LENGTH} characters")
        fname, conv = table[name]
        out[fname] = conv(f"{el.tag}.{name}", value, ctx)
    return out


def _text(el: Element) -> str:
    return (el.text or "").strip()


def _no_children(el: Element) -> None:
    if len(el):
        raise AnswerError(f"<{el.tag}> must not contain elements (found <{el[0].tag}>)")


def _member_ref(n: str, v: str) -> str:
    """A member of the room named by its ConferenceMemberID or its CallUUID."""
    v = v.strip()
    if not re.fullmatch(r"[A-Za-z0-9\-]{1,64}", v):
        raise AnswerError(f"{n}={_show(v)}: expected a ConferenceMemberID or CallUUID")
    return v


def _conference(el: Element, ctx: _Ctx) -> Conference:
    _no_children(el)
    room = _text(el)
    if not room:
        raise AnswerError("<Conference>: empty room name")
    if len(room) > MAX_ROOM_NAME:
        raise AnswerError(f"<Conference>: room name longer than {MAX_ROOM_NAME} characters")
    if any(ord(c) < 32 for c in room):
        raise AnswerError("<Conference>: room name contains control characters")
    conf = Conference(room=room, **_attrs(el, _CONFERENCE_ATTRS, ctx))
    if conf.transcription_url and not conf.record:
        raise AnswerError("<Conference>: transcriptionUrl needs record=\"true\"")
    return conf


def _loop(n: str, v: str, ctx: _Ctx) -> int:
    return ctx.clamp(n, _int(n, v, 0), ctx.limits.max_loops, "max_play_loops")


_LOOP = ("loop", _loop)


def _play(el: Element, ctx: _Ctx) -> Play:
    _no_children(el)
    attrs = _attrs(el, {"loop": _LOOP}, ctx)
    try:
        url = _url("Play", _text(el), ctx)
    except AnswerError as exc:
        raise _BadSound(str(exc)) from None  # a sound that cannot be had is skipped
    return Play(url=url, **attrs)


def _language(n: str, v: str, ctx: _Ctx) -> str:
    v = v.strip() or "en-US"
    if not LANGUAGE_RE.match(v):
        raise AnswerError(f"{n}={_show(v)}: expected a language tag such as en-US")
    return v


SSML_TAGS = frozenset({"break", "cont", "emphasis", "lang", "p", "phoneme", "prosody", "s",
                       "say-as", "sub", "w"})


def _speak_text(el: Element, ctx: _Ctx) -> str:
    """The text to say: SSML elements the SDK nests (``<break>``, ``<emphasis>``, ...) are read
    for their text (``<sub>`` for its ``alias``); espeak-ng gets plain text, so their effect is
    noted as ignored."""
    parts: list[str] = []

    def walk(node: Element, depth: int = 0) -> None:
        if depth > MAX_SSML_DEPTH:
            raise AnswerError(f"<Speak>: SSML nested deeper than {MAX_SSML_DEPTH}")
        parts.append(node.text or "")
        for child in node:
            tag = str(child.tag)
            if tag not in SSML_TAGS:
                raise AnswerError(f"<Speak> must not contain <{_show(tag)[1:-1]}>")
            ctx.ignore(f"Speak.<{tag}> (SSML is read as plain text)")
            if tag == "sub" and child.get("alias", "").strip():
                parts.append(child.get("alias", ""))
            else:
                walk(child, depth + 1)
            parts.append(child.tail or "")

    walk(el)
    return " ".join(" ".join(parts).split())


def _voice(n: str, v: str, ctx: _Ctx) -> str:
    """Any voice name (WOMAN, MAN, Polly.Joanna, ...): mapped to a local espeak-ng voice when
    spoken (``core.voices``), never refused; only its size is bounded."""
    v = v.strip()
    return v[:MAX_VOICE_NAME] if v else "WOMAN"


def _speak(el: Element, ctx: _Ctx) -> Speak:
    text = _speak_text(el, ctx)
    if not text:
        raise AnswerError("<Speak>: empty text")
    if len(text) > ctx.limits.max_speak_chars:
        raise AnswerError(f"<Speak>: text of {len(text)} characters, longer than "
                          f"{ctx.limits.max_speak_chars} (max_speak_chars)", "max_speak_chars")
    table = {
        "loop": _LOOP,
        "voice": ("voice", _voice),
        "language": ("language", _language),
    }
    return Speak(text=text, **_attrs(el, table, ctx))


def _wait(el: Element, ctx: _Ctx) -> Wait:
    _no_children(el)
    length = ("length", lambda n, v, c: c.clamp(n, _int(n, v, 1), c.limits.max_wait,
                                                 "max_wait_seconds"))
    return Wait(**_attrs(el, {"length": length}, ctx))


def _redirect(el: Element, ctx: _Ctx) -> Redirect:
    _no_children(el)
    table = {"method": ("method", lambda n, v, c: _method(n, v))}
    return Redirect(url=_url("Redirect", _text(el), ctx), **_attrs(el, table, ctx))


def _hangup(el: Element, ctx: _Ctx) -> Hangup:
    _no_children(el)
    table = {"reason": ("reason", lambda n, v, c: v.strip()[:64]),
             "schedule": ("schedule", lambda n, v, c: c.clamp(
                 n, _int(n, v, 0), c.limits.max_wait, "max_wait_seconds"))}
    return Hangup(**_attrs(el, table, ctx))


def _prompts(el: Element, ctx: _Ctx, allowed: tuple[str, ...]) -> tuple[Prompt, ...]:
    """The Play/Speak/Wait nested in a GetDigits or PreAnswer (at most MAX_PROMPTS); a Play
    whose URL cannot be had is skipped like one at the top level."""
    if len(el) > MAX_PROMPTS:
        raise AnswerError(f"<{el.tag}>: more than {MAX_PROMPTS} nested elements")
    out: list[Prompt] = []
    for child in el:
        tag = str(child.tag)
        if tag not in allowed:
            ctx.ignore(f"{el.tag}.<{_show(tag)[1:-1]}> (not allowed here: skipped)")
            continue
        try:
            out.append(_VERBS[tag](child, ctx))
        except _BadSound as exc:
            ctx.ignore(f"{el.tag}.<Play> (skipped: {exc})")
    return tuple(out)


def _finish_on_key(n: str, v: str, c: _Ctx) -> str:
    v = v.strip()
    if v.lower() in ("", "none"):
        return ""
    if len(v) != 1 or v not in "0123456789*#":
        raise AnswerError(f"{n}={_show(v)}: expected one of 0-9, *, #, none or empty")
    return v


def _valid_digits(n: str, v: str, c: _Ctx) -> str:
    v = v.strip().upper()
    if not v or not DIGITS_RE.match(v):
        raise AnswerError(f"{n}={_show(v)}: expected digits (0-9, *, #, A-D)")
    return "".join(sorted(set(v)))


def _get_digits(el: Element, ctx: _Ctx) -> GetDigits:
    secs = lambda n, v, c: c.clamp(n, _int(n, v, 1), c.limits.max_wait,  # noqa: E731
                                   "max_wait_seconds")
    table = {
        "action": ("action", _url),
        "method": ("method", lambda n, v, c: _method(n, v)),
        "timeout": ("timeout", secs),
        "digitTimeout": ("digit_timeout", secs),
        "finishOnKey": ("finish_on_key", _finish_on_key),
        "numDigits": ("num_digits", lambda n, v, c: c.clamp(n, _int(n, v, 1), MAX_GET_DIGITS,
                                                              "numDigits")),
        "retries": ("retries", lambda n, v, c: c.clamp(n, _int(n, v, 1),
                                                        MAX_GET_DIGITS_RETRIES, "retries")),
        "redirect": ("redirect", lambda n, v, c: _bool(n, v)),
        "playBeep": ("play_beep", lambda n, v, c: _bool(n, v)),
        "validDigits": ("valid_digits", _valid_digits),
        "invalidDigitsSound": ("invalid_digits_sound", _url),
        "log": ("log", lambda n, v, c: _bool(n, v)),
    }
    attrs = _attrs(el, table, ctx)
    return GetDigits(prompts=_prompts(el, ctx, ("Speak", "Play", "Wait")), **attrs)


def _pre_answer(el: Element, ctx: _Ctx) -> PreAnswer:
    _attrs(el, {}, ctx)
    return PreAnswer(prompts=_prompts(el, ctx, ("Speak", "Play", "Wait")))


def _dtmf(el: Element, ctx: _Ctx) -> Dtmf:
    _no_children(el)
    digits = _send_digits("DTMF", _text(el))
    if not digits:
        raise AnswerError("<DTMF>: no digits")
    table = {"async": ("async_", lambda n, v, c: _bool(n, v))}
    return Dtmf(digits=digits, **_attrs(el, table, ctx))


MAX_DIAL_TARGETS = 10
MAX_DIAL_TIMEOUT = 120  # seconds a Dial may ring (the control API's dial-out limit too)
MAX_SIP_HEADERS = 8


def _sip_headers(n: str, v: str, c: _Ctx) -> tuple[tuple[str, str], ...]:
    """Plivo's ``sipHeaders="k1=v1,k2=v2"``: sent as ``X-PH-k1: v1`` and so on."""
    out = []
    for part in (p for p in v.split(",") if p.strip()):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not re.fullmatch(r"[A-Za-z0-9\-]{1,40}", key) \
                or not re.fullmatch(r"[\x21-\x7e]{0,128}", value):
            raise AnswerError(f"{n}: {_show(part)} is not name=value (letters, digits, '-'; "
                              "a printable value without spaces)")
        out.append((f"X-PH-{key}", value))
    if len(out) > MAX_SIP_HEADERS:
        raise AnswerError(f"{n}: more than {MAX_SIP_HEADERS} headers")
    return tuple(out)


def _caller_id(n: str, v: str) -> str:
    v = v.strip()
    if v and not DIAL_NUMBER.match(v):
        raise AnswerError(f"{n}={_show(v)}: expected a number or user name (letters, digits, "
                          "+ . - _ * #)")
    return v


def _caller_name(n: str, v: str) -> str:
    v = v.strip()
    if len(v) > 50 or any(ord(c) < 32 or c in '"\\' for c in v):
        raise AnswerError(f"{n}: at most 50 characters, no quotes or control characters")
    return v


def _dial_target(el: Element, ctx: _Ctx) -> DialTarget:
    _no_children(el)
    to = _text(el)
    ok = (DIAL_URI.match(to) and len(to) <= MAX_DIAL_URI) if el.tag == "User" \
        else DIAL_NUMBER.match(to)
    if not ok:
        raise AnswerError(f"<Dial><{el.tag}>{_show(to)}: expected "
                          + ("a SIP URI (sip:user@host[:port])" if el.tag == "User"
                             else "a number (digits, +, *, #)"))
    table = {"sendDigits": ("send_digits", lambda n, v, c: _send_digits(n, v)),
             "sipHeaders": ("headers", _sip_headers)}
    return DialTarget(to=to, **_attrs(el, table, ctx))


def _dial(el: Element, ctx: _Ctx) -> Dial:
    if el.text and el.text.strip():
        raise AnswerError("<Dial>: put the number in a nested <Number> or the SIP URI in a "
                          "<User>")
    targets = []
    for child in el:
        if child.tag not in ("User", "Number"):
            ctx.ignore(f"Dial.<{_show(str(child.tag))[1:-1]}> (not allowed here: skipped)")
            continue
        targets.append(_dial_target(child, ctx))
    if not targets:
        raise AnswerError("<Dial>: no <User> or <Number> to dial")
    if len(targets) > MAX_DIAL_TARGETS:
        raise AnswerError(f"<Dial>: more than {MAX_DIAL_TARGETS} numbers/users")

    def secs(n: str, v: str, c: _Ctx) -> int:
        return c.clamp(n, _int(n, v, 1), MAX_DIAL_TIMEOUT, "timeout")

    table = {
        "action": ("action", _url),
        "method": ("method", lambda n, v, c: _method(n, v)),
        "redirect": ("redirect", lambda n, v, c: _bool(n, v)),
        "timeout": ("timeout", secs),
        "timeLimit": ("time_limit",
                      lambda n, v, c: c.clamp(n, _int(n, v, 1), MAX_TIME_LIMIT, "timeLimit")),
        "hangupOnStar": ("hangup_on_star", lambda n, v, c: _bool(n, v)),
        "callerId": ("caller_id", lambda n, v, c: _caller_id(n, v)),
        "callerName": ("caller_name", lambda n, v, c: _caller_name(n, v)),
        "callbackUrl": ("callback_url", _url),
        "callbackMethod": ("callback_method", lambda n, v, c: _method(n, v)),
        "sipHeaders": ("headers", _sip_headers),
    }
    return Dial(targets=tuple(targets), **_attrs(el, table, ctx))


MAX_RECORD_LENGTH = 3600  # seconds one <Record> may last


def _finish_keys(n: str, v: str, c: _Ctx) -> str:
    v = v.strip()
    if v.lower() in ("", "none"):
        return ""
    if not re.fullmatch(r"[0-9*#]{1,12}", v):
        raise AnswerError(f"{n}={_show(v)}: expected keys among 0-9, *, # (or none)")
    return v


def _record(el: Element, ctx: _Ctx) -> Record:
    _no_children(el)
    table = {
        "action": ("action", _url),
        "method": ("method", lambda n, v, c: _method(n, v)),
        "fileFormat": ("file_format", lambda n, v, c: _enum(n, v, ("mp3", "wav"))),
        "redirect": ("redirect", lambda n, v, c: _bool(n, v)),
        "timeout": ("timeout", lambda n, v, c: c.clamp(n, _int(n, v, 1), c.limits.max_wait,
                                                        "max_wait_seconds")),
        "maxLength": ("max_length", lambda n, v, c: c.clamp(n, _int(n, v, 1),
                                                             MAX_RECORD_LENGTH, "maxLength")),
        "playBeep": ("play_beep", lambda n, v, c: _bool(n, v)),
        "finishOnKey": ("finish_on_key", _finish_keys),
        "callbackUrl": ("callback_url", _url),
        "callbackMethod": ("callback_method", lambda n, v, c: _method(n, v)),
        "transcriptionUrl": ("transcription_url", _url),
        "transcriptionMethod": ("transcription_method", lambda n, v, c: _method(n, v)),
    }
    return Record(**_attrs(el, table, ctx))


STREAM_CONTENT_TYPES = ("audio/x-l16;rate=8000", "audio/x-l16;rate=16000",
                        "audio/x-mulaw;rate=8000")
STREAM_PROTOCOLS = ("plivo", "twilio")  # core/streamproto.py; twilio: μ-law 8 kHz only
MAX_STREAM_SECONDS = 86400


def ws_url(name: str, value: str) -> str:
    """A ws:// or wss:// URL (its host and port checked with the HTTP client's rules)."""
    v = value.strip()
    scheme = v.split(":", 1)[0].lower()
    if scheme not in ("ws", "wss") or len(v) > 2048:
        raise AnswerError(f"{name}={_show(v)}: expected a ws:// or wss:// URL")
    try:
        check_url(("https" if scheme == "wss" else "http") + v[len(scheme):])
    except BadUrl as exc:
        raise AnswerError(f"{name}={_show(v)}: {exc}") from None
    return v


def extra_headers(name: str, value: str) -> str:
    v = value.strip()
    if len(v.encode()) > 512 or not re.fullmatch(r"[A-Za-z0-9=,;]*", v):
        raise AnswerError(f"{name}: at most 512 bytes of key=value pairs (letters and digits)")
    return v


def _stream(el: Element, ctx: _Ctx) -> Stream:
    _no_children(el)
    table = {
        "bidirectional": ("bidirectional", lambda n, v, c: _bool(n, v)),
        "audioTrack": ("audio_track",
                       lambda n, v, c: _enum(n, v, ("inbound", "outbound", "both"))),
        "streamTimeout": ("stream_timeout", lambda n, v, c: c.clamp(
            n, _int(n, v, 1), MAX_STREAM_SECONDS, "streamTimeout")),
        "statusCallbackUrl": ("status_callback_url", _url),
        "statusCallbackMethod": ("status_callback_method", lambda n, v, c: _method(n, v)),
        "contentType": ("content_type",
                        lambda n, v, c: _enum(n, v.replace(" ", ""), STREAM_CONTENT_TYPES)),
        "extraHeaders": ("extra_headers", lambda n, v, c: extra_headers(n, v)),
        "keepCallAlive": ("keep_call_alive", lambda n, v, c: _bool(n, v)),
        "protocol": ("protocol", lambda n, v, c: _enum(n, v, STREAM_PROTOCOLS)),
    }
    attrs = _attrs(el, table, ctx)
    if attrs.get("protocol") == "twilio":
        attrs["content_type"] = twilio_content_type("contentType", attrs.get("content_type"))
    return Stream(url=ws_url("<Stream>", _text(el)), **attrs)


def twilio_content_type(name: str, value: str | None) -> str:
    """Twilio's Media Streams carry μ-law at 8 kHz and nothing else."""
    if value not in (None, STREAM_CONTENT_TYPES[2]):
        raise AnswerError(f"{name}: protocol twilio carries {STREAM_CONTENT_TYPES[2]} only")
    return STREAM_CONTENT_TYPES[2]


_VERBS = {
    "Stream": _stream,
    "Record": _record,
    "Dial": _dial,
    "Conference": _conference,
    "Play": _play,
    "Speak": _speak,
    "Wait": _wait,
    "Redirect": _redirect,
    "Hangup": _hangup,
    "GetDigits": _get_digits,
    "PreAnswer": _pre_answer,
    "DTMF": _dtmf,
}

# Elements that may appear in a sound document (enterSound, exitSound, waitSound URLs).
SOUND_VERBS = (Play, Speak, Wait)


def parse_document(data: bytes | str, base_url: str | None = None,
                   limits: Limits = DEFAULT_LIMITS, *, lenient: bool = False) -> Document:
    """Parse a `<Response>` document; relative URLs resolve against ``base_url``. With
    ``lenient`` an element that is wrong is skipped (named in ``skipped`` with why) instead of
    refusing the whole document."""
    if isinstance(data, str):
        data = data.encode()
    if len(data) > limits.max_bytes:
        raise AnswerError(f"document of {len(data)} bytes, larger than {limits.max_bytes} "
                          "(max_document_bytes)", "max_document_bytes")
    if not data.strip():
        raise AnswerError("empty document")
    try:
        root = SafeET.fromstring(data)
    except DefusedXmlException as exc:
        raise AnswerError(f"forbidden XML construct: {exc.__class__.__name__}") from None
    except (SafeET.ParseError, ValueError, LookupError, RecursionError) as exc:
        # LookupError: an XML declaration naming an encoding Python does not know
        raise AnswerError(f"not valid XML: {exc}") from None
    if root.tag != "Response":
        raise AnswerError(f"root element is <{_show(str(root.tag))[1:-1]}>, expected <Response>")
    if len(root) > limits.max_elements:
        raise AnswerError(f"{len(root)} elements, more than {limits.max_elements} "
                          "(max_document_elements)", "max_document_elements")
    ctx = _Ctx(base_url, limits)
    verbs: list[Verb] = []
    skipped: list[str] = []
    for el in root:
        parser = _VERBS.get(el.tag)
        if parser is None:
            skipped.append(_show(str(el.tag))[1:-1])
            continue
        try:
            verbs.append(parser(el, ctx))
        except AnswerError as exc:
            if not lenient and not isinstance(exc, _BadSound):
                raise
            skipped.append(f"{el.tag} ({exc})")
    return Document(verbs=tuple(verbs), skipped=tuple(skipped), clamped=tuple(ctx.clamped),
                    ignored=tuple(ctx.ignored))


def parse_sound_document(data: bytes | str, base_url: str | None = None,
                         limits: Limits = DEFAULT_LIMITS) -> Document:
    """Parse the document behind an enter/exit/wait sound URL: only Play, Speak, Wait count,
    and one that is wrong (a bad URL, say) is skipped, not the whole sound."""
    doc = parse_document(data, base_url, limits, lenient=True)
    kept = tuple(v for v in doc.verbs if isinstance(v, SOUND_VERBS))
    dropped = tuple(type(v).__name__ for v in doc.verbs if not isinstance(v, SOUND_VERBS))
    return Document(verbs=kept, skipped=doc.skipped + dropped, clamped=doc.clamped,
                    ignored=doc.ignored)


def builtin_document(room: str) -> Document:
    """What a node without an answer URL runs: every call joins the room it dialled."""
    return Document(verbs=(Conference(room=room),))
