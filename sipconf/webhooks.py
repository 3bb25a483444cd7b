"""Requests the node makes to the customer's web app: signed, ordered per call, never lost.

Two kinds go through the one :class:`WebhookWorker`:

- *documents* the node needs to go on (answer URL, ``Redirect``, an ``action`` with
  ``redirect=true``): one request with a bound on time, whose reply is parsed;
- *events* (``callbackUrl`` enter/exit/digits/floor, an ``action`` the node only reports):
  written to a SQLite spool first, then delivered in order per call, retried with exponential
  backoff on connection errors, timeouts, 408/429 and 5xx until they are delivered or expire.
  A node restart resumes the spool.

Signing (with ``--auth-token``): every request carries ``X-Sipconf-Timestamp`` (Unix seconds),
``X-Sipconf-Nonce`` (random hex) and ``X-Sipconf-Signature``, the hex HMAC-SHA256, keyed with the
token, of ``timestamp + "\\n" + nonce + "\\n" + url + "\\n" + urlencode(sorted(params))`` where
``url`` is the configured URL (without the params a GET adds) and the params are the form fields.
:func:`verify` is the receiver's side of it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import secrets
import sqlite3
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import httpx
import trio

log = logging.getLogger("sipconf.webhooks")

MAX_DOCUMENT_BYTES = 256 * 1024
RETRY_STATUSES = {408, 425, 429}


class FetchError(Exception):
    """The request failed; ``reason`` is short and human-readable (logged, put in SIP Warning).
    ``retry`` says whether trying again later may succeed."""

    def __init__(self, url: str, reason: str, retry: bool = True):
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason
        self.retry = retry


# --- sans-I/O pieces -----------------------------------------------------------------------------


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


def backoff(attempt: int, base: float = 1.0, cap: float = 30.0) -> float:
    """Delay before retry number ``attempt`` (1, 2, ...): base, 2·base, 4·base ... up to cap."""
    return min(cap, base * math.pow(2, max(0, attempt - 1)))


# --- I/O: one request ----------------------------------------------------------------------------


async def request(client: httpx.AsyncClient, url: str, method: str, params: Mapping[str, str],
                  timeout: float, token: str | None = None, headers: Mapping[str, str] = {}
                  ) -> bytes:
    """GET (params in the query) or POST (form-encoded) ``url``; the body of a 2xx reply."""
    hdrs = {**sign_headers(token, url, params), **headers}
    try:
        if method == "GET":
            resp = await client.get(url, params=dict(params), timeout=timeout, headers=hdrs)
        else:
            resp = await client.post(url, data=dict(params), timeout=timeout, headers=hdrs)
    except httpx.TimeoutException:
        raise FetchError(url, f"timed out after {timeout:g} s") from None
    except httpx.ConnectError as exc:
        raise FetchError(url, f"cannot connect ({_short(exc)})") from None
    except httpx.HTTPError as exc:
        raise FetchError(url, f"request failed ({_short(exc)})") from None
    if not 200 <= resp.status_code < 300:
        code = resp.status_code
        raise FetchError(url, f"HTTP {code}", retry=code >= 500 or code in RETRY_STATUSES)
    if len(resp.content) > MAX_DOCUMENT_BYTES:
        raise FetchError(url, f"document larger than {MAX_DOCUMENT_BYTES} bytes", retry=False)
    return resp.content


def _short(exc: Exception) -> str:
    text = str(exc) or exc.__class__.__name__
    return text.splitlines()[0][:120]


# --- the durable spool ---------------------------------------------------------------------------


@dataclass
class Event:
    """One spooled request. ``key`` orders it (a call's UUID): one call's events go out one
    after another; different keys go out in parallel."""

    id: int
    key: str
    url: str
    method: str
    params: dict[str, str]
    created: float
    attempts: int = 0


class Spool:
    """Undelivered events on disk (SQLite in WAL mode: a commit survives a process crash)."""

    def __init__(self, path: str | Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " key TEXT NOT NULL, url TEXT NOT NULL, method TEXT NOT NULL, params TEXT NOT NULL,"
            " created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0)")

    def add(self, key: str, url: str, method: str, params: Mapping[str, str],
            created: float) -> Event:
        cur = self.db.execute(
            "INSERT INTO events (key, url, method, params, created) VALUES (?, ?, ?, ?, ?)",
            (key, url, method, json.dumps(dict(params)), created))
        return Event(cur.lastrowid, key, url, method, dict(params), created)

    def pending(self) -> list[Event]:
        rows = self.db.execute(
            "SELECT id, key, url, method, params, created, attempts FROM events ORDER BY id")
        return [Event(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

    def attempted(self, ev: Event) -> None:
        self.db.execute("UPDATE events SET attempts = ? WHERE id = ?", (ev.attempts, ev.id))

    def remove(self, ev: Event) -> None:
        self.db.execute("DELETE FROM events WHERE id = ?", (ev.id,))

    def close(self) -> None:
        self.db.close()


# --- the worker ----------------------------------------------------------------------------------


@dataclass
class _Lane:
    queue: deque[Event] = field(default_factory=deque)
    idle: trio.Event = field(default_factory=trio.Event)


class WebhookWorker:
    """Delivers every request the node makes. ``submit`` never waits (the SIP thread and the
    mixer never see HTTP); lanes are trio tasks in the worker's own nursery."""

    def __init__(self, client: httpx.AsyncClient, spool: Spool, token: str | None = None,
                 timeout: float = 5.0, ttl: float = 24 * 3600, backoff_base: float = 1.0,
                 backoff_cap: float = 30.0, concurrency: int = 32):
        self.client = client
        self.spool = spool
        self.token = token
        self.timeout = timeout
        self.ttl = ttl
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._limit = trio.CapacityLimiter(concurrency)
        self._lanes: dict[str, _Lane] = {}
        self._nursery: trio.Nursery | None = None
        self.delivered = 0
        self.retries = 0
        self.failed = 0

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                backlog = self.spool.pending()
                if backlog:
                    log.info("webhook spool: resuming %d undelivered event(s)", len(backlog))
                for ev in backlog:
                    self._enqueue(ev)
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            self._nursery = None
            self._lanes.clear()

    @property
    def depth(self) -> int:
        return sum(len(lane.queue) for lane in self._lanes.values())

    def submit(self, key: str, url: str, method: str, params: Mapping[str, str]) -> None:
        """Spool an event and queue it behind the key's earlier ones."""
        self._enqueue(self.spool.add(key, url, method, params, time.time()))

    async def fetch(self, url: str, method: str, params: Mapping[str, str],
                    timeout: float | None = None) -> bytes:
        """A document the node needs now: one signed request, bounded in time."""
        async with self._limit:
            return await request(self.client, url, method, params,
                                 self.timeout if timeout is None else timeout, self.token)

    async def flush(self) -> None:
        """Wait until nothing is queued (for a graceful stop, under a time bound)."""
        while self._lanes:
            await next(iter(self._lanes.values())).idle.wait()

    async def drained(self, key: str) -> None:
        """Wait until every event queued for ``key`` so far is delivered or given up."""
        lane = self._lanes.get(key)
        if lane is not None:
            await lane.idle.wait()

    def _enqueue(self, ev: Event) -> None:
        """Queue a spooled event for delivery; while the worker is stopping it just stays in
        the spool, for the next start."""
        lane = self._lanes.get(ev.key)
        if lane is None:
            if self._nursery is None:
                log.info("webhook %s: node stopping, kept in the spool", ev.url)
                return
            lane = self._lanes[ev.key] = _Lane()
            try:
                self._nursery.start_soon(self._lane, ev.key, lane, name=f"webhooks-{ev.key}")
            except RuntimeError:  # the nursery is closing
                del self._lanes[ev.key]
                log.info("webhook %s: node stopping, kept in the spool", ev.url)
                return
        lane.queue.append(ev)

    async def _lane(self, key: str, lane: _Lane) -> None:
        try:
            while lane.queue:
                await self._deliver(lane.queue[0])
                lane.queue.popleft()
        finally:
            lane.idle.set()
            if self._lanes.get(key) is lane:
                del self._lanes[key]

    async def _deliver(self, ev: Event) -> None:
        while True:
            if time.time() - ev.created > self.ttl:
                log.error("webhook %s (%s) expired after %d attempt(s): dropped", ev.url,
                          ev.params.get("ConferenceAction", "action"), ev.attempts)
                self.failed += 1
                self.spool.remove(ev)
                return
            ev.attempts += 1
            try:
                async with self._limit:
                    await request(self.client, ev.url, ev.method, ev.params, self.timeout,
                                  self.token, {"X-Sipconf-Event-Id": str(ev.id)})
            except FetchError as exc:
                if not exc.retry:
                    log.error("webhook %s refused the event (%s): dropped", ev.url, exc.reason)
                    self.failed += 1
                    self.spool.remove(ev)
                    return
                delay = backoff(ev.attempts, self.backoff_base, self.backoff_cap)
                log.warning("webhook %s: %s; retry %d in %.0f s", ev.url, exc.reason,
                            ev.attempts, delay)
                self.retries += 1
                self.spool.attempted(ev)
                await trio.sleep(delay)
                continue
            self.delivered += 1
            self.spool.remove(ev)
            return
