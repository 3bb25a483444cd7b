"""The parameters of each request, with Plivo's names and value formats (sans-I/O: plain
functions, times passed in).

- every request about a call (answer, Redirect, action, hangup, sound documents) carries the
  call's parameters (:func:`call_params`): ``CallUUID``, ``From`` (the caller's URI, its port
  kept), ``To``, ``CallerName``, ``Direction``, ``CallStatus``, ``BillRate`` (``0``: the node
  bills nothing), ``Event`` where Plivo sends one (``StartApp`` for the answer, ``Redirect``,
  ``Hangup``), and the INVITE's custom ``X-PH-*`` headers as ``SIP-H-X-PH-*``;
- ``callbackUrl`` events: :func:`conference_params`, exactly the reference's list;
- the hangup request (``hangup_url``): :func:`hangup_params`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

BILL_RATE = "0"
SIP_HEADER_PREFIX = "SIP-H-"

# HangupSource values (Plivo's documented set) the node can give
CALLER, ANSWER_XML, ERROR, PLATFORM = "Caller", "Answer XML", "Error", "Plivo"


def sip_header_params(headers: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Custom SIP headers as Plivo passes them: ``X-PH-Name: value`` -> ``SIP-H-X-PH-Name``."""
    return {SIP_HEADER_PREFIX + name: value for name, value in headers}


def call_params(call_uuid: str, from_uri: str, to: str, caller_name: str,
                status: str = "ringing", event: str | None = "StartApp",
                headers: Sequence[tuple[str, str]] = (), outbound: bool = False
                ) -> dict[str, str]:
    """The parameters of a request about a call (by default: an inbound call's answer
    request)."""
    params = {
        "CallUUID": call_uuid,
        "From": from_uri,
        "To": to,
        "Direction": "outbound" if outbound else "inbound",
        "CallStatus": status,
        "CallerName": caller_name,
        "BillRate": BILL_RATE,
    }
    if event:
        params["Event"] = event
    params.update(sip_header_params(headers))
    return params


def conference_params(action: str, name: str, room_uuid: str, member_id: str, call_uuid: str,
                      **extra: str) -> dict[str, str]:
    """A ``callbackUrl`` event, with exactly the reference's parameters (plus e.g.
    ``ConferenceDigitsMatch`` for digits)."""
    params = {
        "ConferenceAction": action,
        "ConferenceName": name,
        "ConferenceUUID": room_uuid,
        "ConferenceMemberID": member_id,
        "CallUUID": call_uuid,
    }
    params.update(extra)
    return params


def plivo_time(t: float | None) -> str:
    """Plivo's timestamp format (``yyyy-MM-dd HH:mm:ss``, UTC); '' for no time."""
    if t is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def hangup_cause(answered: bool, by_caller: bool, outcome: str, code: int = 0,
                 stopping: bool = False, media_timeout: bool = False) -> tuple[str, str]:
    """(HangupCause, HangupSource) of a call that ended: the standard telephony cause names
    Plivo passes (Q.850 style, as FreeSWITCH spells them). ``outcome`` is the call flow's
    (``answer-url-failed``, ``error`` or ''), ``code`` the SIP code the node refused or hung
    up an unanswered call with (486 busy, 603 rejected), ``by_caller``: the caller hung up
    first, ``media_timeout``: the node hung up because no RTP came (rtp_timeout)."""
    if outcome == "answer-url-failed":
        return "NORMAL_TEMPORARY_FAILURE", ERROR
    if outcome == "error":
        return "NORMAL_TEMPORARY_FAILURE", ERROR
    if media_timeout:
        return "MEDIA_TIMEOUT", PLATFORM
    if by_caller:
        return ("NORMAL_CLEARING" if answered else "ORIGINATOR_CANCEL"), CALLER
    if stopping:
        return "SYSTEM_SHUTDOWN", PLATFORM
    if not answered:
        return ("USER_BUSY" if code == 486 else "CALL_REJECTED"), ANSWER_XML
    return "NORMAL_CLEARING", ANSWER_XML


def hangup_params(call_uuid: str, from_uri: str, to: str, caller_name: str, *,
                  started: float, answered: float | None, ended: float, cause: str,
                  source: str, headers: Sequence[tuple[str, str]] = (),
                  outbound: bool = False) -> dict[str, str]:
    """The ``hangup_url`` request: the call's parameters with ``Event=Hangup``,
    ``CallStatus=completed`` (an inbound call that ended, answered or not), ``HangupCause``,
    ``HangupSource``, ``Duration`` and ``BillDuration`` (whole seconds from the answer, rounded
    up; 0 unanswered: the node bills nothing else), ``StartTime`` / ``AnswerTime`` /
    ``EndTime`` (UTC, Plivo's format; ``AnswerTime`` '' unanswered) and ``TotalCost`` 0."""
    duration = max(0, math.ceil(ended - answered - 1e-6)) if answered is not None else 0
    params = call_params(call_uuid, from_uri, to, caller_name, "completed", "Hangup", headers,
                         outbound)
    params.update({
        "HangupCause": cause,
        "HangupSource": source,
        "Duration": str(duration),
        "BillDuration": str(duration),
        "StartTime": plivo_time(started),
        "AnswerTime": plivo_time(answered),
        "EndTime": plivo_time(ended),
        "TotalCost": "0",
    })
    return params
