"""Signing (with ``--auth-token``): every request carries ``X-Sipconf-Timestamp`` (Unix
seconds), ``X-Sipconf-Nonce`` (random hex) and ``X-Sipconf-Signature``, the hex HMAC-SHA256,
keyed with the token, of ``timestamp + "\\n" + nonce + "\\n" + url + "\\n" +
urlencode(sorted(params))`` where ``url`` is the configured URL (without the params a GET adds)
and the params are the form fields. :func:`verify` is the receiver's side of it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from urllib.parse import urlencode


def signature(token: str, url: str, params: Mapping[str, str], timestamp: str,
              nonce: str) -> str:
    message = "\n".join((timestamp, nonce, url, urlencode(sorted(params.items()))))
    return hmac.new(token.encode(), message.encode(), hashlib.sha256).hexdigest()


def sign_headers(token: str | None, url: str, params: Mapping[str, str],
                 now: float | None = None) -> dict[str, str]:
    if not token:
        return {}
    ts = str(int(time.time() if now is None else now))
    nonce = secrets.token_hex(12)
    return {"X-Sipconf-Timestamp": ts, "X-Sipconf-Nonce": nonce,
            "X-Sipconf-Signature": signature(token, url, params, ts, nonce)}


def verify(token: str, url: str, params: Mapping[str, str], headers: Mapping[str, str],
           max_age: float = 300.0, now: float | None = None) -> bool:
    """For receivers: does this request carry a valid, fresh signature?"""
    lower = {k.lower(): v for k, v in headers.items()}
    ts, nonce, sig = (lower.get("x-sipconf-timestamp"), lower.get("x-sipconf-nonce"),
                      lower.get("x-sipconf-signature"))
    if not (ts and nonce and sig and ts.isdigit()):
        return False
    if abs((time.time() if now is None else now) - int(ts)) > max_age:
        return False
    return hmac.compare_digest(sig, signature(token, url, params, ts, nonce))
