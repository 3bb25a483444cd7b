"""The parameters of each request, exactly as the reference lists them (sans-I/O)."""

from __future__ import annotations


def call_params(call_uuid: str, from_uri: str, to: str, caller_name: str,
                status: str = "ringing") -> dict[str, str]:
    """The hosted-platform answer parameters for an inbound call."""
    return {
        "CallUUID": call_uuid,
        "From": from_uri,
        "To": to,
        "Direction": "inbound",
        "CallStatus": status,
        "CallerName": caller_name,
    }


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
