"""Requests the node makes to the customer's web app.

For now: the answer-URL (and Redirect) fetch, which must succeed or fail within a bound so a
ringing call gets a clear final response. The durable, signed event worker builds on this.
"""

from __future__ import annotations

import httpx

MAX_DOCUMENT_BYTES = 256 * 1024


class FetchError(Exception):
    """The request failed; ``reason`` is short and human-readable (logged, put in SIP Warning)."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


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


async def fetch_document(client: httpx.AsyncClient, url: str, method: str,
                         params: dict[str, str], timeout: float) -> bytes:
    """GET (params in the query) or POST (form-encoded) ``url``; the body of a 2xx reply."""
    try:
        if method == "GET":
            resp = await client.get(url, params=params, timeout=timeout)
        else:
            resp = await client.post(url, data=params, timeout=timeout)
    except httpx.TimeoutException:
        raise FetchError(url, f"timed out after {timeout:g} s") from None
    except httpx.ConnectError as exc:
        raise FetchError(url, f"cannot connect ({_short(exc)})") from None
    except httpx.HTTPError as exc:
        raise FetchError(url, f"request failed ({_short(exc)})") from None
    if not 200 <= resp.status_code < 300:
        raise FetchError(url, f"HTTP {resp.status_code}")
    if len(resp.content) > MAX_DOCUMENT_BYTES:
        raise FetchError(url, f"document larger than {MAX_DOCUMENT_BYTES} bytes")
    return resp.content


def _short(exc: Exception) -> str:
    text = str(exc) or exc.__class__.__name__
    return text.splitlines()[0][:120]
