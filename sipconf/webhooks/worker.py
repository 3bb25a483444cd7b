"""One request (:func:`request`: bounded in time and size, every failure a FetchError) and the
worker that delivers documents and spooled events, one lane per call."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx
import trio

from sipconf.core.backoff import backoff
from sipconf.core.urls import BadUrl, check_url, printable
from sipconf.faults import Faults
from sipconf.webhooks.signing import PLIVO, sign_headers
from sipconf.webhooks.spool import Event, Spool

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


async def request(client: httpx.AsyncClient, url: str, method: str, params: Mapping[str, str],
                  timeout: float, token: str | None = None, headers: Mapping[str, str] = {},
                  max_bytes: int = MAX_DOCUMENT_BYTES, scheme: str = PLIVO) -> bytes:
    """GET (params in the query) or POST (form-encoded) ``url``; the body of a 2xx reply,
    signed (``signing.sign_headers``, ``scheme``) when there is a ``token``.
    ``timeout`` bounds the whole request (connect, send, every read), ``max_bytes`` the body.
    Every failure is a :class:`FetchError`; ``retry=False`` when trying again cannot help."""
    try:
        check_url(url)
        form = {str(k): str(v) for k, v in params.items()}
        with trio.fail_after(timeout):
            if method == "GET":
                # the parameters join the URL's own query (httpx's params= would replace it)
                req = client.build_request("GET", httpx.URL(url).copy_merge_params(form),
                                           timeout=timeout)
            else:
                req = client.build_request("POST", url, data=form, timeout=timeout)
            # signed as sent: Plivo's signatures cover the URL the receiver sees
            req.headers.update({**sign_headers(token, url, form, method=method, scheme=scheme,
                                               sent_url=str(req.url)), **headers})
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
                 signature: str = PLIVO,
                 timeout: float = 5.0, ttl: float = 24 * 3600, backoff_base: float = 1.0,
                 backoff_cap: float = 30.0, concurrency: int = 32,
                 events_client: httpx.AsyncClient | None = None, event_timeout: float = 5.0,
                 document_concurrency: int = 64, max_document_bytes: int = MAX_DOCUMENT_BYTES,
                 faults: Faults | None = None):
        self.client = client
        self.events_client = events_client or client
        self.spool = spool
        self.token = token
        self.signature = signature  # signing.SCHEMES: plivo, sipconf or both
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
                                 max_bytes=self.max_document_bytes, scheme=self.signature)

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
                                  {"X-Sipconf-Event-Id": str(ev.id)}, scheme=self.signature)
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
