"""Signing every request the node makes (with ``--auth-token``), in one of three schemes
(``--signature``):

``plivo`` (the default): Plivo's own headers, computed exactly as the official ``plivo`` SDK
validates them, so an app written for Plivo checks them unchanged:

- ``X-Plivo-Signature-V3`` / ``X-Plivo-Signature-V3-Nonce``: standard base64 of
  HMAC-SHA256(token, ``base + "." + nonce``), where ``base`` is the URL as
  ``scheme://netloc/path`` and then, for a GET, ``?k=v&...`` over the URL's query merged with
  the parameters, sorted by key (``plivo.utils.validate_v3_signature(method, uri, nonce, token,
  signature, params)``); for a POST the URL's sorted query (``?k=v&...``, if any), then the form
  parameters as ``keyvalue`` in key order with no separators, after ``.`` (a query) or ``?`` (no
  query). Values are not percent-encoded.
- ``X-Plivo-Signature-Ma-V3``: hosted Plivo signs with the main account's token too (same
  nonce); a node has one account, so it is the V3 signature again, for apps that check it.
- ``X-Plivo-Signature-V2`` / ``X-Plivo-Signature-V2-Nonce``: base64 of HMAC-SHA256(token,
  ``scheme://netloc/path`` + nonce), the query and the parameters not covered
  (``plivo.utils.validate_signature(uri, nonce, signature, token)``).

The URL signed is the one the request is sent to (as the HTTP client normalises it), which is
what a receiver sees as its request URL.

``sipconf``: ``X-Sipconf-Timestamp`` (Unix seconds), ``X-Sipconf-Nonce`` (random hex) and
``X-Sipconf-Signature``, the hex HMAC-SHA256, keyed with the token, of ``timestamp + "\\n" +
nonce + "\\n" + url + "\\n" + urlencode(sorted(params))`` where ``url`` is the configured URL
(without the params a GET adds) and the params are the form fields; unlike Plivo's it covers
the time, so :func:`verify` can refuse a replay.

``both``: the two sets of headers.

:func:`verify` is the receiver's side of either scheme (tests, and apps in Python that do not
use the SDK).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Mapping
from urllib.parse import parse_qs, urlencode, urlparse, urlunparse

PLIVO, SIPCONF, BOTH = "plivo", "sipconf", "both"
SCHEMES = (PLIVO, SIPCONF, BOTH)
V3, V3_NONCE = "X-Plivo-Signature-V3", "X-Plivo-Signature-V3-Nonce"
MA_V3 = "X-Plivo-Signature-Ma-V3"  # hosted Plivo: keyed by the main account's token
V2, V2_NONCE = "X-Plivo-Signature-V2", "X-Plivo-Signature-V2-Nonce"

# --- Plivo V3 / V2 ----------------------------------------------------------------------------


def _base_url(url: str) -> str:
    """``scheme://netloc/path``: what both Plivo schemes start from (port kept; ``;params``,
    query and fragment dropped, as the SDK's urlparse/urlunparse does)."""
    p = urlparse(url)
    return urlunparse((p.scheme, p.netloc, p.path, "", "", ""))


def _query_map(url: str) -> dict[str, list[str]]:
    """The URL's query as the SDK reads it: decoded, empty values kept, repeated keys as lists.
    (The SDK parses it as bytes, which fails on a non-ASCII value: such a query cannot be
    validated with it at all, whatever the node signs.)"""
    return parse_qs(urlparse(url).query, keep_blank_values=True)


def _sorted_query(params: Mapping[str, str | list[str]]) -> str:
    parts = []
    for key in sorted(params):
        value = params[key]
        if isinstance(value, list):
            parts.append("&".join(f"{key}={v}" for v in sorted(value)))
        else:
            parts.append(f"{key}={value}")
    return "&".join(parts)


