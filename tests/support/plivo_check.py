"""Checking a request's signature headers with the official plivo SDK's own validators, as a
Plivo app would (``plivo.utils.signature_v3.validate_v3_signature`` and
``plivo.utils.validate_signature``)."""

from __future__ import annotations

from collections.abc import Mapping

from plivo.utils import validate_signature
from plivo.utils.signature_v3 import validate_v3_signature


def plivo_valid(method: str, uri: str, form: Mapping[str, str], headers: Mapping[str, str],
                token: str) -> bool:
    """True when both the V3 and the V2 validator accept the request. ``uri`` is the URL the
    request was sent to (with its query: a GET's parameters are in it), ``form`` a POST's
    fields."""
    h = {k.lower(): v for k, v in headers.items()}
    need = ("x-plivo-signature-v3", "x-plivo-signature-v3-nonce", "x-plivo-signature-v2",
            "x-plivo-signature-v2-nonce")
    if not all(h.get(k) for k in need):
        return False
    v3 = validate_v3_signature(method, uri, h["x-plivo-signature-v3-nonce"], token,
                               h["x-plivo-signature-v3"],
                               dict(form) if method == "POST" else None)
    v2 = validate_signature(uri, h["x-plivo-signature-v2-nonce"], h["x-plivo-signature-v2"],
                            token)
    return bool(v3 and v2)
