"""The node: trio tasks that turn SIP events into answer requests, rooms and mixer commands.

Structure: one nursery for the node; in it, one task (with its own nursery) per call and one per
room run. The engine (the SIP thread) reports events (`engine.IncomingCall`, `CallEnded`, ...)
into a channel that one task drains; a call that hangs up has its task's cancel scope cancelled.

This module is the node's lifecycle, the routing of engine events and the watchdog. What a call
does is ``calls.py`` (driving the sans-I/O ``core/callflow.py``), what happens in a room is
``rooms.py`` (and ``room_recording.py``), the control API's backend is ``control.py``.

Fault containment: every unit of work (a call, a room run, each sound, recording,
transcription, webhook delivery, API request, engine event) runs under ``Faults.guard``: an
unexpected exception is logged with its call/room, counted, and ends only that unit. A call
that faults still sends its exit/action events, then is hung up (500 + Warning if it was not
answered yet). A watchdog ends the node (non-zero exit) if the SIP thread or a mixer clock
stops, so a supervisor restarts it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import trio

from sipconf.calls import CallDriver, CallSession, new_session
from sipconf.config import NodeConfig, tls_files_problem
from sipconf.control import Control
from sipconf.core.answer import Limits
from sipconf.dialout import Dials
from sipconf.engine import (
    CallEnded,
    Dtmf,
    Emit,
    Engine,
    Floor,
    IncomingCall,
    MediaError,
    MediaUp,
    Talk,
)
from sipconf.faults import Faults
from sipconf.http import server as web
from sipconf.http.api import ControlApi
from sipconf.http.metrics import Metrics
from sipconf.http.plivo_api import PlivoApi
from sipconf.media import recording
from sipconf.media.sounds import SoundLibrary
from sipconf.rooms import RoomRun, RoomRuns
from sipconf.webhooks import Spool, WebhookWorker

log = logging.getLogger("sipconf.node")

STOP_FLUSH_S = 1.5  # on stop, how long queued events may take to go out before the spool keeps them
WATCHDOG_S = 0.25  # how often the engine's health is checked


class NodeBroken(RuntimeError):
    """The node cannot go on (its SIP thread died, a mixer clock stalled): it exits non-zero,
    for a supervisor to restart it."""


class Node:
    def __init__(self, config: NodeConfig,
                 engine_factory: Callable[[NodeConfig, Emit], Engine] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None):
        """``engine_factory(config, emit)`` makes the engine (default: the pjsua2 adapter);
        ``transport`` replaces the HTTP clients' network (tests)."""
        self.config = config
        if engine_factory is None:
            from sipconf.sip.engine import SipEngine

            engine_factory = SipEngine
        self.engine: Engine = engine_factory(config, self.post_event)
        self._transport = transport
        self.calls: dict[str, CallSession] = {}
        self.rooms: dict[str, RoomRun] = {}
        self.nursery: trio.Nursery | None = None  # the calls' nursery, while taking calls
        self.call_driver = CallDriver(self)
        self.room_runs = RoomRuns(self)
        self.dials = Dials(self)  # dial-outs ringing
        self.control = Control(self)  # the control API's backend
        self.webhooks: WebhookWorker | None = None
        self._calls_scope = trio.CancelScope()
        self.metrics = Metrics()
        self.faults = Faults()
        self.broken: str | None = None
        self.limits = Limits(max_bytes=config.max_document_bytes,
                             max_elements=config.max_document_elements,
                             max_wait=config.max_wait_seconds, max_loops=config.max_play_loops,
                             max_speak_chars=config.max_speak_chars)
        self._events_in, self._events_out = trio.open_memory_channel[object](float("inf"))
        self._stopping = False

    def stop(self) -> None:
        """Stop gracefully: every call gets a BYE, events still queued get a moment to go out
        (what does not stays in the spool), then ``run`` returns."""
        self._stopping = True
        self._calls_scope.cancel()

    async def reload_tls(self) -> None:
        """SIGHUP: the SIP TLS listener reads its certificate and key files again (a renewed
        certificate without dropping a call); the outcome is logged."""
        if not self.config.sip_tls_port:
            log.info("SIGHUP: no SIP TLS listener, nothing to reload")
            return
        why = await trio.to_thread.run_sync(tls_files_problem, self.config.tls_cert,
                                            self.config.tls_key)
        if why:
            log.error("SIP TLS certificate not reloaded (the listener keeps the one it has): "
                      "%s", why)
            return
        try:
            why = await self.engine.reload_tls(self.config.tls_cert, self.config.tls_key)
        except Exception as exc:  # noqa: BLE001 - a reload must never stop the node
            why = f"{type(exc).__name__}: {exc}"
        if why is None:
            log.info("SIP TLS listener on %d took %s and %s again", self.config.sip_tls_port,
                     self.config.tls_cert, self.config.tls_key)
        else:
            log.error("SIP TLS certificate reload failed: %s", why)

    def health(self) -> str | None:
        """None while the node can take calls; otherwise why not."""
        return self.broken

    @property
    def stopping(self) -> bool:
        """The node is ending its calls itself (stopped, or broken): a hangup request says so."""
        return self._stopping or self.broken is not None

    @property
    def accepting(self) -> bool:
        """The node takes calls (and may still hang them up): not stopped yet."""
        return self.nursery is not None

    def dead_letters(self, limit: int = 100) -> list[dict]:
        return self.control.dead_letters(limit)

    def forget_dead_letter(self, dead_id: int) -> bool:
        return self.control.forget_dead_letter(dead_id)

    def _client(self, timeout: float) -> httpx.AsyncClient:
        return httpx.AsyncClient(follow_redirects=True, transport=self._transport,
                                 timeout=timeout, limits=httpx.Limits(max_connections=100))

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; on the way out every call gets a BYE. Raises NodeBroken when
        the engine stops working."""
        cfg = self.config
        spool = Spool(cfg.spool_path)
        if not cfg.auth_token:
            log.warning("no --auth-token: requests to your web app are not signed")
        try:
            # One client (connection pool) per kind of request: hanging callbacks cannot take
            # the connections a new call's answer needs.
            async with self._client(cfg.answer_timeout) as documents, \
                    self._client(cfg.webhook_timeout) as events, \
                    self._client(cfg.sound_fetch_timeout) as sounds:
                self.sounds = SoundLibrary(
                    sounds, fetch_timeout=cfg.sound_fetch_timeout,
                    cache_bytes=cfg.sound_cache_bytes, max_file_bytes=cfg.max_sound_bytes,
                    max_seconds=cfg.max_sound_seconds, limits=self.limits,
                    fetches=cfg.sound_concurrency, tts_processes=cfg.max_tts_processes,
                    on_limit=self.faults.limit, token=cfg.auth_token,
                    signature=cfg.signature)
                self.webhooks = WebhookWorker(
                    documents, spool, cfg.auth_token, signature=cfg.signature,
                    timeout=cfg.answer_timeout,
                    ttl=cfg.webhook_ttl, backoff_cap=cfg.webhook_max_backoff,
                    concurrency=cfg.webhook_concurrency, events_client=events,
                    event_timeout=cfg.webhook_timeout,
                    document_concurrency=cfg.document_concurrency,
                    max_document_bytes=cfg.max_document_bytes, faults=self.faults)
                rec_dir = Path(cfg.recordings_dir)
                recording.repair(rec_dir)
                if recording.expire(rec_dir, cfg.recording_retention_days):
                    log.info("recordings past their retention deleted")
                self.recordings_dir = rec_dir
                try:
                    async with trio.open_nursery() as nursery:
                        await nursery.start(self.webhooks.run)
                        nursery.start_soon(self._event_loop)
                        nursery.start_soon(self.engine.housekeeping)
                        app = web.NodeApp(web.RecordingsApp(rec_dir),
                                          ControlApi(self.control, cfg.api_token, self.faults),
                                          PlivoApi(self.control, cfg.auth_id, cfg.auth_token,
                                                   self.faults), cfg.api_concurrency)
                        await nursery.start(web.serve, app, cfg.http_bind, cfg.http_port)
                        with self._calls_scope:
                            async with trio.open_nursery() as calls:
                                # SIP starts last: a call may arrive the moment it listens
                                self.nursery = calls
                                await self.engine.start()
                                calls.start_soon(self._watchdog)
                                task_status.started(self)
                                await trio.sleep_forever()
                        # stopping: BYE every call, then a moment for their last events
                        self._stopping = True
                        self.nursery = None
                        await self.engine.stop()
                        with trio.move_on_after(STOP_FLUSH_S):
                            await self.webhooks.flush()
                        nursery.cancel_scope.cancel()
                finally:
                    self._stopping = True
                    self.nursery = None
                    with trio.CancelScope(shield=True):
                        await self.engine.stop()
                    log.info("node stopped")
        finally:
            spool.close()
        if self.broken:
            raise NodeBroken(self.broken)

    async def _watchdog(self) -> None:
        """If the engine breaks (SIP thread dead or stuck, a mixer clock stalled), say so on
        /health and in the log, and stop the node so that it exits non-zero."""
        while True:
            await trio.sleep(WATCHDOG_S)
            reason = None if self._stopping else self.engine.health()
            if reason is not None:
                self.broken = reason
                log.critical("node broken: %s; exiting for a restart", reason)
                self._calls_scope.cancel()
                return

    # --- events from the engine ----------------------------------------------------------------

    def post_event(self, ev: object) -> None:
        """Queue an engine event (called on the trio thread); never raises."""
        try:
            self._events_in.send_nowait(ev)
        except (trio.WouldBlock, trio.ClosedResourceError):
            log.warning("engine event dropped while stopping: %s", type(ev).__name__)

    async def _event_loop(self) -> None:
        """Handle engine events one by one; one that faults ends only its call."""
        async for ev in self._events_out:
            uuid = getattr(ev, "uuid", "")
            try:
                self._on_engine_event(ev)
            except Exception as exc:  # noqa: BLE001 - the boundary of one event
                self.faults.record("sip-event", exc, call_uuid=uuid)
                session = self.calls.get(uuid)
                if session is not None:
                    session.fault = True
                    session.scope.cancel()

    def _on_engine_event(self, ev: object) -> None:
        if isinstance(ev, Floor):
            self.room_runs.on_floor(ev)
            return
        if isinstance(ev, Talk):
            self.room_runs.on_talk(ev)
            return
        if isinstance(ev, IncomingCall):
            if self.nursery is None:
                log.info("call %s arrived while the node is stopping", ev.uuid)
                return
            session = new_session(self, ev)
            self.calls[ev.uuid] = session
            self.nursery.start_soon(self.call_driver.main, session, name=f"call-{ev.uuid}")
            return
        if self.dials.on_event(ev):
            return
        session = self.calls.get(getattr(ev, "uuid", ""))
        if session is None:
            return
        if isinstance(ev, CallEnded):
            session.gone(ev.media_timeout)
            log.info("call %s ended (%s %s)", session.uuid, ev.status, ev.reason,
                     extra={"call_uuid": session.uuid, "event": "call-ended"})
        elif isinstance(ev, MediaUp):
            session.media_rate = ev.rate
        elif isinstance(ev, MediaError):
            log.error("call %s: %s", session.uuid, ev.reason)
        elif isinstance(ev, Dtmf):
            session.stream_key(ev)
            if not session.key(ev):  # a GetDigits takes it, else the call's room
                self.room_runs.on_digit(session, ev)