def plivo_v3_string(method: str, url: str, params: Mapping[str, str], nonce: str) -> str:
    """The string Plivo's V3 signature is the HMAC of (see the module docstring)."""
    base = _base_url(url)
    if method == "GET":
        merged: dict[str, str | list[str]] = dict(params)
        merged.update(_query_map(url))
        query = _sorted_query(merged)
        signed = base + ("?" + query if query else "")
    else:
        query = _sorted_query(_query_map(url))
        signed = base
        if query or params:
            signed += "?" + query
        if query and params:
            signed += "."
        signed += "".join(f"{k}{params[k]}" for k in sorted(params))
    return f"{signed}.{nonce}"


def _hmac_b64(token: str, message: str) -> str:
    digest = hmac.new(token.encode("utf-8"), message.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def plivo_v3(token: str, method: str, url: str, params: Mapping[str, str], nonce: str) -> str:
    """The V3 signature: HMAC-SHA256 of :func:`plivo_v3_string` (UTF-8), base64."""
    return _hmac_b64(token, plivo_v3_string(method, url, params, nonce))


def plivo_v2(token: str, url: str, nonce: str) -> str:
    return _hmac_b64(token, _base_url(url) + nonce)


def plivo_nonce() -> str:
    """20 random digits, the form Plivo's nonces take."""
    return f"{secrets.randbelow(10 ** 20):020d}"


# --- the node's own scheme ----------------------------------------------------------------------


def signature(token: str, url: str, params: Mapping[str, str], timestamp: str,
              nonce: str) -> str:
    """The ``X-Sipconf-Signature`` of a request."""
    message = "\n".join((timestamp, nonce, url, urlencode(sorted(params.items()))))
    return hmac.new(token.encode(), message.encode(), hashlib.sha256).hexdigest()


# --- the one place requests are signed ----------------------------------------------------------


def sign_headers(token: str | None, url: str, params: Mapping[str, str],
                 now: float | None = None, *, method: str = "POST", scheme: str = SIPCONF,
                 sent_url: str | None = None) -> dict[str, str]:
    """The signature headers of one request (none without a token). ``url`` is the configured
    URL, ``params`` the form fields (POST) or the query parameters a GET adds; ``sent_url`` is
    the URL as the HTTP client sends it (for a GET, with the parameters in its query), which
    Plivo's schemes sign, as the receiver sees it; ``url`` when not given."""
    if not token:
        return {}
    headers: dict[str, str] = {}
    if scheme in (PLIVO, BOTH):
        target = sent_url or url
        n3, n2 = plivo_nonce(), plivo_nonce()
        headers[V3] = plivo_v3(token, "GET" if method == "GET" else "POST", target, params, n3)
        headers[V3_NONCE] = n3
        headers[MA_V3] = headers[V3]  # one account on a node: it is its own main account
        headers[V2] = plivo_v2(token, target, n2)
        headers[V2_NONCE] = n2
    if scheme in (SIPCONF, BOTH):
        ts = str(int(time.time() if now is None else now))
        nonce = secrets.token_hex(12)
        headers.update({"X-Sipconf-Timestamp": ts, "X-Sipconf-Nonce": nonce,
                        "X-Sipconf-Signature": signature(token, url, params, ts, nonce)})
    return headers


def verify(token: str, url: str, params: Mapping[str, str], headers: Mapping[str, str],
           max_age: float = 300.0, now: float | None = None, method: str = "POST") -> bool:
    """For receivers: does this request carry a valid signature? The ``X-Sipconf-*`` one (and
    fresh: within ``max_age``) if present, else Plivo's V3 (``url`` as received: for a GET with
    its query, which ``params`` may repeat)."""
    lower = {k.lower(): v for k, v in headers.items()}
    sig = lower.get("x-sipconf-signature")
    if sig is not None:
        ts, nonce = lower.get("x-sipconf-timestamp"), lower.get("x-sipconf-nonce")
        if not (ts and nonce and sig and ts.isdigit()):
            return False
        if abs((time.time() if now is None else now) - int(ts)) > max_age:
            return False
        return hmac.compare_digest(sig, signature(token, url, params, ts, nonce))
    v3, nonce = lower.get(V3.lower()), lower.get(V3_NONCE.lower())
    if not (v3 and nonce):
        return False
    want = plivo_v3(token, method, url, params, nonce)
    return any(hmac.compare_digest(want, s.strip()) for s in v3.split(","))
