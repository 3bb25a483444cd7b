"""URLs from customers' documents and API bodies, checked once where they come in.

The rules are the HTTP client's own (``httpx.URL`` parses each one exactly as a request would)
plus what a request needs to go anywhere: an absolute http(s) URL, a host name or address of
legal characters, a port in range, no control characters, a bounded length. A URL that passes
here cannot make the client raise when the request is built, so a bad one is refused (or its
sound skipped) when the document is read, never when an event is delivered.
"""

from __future__ import annotations

import re
from urllib.parse import urljoin, urlsplit

import httpx

MAX_URL_LENGTH = 4096
_IPV6 = re.compile(r"^\[[0-9A-Fa-f:.]+\]$")


class BadUrl(ValueError):
    """Why a URL cannot be requested (short, for logs and SIP Warning headers)."""


def printable(value: str) -> str:
    """``value`` for a log line: as it is, or repr'd if it holds control characters."""
    return repr(value) if any(ord(c) < 32 or ord(c) == 127 for c in value) else value


def check_url(value: object, base: str | None = None) -> str:
    """The absolute http(s) URL ``value`` stands for (relative to ``base`` if given)."""
    if not isinstance(value, str):
        raise BadUrl(f"expected a URL string, not {type(value).__name__}")
    v = value.strip()
    if not v:
        raise BadUrl("empty URL")
    if len(v) > MAX_URL_LENGTH:
        raise BadUrl(f"URL longer than {MAX_URL_LENGTH} characters")
    bad = next((c for c in v if ord(c) < 32 or ord(c) == 127), None)
    if bad is not None:
        raise BadUrl(f"control character {bad!r} in URL")
    try:
        if base and not urlsplit(v).scheme:
            v = urljoin(base, v)
        parts = urlsplit(v)
        port = parts.port  # raises on a port that is not a number in 0-65535
        url = httpx.URL(v)
        httpx.Request("POST", url, params={"CallUUID": "x"})  # what sending will do
    except (ValueError, TypeError, httpx.InvalidURL) as exc:
        raise BadUrl(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadUrl("expected an absolute http(s) URL")
    host = parts.netloc.rpartition("@")[2]
    host = host.rsplit(":", 1)[0] if not host.endswith("]") and ":" in host else host
    name_ok = host != "" and all(c.isalnum() or c in "._~-" for c in host)
    if not (name_ok or _IPV6.match(host)) or port == 0:
        raise BadUrl(f"bad host or port {parts.netloc.rpartition('@')[2]!r}")
    return v
