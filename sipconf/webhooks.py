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

from sipconf.core.urls import BadUrl, check_url, printable
from sipconf.faults import Faults

log = logging.getLogger("sipconf.webhooks")

MAX_DOCUMENT_BYTES = 256 * 1024
RETRY_STATUSES = {408, 425, 429}


class FetchError(Exception):
    """The request failed; ``reason`` is short and human-readable (logged, put in SIP Warning).
    ``retry`` says whether trying again later may succeed."""

    def __init__(self, url: str, reason: str, retry: bool = True, option: str | None = None):
        super().__init__(f"{printable(url)}: {reason}")
        self.option = option  # the node limit it went past, if that is why
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
                  timeout: float, token: str | None = None, headers: Mapping[str, str] = {},
                  max_bytes: int = MAX_DOCUMENT_BYTES) -> bytes:
    """GET (params in the query) or POST (form-encoded) ``url``; the body of a 2xx reply.
    ``timeout`` bounds the whole request (connect, send, every read), ``max_bytes`` the body.
    Every failure is a :class:`FetchError`; ``retry=False`` when trying again cannot help."""
    try:
        check_url(url)
        hdrs = {**sign_headers(token, url, params), **headers}
        form = {str(k): str(v) for k, v in params.items()}
        with trio.fail_after(timeout):
            if method == "GET":
                req = client.build_request("GET", url, params=form, timeout=timeout, headers=hdrs)
            else:
                req = client.build_request("POST", url, data=form, timeout=timeout, headers=hdrs)
            resp = await client.send(req, stream=True)
            try:
                if not 200 <= resp.status_code < 300:
                    code = resp.status_code
                    raise FetchError(url, f"HTTP {code}",
                                     retry=code >= 500 or code in RETRY_STATUSES)
                chunks, size = [], 0
                async for chunk in resp.aiter_bytes():
                    size += len(chunk)
                    if size > max_bytes:
                        raise FetchError(url, f"document larger than {max_bytes} bytes "
                                              "(max_document_bytes)", retry=False,
                                         option="max_document_bytes")
                    chunks.append(chunk)
                return b"".join(chunks)
            finally:
                await resp.aclose()
    except (trio.TooSlowError, httpx.TimeoutException):
        raise FetchError(url, f"timed out after {timeout:g} s") from None
    except httpx.ConnectError as exc:
        raise FetchError(url, f"cannot connect ({_short(exc)})") from None
    except httpx.HTTPError as exc:
        raise FetchError(url, f"request failed ({_short(exc)})") from None
    except (BadUrl, httpx.InvalidURL, ValueError, TypeError, UnicodeError) as exc:
        # the URL or the parameters can never be sent: no retry will change that
        raise FetchError(url, f"cannot be sent ({_short(exc)})", retry=False) from None


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
    """Undelivered events on disk (SQLite in WAL mode: a commit survives a process crash), and
    the dead letters: events no retry could deliver, kept with the reason for an operator."""

    MAX_DEAD = 10_000  # the oldest dead letters go past this many

    def __init__(self, path: str | Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = self._open(path)
        except sqlite3.DatabaseError as exc:
            # Start-up never fails on what the spool holds: keep the bad file for a look.
            aside = path.with_name(f"{path.name}.broken-{int(time.time())}")
            log.error("webhook spool %s cannot be read (%s): moved to %s, starting empty",
                      path, exc, aside)
            for suffix in ("", "-wal", "-shm"):
                p = Path(str(path) + suffix)
                if p.exists():
                    p.rename(Path(str(aside) + suffix))
            self.db = self._open(path)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT,"
                " key TEXT NOT NULL, url TEXT NOT NULL, method TEXT NOT NULL,"
                " params TEXT NOT NULL, created REAL NOT NULL,"
                " attempts INTEGER NOT NULL DEFAULT 0)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS dead (id INTEGER PRIMARY KEY, key TEXT, url TEXT,"
                " method TEXT, params TEXT, created REAL, attempts INTEGER, reason TEXT,"
                " failed_at REAL)")
            db.execute("SELECT count(*) FROM events").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def add(self, key: str, url: str, method: str, params: Mapping[str, str],
            created: float) -> Event:
        cur = self.db.execute(
            "INSERT INTO events (key, url, method, params, created) VALUES (?, ?, ?, ?, ?)",
            (key, url, method, json.dumps(dict(params)), created))
        return Event(cur.lastrowid, key, url, method, dict(params), created)

    def pending(self) -> list[Event]:
        """Events to resume; a row that cannot be read is moved to the dead letters."""
        out = []
        rows = self.db.execute(
            "SELECT id, key, url, method, params, created, attempts FROM events ORDER BY id")
        for r in rows.fetchall():
            try:
                params = json.loads(r[4])
                if not isinstance(params, dict):
                    raise ValueError("params are not an object")
                ev = Event(int(r[0]), str(r[1]), str(r[2]), str(r[3]),
                           {str(k): str(v) for k, v in params.items()}, float(r[5]), int(r[6]))
            except (TypeError, ValueError) as exc:
                self.db.execute(
                    "INSERT OR REPLACE INTO dead (id, key, url, method, params, created,"
                    " attempts, reason, failed_at) SELECT id, key, url, method, params, created,"
                    " attempts, ?, ? FROM events WHERE id = ?",
                    (f"unreadable spool row: {exc}", time.time(), r[0]))
                self.db.execute("DELETE FROM events WHERE id = ?", (r[0],))
                continue
            out.append(ev)
        return out

    def attempted(self, ev: Event) -> None:
        self.db.execute("UPDATE events SET attempts = ? WHERE id = ?", (ev.attempts, ev.id))

    def remove(self, ev: Event) -> None:
        self.db.execute("DELETE FROM events WHERE id = ?", (ev.id,))

    def bury(self, ev: Event, reason: str) -> None:
        """Move an event to the dead letters (one transaction: never in both, never lost)."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute(
                "INSERT OR REPLACE INTO dead (id, key, url, method, params, created, attempts,"
                " reason, failed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (ev.id, ev.key, ev.url, ev.method, json.dumps(ev.params), ev.created,
                 ev.attempts, reason[:500], time.time()))
            self.db.execute("DELETE FROM events WHERE id = ?", (ev.id,))
            self.db.execute(
                "DELETE FROM dead WHERE id NOT IN (SELECT id FROM dead ORDER BY failed_at DESC"
                " LIMIT ?)", (self.MAX_DEAD,))

    def dead_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM dead").fetchone()[0]

    def dead_letters(self, limit: int = 100) -> list[dict]:
        rows = self.db.execute(
            "SELECT id, key, url, method, params, reason, attempts, created, failed_at FROM dead"
            " ORDER BY failed_at DESC LIMIT ?", (limit,))
        out = []
        for r in rows.fetchall():
            try:
                params = json.loads(r[4])
            except (TypeError, ValueError):
                params = r[4]
            out.append({"id": r[0], "key": r[1], "url": r[2], "method": r[3], "params": params,
                        "reason": r[5], "attempts": r[6], "created": r[7], "failed_at": r[8]})
        return out

    def forget_dead(self, dead_id: int) -> bool:
        return self.db.execute("DELETE FROM dead WHERE id = ?", (dead_id,)).rowcount > 0

    def close(self) -> None:
        self.db.close()


# --- the worker ----------------------------------------------------------------------------------


@dataclass
class _Lane:
    queue: deque[Event] = field(default_factory=deque)
    idle: trio.Event = field(default_factory=trio.Event)


class WebhookWorker:
    """Delivers every request the node makes. ``submit`` never waits (the SIP thread and the
    mixer never see HTTP); lanes are trio tasks in the worker's own nursery.

    Documents and events use separate clients (connection pools) and concurrency limits, so
    callbacks that hang cannot delay a new call's answer. Each delivery is its own unit: an
    unexpected error moves that event to the dead letters and the lane goes on."""

    def __init__(self, client: httpx.AsyncClient, spool: Spool, token: str | None = None,
                 timeout: float = 5.0, ttl: float = 24 * 3600, backoff_base: float = 1.0,
                 backoff_cap: float = 30.0, concurrency: int = 32,
                 events_client: httpx.AsyncClient | None = None, event_timeout: float = 5.0,
                 document_concurrency: int = 64, max_document_bytes: int = MAX_DOCUMENT_BYTES,
                 faults: Faults | None = None):
        self.client = client
        self.events_client = events_client or client
        self.spool = spool
        self.token = token
        self.timeout = timeout
        self.event_timeout = event_timeout
        self.ttl = ttl
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_document_bytes = max_document_bytes
        self.faults = faults or Faults()
        self._limit = trio.CapacityLimiter(concurrency)
        self._documents = trio.CapacityLimiter(document_concurrency)
        self._lanes: dict[str, _Lane] = {}
        self._nursery: trio.Nursery | None = None
        self.delivered = 0
        self.retries = 0
        self.failed = 0
        self.dead = 0  # moved to the dead letters since start

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
        """A document the node needs now: one signed request, bounded in time and size."""
        async with self._documents:
            return await request(self.client, url, method, params,
                                 self.timeout if timeout is None else timeout, self.token,
                                 max_bytes=self.max_document_bytes)

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
                log.info("webhook %s: node stopping, kept in the spool", printable(ev.url))
                return
            lane = self._lanes[ev.key] = _Lane()
            try:
                self._nursery.start_soon(self._lane, ev.key, lane, name=f"webhooks-{ev.key}")
            except RuntimeError:  # the nursery is closing
                del self._lanes[ev.key]
                log.info("webhook %s: node stopping, kept in the spool", printable(ev.url))
                return
        lane.queue.append(ev)

    async def _lane(self, key: str, lane: _Lane) -> None:
        try:
            while lane.queue:
                ev = lane.queue[0]
                await self.faults.guard("webhook", self._deliver, ev, call_uuid=ev.key,
                                        on_fault=lambda exc, ev=ev: self._bury(
                                            ev, f"internal error: {type(exc).__name__}: {exc}"))
                lane.queue.popleft()
        finally:
            lane.idle.set()
            if self._lanes.get(key) is lane:
                del self._lanes[key]

    def _bury(self, ev: Event, reason: str) -> None:
        log.error("webhook %s (%s) for %s: %s: moved to the dead letters", printable(ev.url),
                  ev.params.get("ConferenceAction", "action"), ev.key, reason)
        self.failed += 1
        self.dead += 1
        self.spool.bury(ev, reason)

    async def _deliver(self, ev: Event) -> None:
        while True:
            if time.time() - ev.created > self.ttl:
                self._bury(ev, f"expired after {ev.attempts} attempt(s)")
                return
            ev.attempts += 1
            try:
                async with self._limit:
                    await request(self.events_client, ev.url, ev.method, ev.params,
                                  self.event_timeout, self.token,
                                  {"X-Sipconf-Event-Id": str(ev.id)})
            except FetchError as exc:
                if not exc.retry:
                    self._bury(ev, exc.reason)
                    return
                delay = backoff(ev.attempts, self.backoff_base, self.backoff_cap)
                log.warning("webhook %s: %s; retry %d in %.0f s", printable(ev.url), exc.reason,
                            ev.attempts, delay)
                self.retries += 1
                self.spool.attempted(ev)
                await trio.sleep(delay)
                continue
            self.delivered += 1
            self.spool.remove(ev)
            return
