"""Dial-out into a room (``POST /v1/rooms/{room}/dial``), as plain logic: the request checked,
its destination held against ``--dial-allow``, the dial rate, the INVITE's outcome named, and
the progress callback's parameters. The node's side (``sipconf/dialout.py``) carries it out.

An answered dial-out runs an ordinary ``<Conference>`` document built from the request's
``attrs`` and parsed like any other, so every attribute means what it means in answer XML and
one that is wrong is refused with the parser's own words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import fnmatchcase
from xml.sax.saxutils import escape, quoteattr

from sipconf.core.answer import (
    AnswerError,
    Conference,
    Dial,
    DialTarget,
    Document,
    Limits,
    parse_document,
)
from sipconf.core.sipmsg import DIAL_NUMBER, DIAL_URI, MAX_DIAL_URI
from sipconf.core.urls import BadUrl, check_url

DEFAULT_TIMEOUT_S = 30
MAX_TIMEOUT_S = 120  # how long a dial-out may ring
MAX_ATTRS = 40
MAX_ATTR_VALUE = 4096
MAX_CALLER_NAME = 64
MAX_HEADERS = 8
_ATTR = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,39}$")
_HEADER = re.compile(r"^X-PH-[A-Za-z0-9\-]{1,40}$")
_HEADER_VALUE = re.compile(r"^[\x20-\x7e]{0,256}$")

# outcomes (DialStatus): the callback's progress and a dial-out's end
RINGING, ANSWERED, BUSY, NO_ANSWER, FAILED, CANCELED = (
    "ringing", "answered", "busy", "no-answer", "failed", "canceled")


@dataclass(frozen=True)
class DialRequest:
    room: str
    to_uri: str  # the Request-URI
    from_user: str  # the caller ID (From's user); "" = the node's own (or the registered AOR)
    caller_name: str
    timeout: int  # seconds it may ring
    callback_url: str | None
    callback_method: str
    conference: Conference  # what the callee joins, once it answers
    headers: tuple[tuple[str, str], ...]  # X-PH-* headers sent with the INVITE
    ignored: tuple[str, ...] = ()  # attrs the Conference element does not know (as in XML)

    @property
    def document(self) -> Document:
        return Document(verbs=(self.conference,))


def _text(body: dict, key: str, pattern: re.Pattern | None, what: str,
          max_len: int = 256) -> str:
    value = body.get(key, "")
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or len(value) > max_len \
            or any(ord(c) < 32 or ord(c) == 127 for c in value) \
            or (value and pattern is not None and not pattern.match(value)):
        raise ValueError(f"{key} must be {what}")
    return value.strip()


def target_uri(to: str, registrar_hostport: str | None) -> str:
    """The Request-URI for ``to``: a SIP URI as given, or a bare number/extension at the PBX
    the node registers with (``--register``)."""
    if to.lower().startswith(("sip:", "sips:")):
        if len(to) > MAX_DIAL_URI or not DIAL_URI.match(to):
            raise ValueError(f"to: not a SIP URI the node can dial (sip:user@host[:port], at "
                             f"most {MAX_DIAL_URI} characters)")
        return to
    if not DIAL_NUMBER.match(to):
        raise ValueError("to must be a SIP URI (sip:user@host) or a number/extension")
    if registrar_hostport is None:
        raise ValueError("to: a bare number needs --register (the PBX that routes it); give "
                         "a SIP URI instead")
    return f"sip:{to}@{registrar_hostport}"


def allowed(uri: str, patterns: tuple[str, ...]) -> bool:
    """``uri`` matches one of the ``--dial-allow`` glob patterns (case-insensitive on the
    whole URI, e.g. ``sip:*@pbx.example.com``, ``sip:+4420*@*``). None: nothing may be
    dialled (no toll fraud by default)."""
    u = uri.lower()
    return any(fnmatchcase(u, p.lower()) for p in patterns)


def conference_xml(room: str, attrs: dict) -> str:
    """A ``<Response><Conference ...>room</Conference></Response>`` document from API attrs
    (values: strings, numbers or booleans, as ``true``/``false``)."""
    if not isinstance(attrs, dict):
        raise ValueError("attrs must be an object of Conference attributes")
    if len(attrs) > MAX_ATTRS:
        raise ValueError(f"attrs: at most {MAX_ATTRS} attributes")
    parts = []
    for key, value in attrs.items():
        if not isinstance(key, str) or not _ATTR.match(key):
            raise ValueError(f"attrs: {key!r} is not an attribute name")
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int | float):
            value = f"{value:g}" if isinstance(value, float) else str(value)
        if not isinstance(value, str) or len(value) > MAX_ATTR_VALUE:
            raise ValueError(f"attrs: {key} must be a string, number or boolean of at most "
                             f"{MAX_ATTR_VALUE} characters")
        parts.append(f" {key}={quoteattr(value)}")
    return f"<Response><Conference{''.join(parts)}>{escape(room)}</Conference></Response>"


def parse_request(room: str, body: dict, *, registrar_hostport: str | None,
                  limits: Limits) -> DialRequest:
    """The checked request, or ValueError saying what is wrong (the API's 400)."""
    to = body.get("to")
    if not isinstance(to, str) or not to.strip():
        raise ValueError("to is required: a SIP URI (sip:user@host) or a number")
    uri = target_uri(to.strip(), registrar_hostport)
    from_user = _text(body, "from", DIAL_NUMBER, "a caller ID (digits, letters, + . - _ * #)", 64)
    name = _text(body, "callerName", None, f"text of at most {MAX_CALLER_NAME} characters",
                 MAX_CALLER_NAME).replace('"', "").replace("\\", "")
    timeout = body.get("timeout", DEFAULT_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) \
            or not 1 <= timeout <= MAX_TIMEOUT_S:
        raise ValueError(f"timeout must be 1-{MAX_TIMEOUT_S} seconds")
    callback = body.get("callbackUrl")
    if callback is not None:
        try:
            callback = check_url(callback)
        except BadUrl as exc:
            raise ValueError(f"callbackUrl: {exc}") from None
    method = body.get("callbackMethod", "POST")
    if method not in ("GET", "POST"):
        raise ValueError("callbackMethod must be GET or POST")
    headers = body.get("headers", {})
    if not isinstance(headers, dict) or len(headers) > MAX_HEADERS or not all(
            isinstance(k, str) and _HEADER.match(k) and isinstance(v, str)
            and _HEADER_VALUE.match(v) for k, v in headers.items()):
        raise ValueError(f"headers must be an object of at most {MAX_HEADERS} X-PH-* headers "
                         "with printable values")
    try:
        doc = parse_document(conference_xml(room, body.get("attrs", {})), limits=limits)
    except AnswerError as exc:
        raise ValueError(f"attrs: {exc}") from None
    (conf,) = doc.verbs
    return DialRequest(room=room, to_uri=uri, from_user=from_user, caller_name=name,
                       timeout=round(timeout), callback_url=callback, callback_method=method,
                       conference=conf, headers=tuple(headers.items()), ignored=doc.ignored)


def outcome(code: int, timed_out: bool, canceled: bool) -> str:
    """How a dial-out that was never answered ended, from the INVITE's final response."""
    if timed_out:
        return NO_ANSWER
    if canceled:
        return CANCELED
    if code in (486, 600, 603):  # busy here, busy everywhere, declined
        return BUSY
    if code in (408, 480, 487):  # no answer in time, unavailable, ended by the far side
        return NO_ANSWER
    return FAILED


class RateLimit:
    """A token bucket: ``rate`` dial-outs a second, ``burst`` at once (time passed in)."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self.tokens, self.at = float(burst), None

    def take(self, now: float) -> float:
        """0 if a dial may start now (and it is counted), else the seconds until one may."""
        if self.at is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def progress_params(call_uuid: str, req: DialRequest, from_uri: str, status: str,
                    code: int = 0, reason: str = "") -> dict[str, str]:
    """The dial-out callback's parameters (``callbackUrl`` of the dial request)."""
    params = {"Event": "DialProgress", "DialStatus": status, "CallUUID": call_uuid,
              "RequestUUID": call_uuid, "Direction": "outbound", "From": from_uri,
              "To": req.to_uri, "ConferenceName": req.room}
    if code:
        params["SIPResponseCode"] = str(code)
    if reason:
        params["SIPResponseReason"] = reason
    return params


# --- <Dial>: the caller bridged to the first callee to answer ----------------------------------

# DialStatus of <Dial>'s action (Plivo's values) for each way a dial-out ends
DIAL_STATUS = {ANSWERED: "completed", BUSY: "busy", NO_ANSWER: "no-answer", FAILED: "failed",
               CANCELED: "failed"}
_CAUSES = {486: "USER_BUSY", 600: "USER_BUSY", 603: "CALL_REJECTED", 404: "UNALLOCATED_NUMBER",
           604: "UNALLOCATED_NUMBER", 408: "NO_ANSWER", 480: "NO_USER_RESPONSE",
           487: "NO_ANSWER", 403: "CALL_REJECTED", 488: "INCOMPATIBLE_DESTINATION"}


def hangup_cause(status: str, code: int) -> str:
    """The telephony cause name (Plivo's DialHangupCause) of a dial-out's end."""
    if status == ANSWERED:
        return "NORMAL_CLEARING"
    if status == NO_ANSWER and code in (0, 487):
        return "NO_ANSWER"
    return _CAUSES.get(code, "NORMAL_TEMPORARY_FAILURE")


def bridge_room(a_uuid: str) -> str:
    """The private room a <Dial> bridges its caller and callee in (listed like any room)."""
    return f"dial:{a_uuid}"


def bridge_conference(a_uuid: str, dial: Dial, target: DialTarget | None = None) -> Conference:
    """The caller's (``target`` None) or a callee's side of a <Dial> bridge: a room of two in
    which either leaving ends it, for at most ``timeLimit``; ``hangupOnStar`` takes the caller
    out (it goes on with the document), a callee gets its ``sendDigits`` once in."""
    return Conference(room=bridge_room(a_uuid), max_members=2, end_conference_on_exit=True,
                      time_limit=dial.time_limit,
                      hangup_on_star=dial.hangup_on_star and target is None,
                      send_digits=target.send_digits if target is not None else "")


def dial_callback_params(action: str, a_uuid: str, b_uuid: str, cause: str = ""
                         ) -> dict[str, str]:
    """<Dial callbackUrl>'s event: the callee answered (``answer``) or hung up (``hangup``)."""
    params = {"DialAction": action, "DialBLegStatus": action, "DialALegUUID": a_uuid,
              "DialBLegUUID": b_uuid}
    if cause:
        params["DialBLegHangupCause"] = cause
    return params


def dial_action_params(a_uuid: str, b_uuid: str, status: str, code: int, rang: bool
                       ) -> dict[str, str]:
    """<Dial action>'s parameters once the dial is over (besides the call's own)."""
    return {"DialStatus": DIAL_STATUS[status], "DialRingStatus": "true" if rang else "false",
            "DialHangupCause": hangup_cause(status, code), "DialALegUUID": a_uuid,
            "DialBLegUUID": b_uuid}
