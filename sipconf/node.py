"""The node: trio tasks that turn SIP events into answer requests, rooms and mixer commands.

Structure: one nursery for the node; in it, one task (with its own nursery) per call and one per
room run. The engine (the SIP thread) reports events (`engine.IncomingCall`, `CallEnded`, ...)
into a channel that one task drains; a call that hangs up has its task's cancel scope cancelled.

Fault containment: every unit of work (a call, a room run, each sound, recording,
transcription, webhook delivery, API request, engine event) runs under ``Faults.guard``: an
unexpected exception is logged with its call/room, counted, and ends only that unit. A call
that faults still sends its exit/action events, then is hung up (500 + Warning if it was not
answered yet). A watchdog ends the node (non-zero exit) if the SIP thread or a mixer clock
stops, so a supervisor restarts it.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import trio

from sipconf.config import NodeConfig
from sipconf.core import room as roomstate
from sipconf.core.answer import (
    LANGUAGE_RE,
    AnswerError,
    Conference,
    Document,
    Hangup,
    Limits,
    Play,
    Redirect,
    Speak,
    Wait,
    builtin_document,
    parse_document,
)
from sipconf.core.digits import DigitCollector
from sipconf.core.urls import BadUrl, check_url
from sipconf.engine import (
    CallEnded,
    Dtmf,
    Emit,
    Engine,
    EngineError,
    Floor,
    IncomingCall,
    MediaError,
    MediaUp,
)
from sipconf.faults import Faults
from sipconf.http import server as web
from sipconf.http.api import ControlApi
from sipconf.http.metrics import Metrics, render
from sipconf.media import recording
from sipconf.media.sounds import SoundError, SoundLibrary, SoundLimit
from sipconf.webhooks import FetchError, Spool, WebhookWorker, call_params, conference_params

log = logging.getLogger("sipconf.node")

DEFAULT_ROOM = "default"
HANGUP_CODES = {"busy": 486, "rejected": 603}
STOP_FLUSH_S = 1.5  # on stop, how long queued events may take to go out before the spool keeps them
WATCHDOG_S = 0.25  # how often the engine's health is checked


class NodeBroken(RuntimeError):
    """The node cannot go on (its SIP thread died, a mixer clock stalled): it exits non-zero,
    for a supervisor to restart it."""


@dataclass
class CallSession:
    incoming: IncomingCall
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    answered: bool = False
    ended: bool = False
    room: RoomRun | None = None
    member: roomstate.Member | None = None
    left_room: trio.Event = field(default_factory=trio.Event)
    leave_reason: str = ""
    media_rate: int | None = None
    document_url: str | None = None
    nursery: trio.Nursery | None = None
    digits: DigitCollector | None = None  # while in a room
    conference: Conference | None = None  # the Conference the call is in, until its action
    room_uuid: str = ""
    outcome: str = ""  # set when the call did not simply run its course
    record_params: dict[str, str] = field(default_factory=dict)  # of the room run it was in
    documents: int = 0  # answer, Redirect and action documents fetched so far

    @property
    def uuid(self) -> str:
        return self.incoming.uuid


@dataclass
class RoomRun:
    """One run of a room: its sans-I/O state, and the trio task (with its nursery) that owns
    the run's timer, sounds and wait music. Engine commands for the room go through ``actions``
    and run in order, so a leg is always joined before it is muted, unmuted or left."""

    state: roomstate.Room
    key: str = ""  # the run's ConferenceUUID, also its mixer room
    ended: trio.Event = field(default_factory=trio.Event)
    nursery: trio.Nursery | None = None
    timer: trio.CancelScope | None = None
    music: dict[str, trio.CancelScope] = field(default_factory=dict)
    floor: str | None = None  # call uuid of the member holding the floor
    recording: recording.Recording | None = None
    record_params: dict[str, str] = field(default_factory=dict)  # RecordUrl, RecordingID
    record_scope: trio.CancelScope | None = None
    sounds: int = 0  # room sounds playing or being fetched (max_room_sounds)

    def __post_init__(self) -> None:
        self.send, self.recv = trio.open_memory_channel[Callable[[], Awaitable[object]]](
            float("inf"))

    def do(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        try:
            self.send.send_nowait(lambda: fn(*args))
        except trio.ClosedResourceError:
            pass  # the run is over; its mixer room is gone with it


class Node:
    def __init__(self, config: NodeConfig,
                 engine_factory: Callable[[NodeConfig, Emit], Engine] | None = None,
                 transport: httpx.AsyncBaseTransport | None = None):
        """``engine_factory(config, emit)`` makes the engine (default: the pjsua2 adapter);
        ``transport`` replaces the HTTP clients' network (tests)."""
        self.config = config
        if engine_factory is None:
            from sipconf.sip.adapter import SipEngine

            engine_factory = SipEngine
        self.engine: Engine = engine_factory(config, self.post_event)
        self._transport = transport
        self.calls: dict[str, CallSession] = {}
        self.rooms: dict[str, RoomRun] = {}
        self._nursery: trio.Nursery | None = None
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

    def health(self) -> str | None:
        """None while the node can take calls; otherwise why not."""
        return self.broken

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
                    on_limit=self.faults.limit)
                self.webhooks = WebhookWorker(
                    documents, spool, cfg.auth_token, timeout=cfg.answer_timeout,
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
                                          ControlApi(self, cfg.api_token, self.faults))
                        await nursery.start(web.serve, app, cfg.http_bind, cfg.http_port)
                        with self._calls_scope:
                            async with trio.open_nursery() as calls:
                                # SIP starts last: a call may arrive the moment it listens
                                self._nursery = calls
                                await self.engine.start()
                                calls.start_soon(self._watchdog)
                                task_status.started(self)
                                await trio.sleep_forever()
                        # stopping: BYE every call, then a moment for their last events
                        self._stopping = True
                        self._nursery = None
                        await self.engine.stop()
                        with trio.move_on_after(STOP_FLUSH_S):
                            await self.webhooks.flush()
                        nursery.cancel_scope.cancel()
                finally:
                    self._stopping = True
                    self._nursery = None
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
                    session.outcome = "error"
                    session.scope.cancel()

    def _on_engine_event(self, ev: object) -> None:
        if isinstance(ev, Floor):
            self._on_floor(ev)
            return
        if isinstance(ev, IncomingCall):
            if self._nursery is None:
                log.info("call %s arrived while the node is stopping", ev.uuid)
                return
            session = CallSession(ev)
            self.calls[ev.uuid] = session
            self._nursery.start_soon(self._call_main, session, name=f"call-{ev.uuid}")
            return
        session = self.calls.get(getattr(ev, "uuid", ""))
        if session is None:
            return
        if isinstance(ev, CallEnded):
            session.ended = True
            session.scope.cancel()
            log.info("call %s ended (%s %s)", session.uuid, ev.status, ev.reason,
                     extra={"call_uuid": session.uuid, "event": "call-ended"})
        elif isinstance(ev, MediaUp):
            session.media_rate = ev.rate
        elif isinstance(ev, MediaError):
            log.error("call %s: %s", session.uuid, ev.reason)
        elif isinstance(ev, Dtmf):
            self._on_digit(session, ev)

    def _on_floor(self, ev: Floor) -> None:
        run = next((r for r in self.rooms.values() if r.key == ev.room_key), None)
        if run is not None:
            self._give_floor(run, ev.uuid)

    # --- live control (the HTTP API) -----------------------------------------------------------

    async def rooms_info(self) -> list[dict]:
        legs = (await self.engine.stats())["legs"]
        return [self._room_dict(run, legs) for run in list(self.rooms.values())]

    async def room_info(self, name: str) -> dict | None:
        run = self.rooms.get(name)
        if run is None:
            return None
        return self._room_dict(run, (await self.engine.stats())["legs"])

    def _room_dict(self, run: RoomRun, legs: dict) -> dict:
        now_wall, now = time.time(), trio.current_time()
        members = []
        for m in run.state.members.values():
            s = self.calls.get(m.call_uuid)
            members.append({
                "member_id": m.member_id, "call_uuid": m.call_uuid,
                "from": s.incoming.from_uri if s else "", "muted": m.muted, "deaf": m.deaf,
                "waiting": m.waiting, "talking": legs.get(m.call_uuid, {}).get("talking", False),
                "floor": run.floor == m.call_uuid,
                "joined_at": round(now_wall - (now - m.joined_at), 3)})
        return {"name": run.state.name, "uuid": run.key, "members": members}

    async def member_action(self, room: str, member_id: str, action: str) -> bool:
        run = self.rooms.get(room)
        member = next((m for m in run.state.members.values() if m.member_id == member_id),
                      None) if run else None
        if member is None:
            return False
        log.info("control API: %s member %s of room %s", action, member_id, room)
        uuid = member.call_uuid
        if action == "hangup":
            return await self.engine.hangup(uuid)
        if action == "kick":
            self._apply(run, run.state.leave(uuid, roomstate.KICKED))
        else:
            flag = {"mute": ("muted", True), "unmute": ("muted", False),
                    "deaf": ("deaf", True), "undeaf": ("deaf", False)}[action]
            self._apply(run, run.state.control(uuid, **{flag[0]: flag[1]}))
        return True

    async def metrics_text(self) -> str:
        w = self.webhooks
        try:
            engine = await self.engine.stats(rtp=True)
        except EngineError as exc:  # a broken engine: the node's own figures still count
            log.warning("metrics without engine figures: %s", exc)
            engine = {"rtp": {}}
        rooms = {m.call_uuid: run.state.name for run in self.rooms.values()
                 for m in run.state.members.values()}
        for uuid, st in engine.get("rtp", {}).items():
            st["room"] = rooms.get(uuid, "")
        return render(self.metrics, calls=len(self.calls), rooms=len(self.rooms),
                      legs=sum(len(r.state.members) for r in self.rooms.values()),
                      engine=engine,
                      webhooks={"depth": w.depth, "delivered": w.delivered,
                                "retries": w.retries, "failed": w.failed,
                                "dead_letters": w.spool.dead_count()},
                      faults=self.faults)

    def dead_letters(self, limit: int = 100) -> list[dict]:
        return self.webhooks.spool.dead_letters(limit)

    def forget_dead_letter(self, dead_id: int) -> bool:
        return self.webhooks.spool.forget_dead(dead_id)

    def start_recording(self, run: RoomRun, fmt: str,
                        owner: roomstate.Member | None = None) -> bool:
        """Record the run from now (the XML's record, or the control API); ``owner`` gets
        the record event. One recording at a time."""
        if run.recording is not None or run.nursery is None:
            return False
        run.recording = recording.Recording.create(self.recordings_dir, fmt)
        run.record_params = {
            "RecordUrl": f"{self.config.base_url}/recordings/{run.recording.filename}",
            "RecordingID": run.recording.recording_id}
        run.record_scope = trio.CancelScope()
        self._spawn(run, "recording", self._record, run, owner, run.record_scope)
        return True

    async def room_command(self, room: str, command: str, body: dict) -> dict | None:
        """Control API room commands: play, speak, record/start, record/stop. None: no room.
        A reply with ``ok`` False carries ``error`` and the HTTP ``status`` (400 or 409)."""
        run = self.rooms.get(room)
        if run is None:
            return None
        target = None
        if body.get("member_id") is not None:
            target = next((m for m in run.state.members.values()
                           if m.member_id == str(body["member_id"])), None)
            if target is None:
                return None
        if command in ("play", "speak"):
            return await self._api_sound(run, command, body, target)
        if command == "record/start":
            owner = next((m for m in run.state.members.values() if m.conference.callback_url),
                         None)
            fmt = body.get("format", "mp3")
            if not isinstance(fmt, str) or fmt not in recording.FORMATS:
                return {"ok": False, "error": "format must be mp3 or wav", "status": 400}
            ok = self.start_recording(run, fmt, owner)
            return {"ok": ok, **(run.record_params if ok else
                                 {"error": "already recording", "status": 409})}
        if command == "record/stop":
            if run.recording is None:
                return {"ok": False, "error": "not recording", "status": 409}
            params = dict(run.record_params)
            run.record_scope.cancel()
            return {"ok": True, **params}
        return None

    async def _api_sound(self, run: RoomRun, command: str, body: dict,
                         target: roomstate.Member | None) -> dict:
        """play/speak from the API: the body is checked like a document, the room's sound
        limit is kept (409 past it), the sound fetched or rendered, then played."""
        try:
            if command == "play":
                url = check_url(body.get("url"))
            else:
                text, voice = body.get("text"), body.get("voice", "WOMAN")
                language = body.get("language", "en-US")
                if not isinstance(text, str) or not text.strip():
                    raise ValueError("text must be a non-empty string")
                if len(text) > self.config.max_speak_chars:
                    raise ValueError(f"text longer than {self.config.max_speak_chars} "
                                     "characters (max_speak_chars)")
                if not isinstance(voice, str) or voice.upper() not in ("WOMAN", "MAN"):
                    raise ValueError("voice must be WOMAN or MAN")
                if not isinstance(language, str) or not LANGUAGE_RE.match(language):
                    raise ValueError("language must be a tag such as en-US")
        except (BadUrl, ValueError) as exc:
            return {"ok": False, "error": f"{'url' if command == 'play' else 'body'}: {exc}",
                    "status": 400}
        session = self.calls.get(target.call_uuid) if target is not None else None
        if target is None and not self._reserve_sound(run, f"API {command}"):
            return {"ok": False, "status": 409,
                    "error": f"room has {run.sounds} sounds playing, the most it may "
                             f"(max_room_sounds={self.config.max_room_sounds})"}
        playing = False
        try:
            clip = (await self.sounds.audio(url) if command == "play"
                    else await self.sounds.speech(text.strip(), voice.upper(), language))
            if target is None:
                playing = self._spawn(run, "sound", self._play_in_room, run, clip, True)
        except SoundError as exc:
            if isinstance(exc, SoundLimit):
                self.faults.limit(exc.option)
            return {"ok": False, "error": str(exc), "status": 400}
        finally:
            if target is None and not playing:
                run.sounds -= 1  # the place reserved above (the request failed or was dropped)
        if target is not None and session is not None:
            self._spawn(run, "sound", self._clip_to_member, run, session, target, clip)
        return {"ok": True, "seconds": round(clip.duration, 3)}

    def end_room(self, room: str) -> bool:
        run = self.rooms.get(room)
        if run is None:
            return False
        log.info("control API: end room %s", room)
        self._apply(run, run.state.end())
        return True

    # --- one call ------------------------------------------------------------------------------

    async def _call_main(self, s: CallSession) -> None:
        """One call, supervised: a fault ends this call alone, after its exit/action events."""
        inc = s.incoming
        log.info("call %s from %s to %s", s.uuid, inc.from_uri, inc.to_uri,
                 extra={"call_uuid": s.uuid, "event": "call-incoming"})
        try:
            if not await self.faults.guard("call", self._call_run, s, call_uuid=s.uuid):
                s.outcome = "error"
        finally:
            self.faults.call_soon("call", self._call_done, s, call_uuid=s.uuid)
        if not s.ended and self._nursery is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self.faults.guard("call", self._call_hangup, s, call_uuid=s.uuid)

    async def _call_run(self, s: CallSession) -> None:
        try:
            with s.scope:
                async with trio.open_nursery() as call_nursery:
                    s.nursery = call_nursery
                    doc = await self._first_document(s)
                    if doc is not None:
                        await self._execute(s, doc)
        except _CallGone:
            s.ended = True

    def _call_done(self, s: CallSession) -> None:
        """The call's task is over: out of its room (exit event), then its action is reported
        if it was still in a Conference."""
        try:
            self._leave_room(s)
            if s.conference is not None and s.conference.action:
                # the call ended (or the node is stopping) in the room: after the exit
                # event, the action is only reported
                conf, s.conference = s.conference, None
                self.webhooks.submit(s.uuid, conf.action, conf.method,
                                     self._action_params(s, conf, s.member, s.room_uuid,
                                                         "completed"))
        finally:
            self.calls.pop(s.uuid, None)
            self.metrics.calls_total[s.outcome or ("answered" if s.answered
                                                   else "unanswered")] += 1

    async def _call_hangup(self, s: CallSession) -> None:
        if s.answered:
            await self.engine.hangup(s.uuid)
        elif s.outcome == "error":
            await self.engine.answer(s.uuid, 500, "Server Internal Error",
                                     "internal error: see the node's log for this call")
        else:
            await self.engine.hangup(s.uuid, 603, "Decline")

    async def _first_document(self, s: CallSession) -> Document | None:
        url = self.config.answer_url
        if not url:
            return builtin_document(s.incoming.to_user or DEFAULT_ROOM)
        t0 = trio.current_time()
        try:
            return await self._fetch(s, url, self.config.answer_method)
        except (FetchError, AnswerError) as exc:
            self._limit_hit(exc)
            s.outcome = "answer-url-failed"
            reason = exc.reason if isinstance(exc, FetchError) else f"bad answer XML: {exc}"
            log.error("answer URL %s failed for call %s: %s", url, s.uuid, reason,
                      extra={"call_uuid": s.uuid, "event": "answer-failed"})
            await self.engine.answer(s.uuid, 503, "Service Unavailable",
                                     f"answer URL failed: {reason}")
            s.ended = True  # a final response ends the INVITE; nothing left to hang up
            return None
        finally:
            self.metrics.answer_latency.observe(trio.current_time() - t0)

    def _limit_hit(self, exc: Exception) -> None:
        """Count a refusal that was a node limit (the error names its option)."""
        option = getattr(exc, "option", None)
        if option:
            self.faults.limit(option)

    def _count_document(self, s: CallSession, url: str) -> bool:
        """One more document for this call, if it may have one (max_documents_per_call)."""
        if s.documents >= self.config.max_documents_per_call:
            self.faults.limit("max_documents_per_call")
            log.error("call %s: not fetching %s: the call has run %d documents, the most it "
                      "may (max_documents_per_call)", s.uuid, url, s.documents)
            return False
        s.documents += 1
        return True

    async def _fetch(self, s: CallSession, url: str, method: str) -> Document:
        if not self._count_document(s, url):  # counted there
            raise FetchError(url, "too many documents for one call (max_documents_per_call)",
                             retry=False)
        inc = s.incoming
        status = "in-progress" if s.answered else "ringing"
        params = call_params(inc.uuid, inc.from_uri, inc.to_user or inc.to_uri,
                             inc.caller_name, status)
        body = await self.webhooks.fetch(url, method, params)
        doc = self._parse(s, body, url)
        s.document_url = url
        return doc

    def _parse(self, s: CallSession, body: bytes, url: str) -> Document:
        doc = parse_document(body, base_url=url, limits=self.limits)
        if doc.skipped:
            log.warning("call %s: %s: skipped unsupported elements: %s", s.uuid, url,
                        ", ".join(doc.skipped))
        for option, what in doc.clamped:
            self.faults.limit(option)
            log.warning("call %s: %s: %s (%s)", s.uuid, url, what, option)
        return doc

    async def _execute(self, s: CallSession, doc: Document) -> None:
        verbs = list(doc.verbs)
        verb = None
        while verbs:
            verb = verbs.pop(0)
            if isinstance(verb, Conference):
                await self._answer(s)
                replacement = await self._conference(s, verb)
                if replacement is not None:
                    verbs = list(replacement.verbs)
            elif isinstance(verb, Wait):
                await self._answer(s)
                await trio.sleep(verb.length)
            elif isinstance(verb, (Play, Speak)):
                await self._answer(s)
                await self._play_to_call(s, verb)
            elif isinstance(verb, Hangup):
                break
            elif isinstance(verb, Redirect):
                try:
                    verbs = list((await self._fetch(s, verb.url, verb.method)).verbs)
                except (FetchError, AnswerError) as exc:
                    self._limit_hit(exc)
                    log.error("redirect %s failed for call %s: %s", verb.url, s.uuid,
                              getattr(exc, "reason", exc))
                    break
        await self._end(s, verb if isinstance(verb, Hangup) else None)

    async def _play_to_call(self, s: CallSession, verb: Play | Speak) -> None:
        """Play or Speak to this caller alone; loop=0 plays until the call ends."""
        try:
            if isinstance(verb, Play):
                clip = await self.sounds.audio(verb.url)
            else:
                clip = await self.sounds.speech(verb.text, verb.voice, verb.language)
        except SoundError as exc:
            if isinstance(exc, SoundLimit):
                self.faults.limit(exc.option)
            log.warning("call %s: skipped <%s>: %s", s.uuid, type(verb).__name__, exc)
            return
        await self._overlay(s, clip, verb.loop)

    async def _overlay(self, s: CallSession, clip, loops: int) -> None:
        """A clip to this caller alone (over whatever the caller hears), ``loops`` times or
        until cancelled when 0; taken off again at the end, so it never replays later."""
        await self.engine.play_to_call(s.uuid, clip, loops)
        try:
            if loops == 0:
                await trio.sleep_forever()
            await trio.sleep(clip.duration * loops)
        finally:
            if not s.ended:
                with trio.CancelScope(shield=True):
                    await self.engine.stop_call_sound(s.uuid)

    async def _answer(self, s: CallSession) -> None:
        if s.answered:
            return
        if not await self.engine.answer(s.uuid, 200):
            raise _CallGone()
        s.answered = True

    async def _end(self, s: CallSession, hangup: Hangup | None) -> None:
        if s.ended:
            return
        if s.answered:
            await self.engine.hangup(s.uuid)
        else:
            code = HANGUP_CODES.get(hangup.reason.lower(), 603) if hangup else 603
            await self.engine.hangup(s.uuid, code, "Busy Here" if code == 486 else "Decline")
        s.ended = True

    # --- rooms ---------------------------------------------------------------------------------

    async def _conference(self, s: CallSession, conf: Conference) -> Document | None:
        """Join the room, stay until leaving it, then the action URL; returns the document
        that replaces the rest of this one (action with redirect=true), if any."""
        run = self.rooms.get(conf.room)
        if run is None:
            run = self.rooms[conf.room] = RoomRun(roomstate.Room(conf.room,
                                                                 clock=trio.current_time))
        events = run.state.join(s.uuid, conf)
        refused = next((e for e in events if isinstance(e, roomstate.Refused)), None)
        if refused is not None:
            log.info("call %s refused by room %s: %s", s.uuid, conf.room, refused.reason)
            if run.state.empty:
                self.rooms.pop(conf.room, None)
            return await self._action(s, conf, None, "")
        for ev in events:
            if isinstance(ev, roomstate.RunStarted):
                run.key = ev.room_uuid
                await self._nursery.start(self._room_supervised, run, name=f"room-{conf.room}")
        s.room = run
        s.left_room = trio.Event()
        s.conference, s.room_uuid = conf, run.key
        self._apply(run, events)
        await s.left_room.wait()
        s.conference = None
        member, room_uuid = s.member, run.key
        s.member = None
        return await self._action(s, conf, member, room_uuid)

    async def _action(self, s: CallSession, conf: Conference, member: roomstate.Member | None,
                      room_uuid: str) -> Document | None:
        """The action request after leaving the room (also for a refused caller). It goes out
        after the call's earlier events. When the call is gone or redirect=false it is an
        event (spooled, retried); otherwise the reply may replace the document, and if it
        cannot be had in time it is spooled too and the document goes on."""
        if not conf.action:
            return None
        params = self._action_params(s, conf, member, room_uuid)
        if s.ended or not conf.redirect or not self._count_document(s, conf.action):
            self.webhooks.submit(s.uuid, conf.action, conf.method, params)
            return None
        timeout = self.config.answer_timeout
        with trio.move_on_after(timeout) as waited:
            await self.webhooks.drained(s.uuid)
        body = None
        if not waited.cancelled_caught:
            try:
                body = await self.webhooks.fetch(conf.action, conf.method, params)
            except FetchError as exc:
                self._limit_hit(exc)
                log.error("action URL %s failed for call %s: %s", conf.action, s.uuid,
                          exc.reason)
                if not exc.retry:
                    return None
        if body is None:
            log.warning("call %s: action URL %s not reached in time: spooled, going on with "
                        "the document", s.uuid, conf.action)
            self.webhooks.submit(s.uuid, conf.action, conf.method, params)
            return None
        try:
            return self._parse(s, body, conf.action)
        except AnswerError as exc:
            self._limit_hit(exc)
            log.error("action URL %s for call %s: bad XML, going on with the document: %s",
                      conf.action, s.uuid, exc)
            return None

    @staticmethod
    def _action_params(s: CallSession, conf: Conference, member: roomstate.Member | None,
                       room_uuid: str, status: str | None = None) -> dict[str, str]:
        return {
            "ConferenceName": conf.room,
            "ConferenceUUID": room_uuid,
            "ConferenceMemberID": member.member_id if member else "",
            "CallUUID": s.uuid,
            "From": s.incoming.from_uri,
            "To": s.incoming.to_user or s.incoming.to_uri,
            "Direction": "inbound",
            "CallStatus": status or ("completed" if s.ended else "in-progress"),
            **s.record_params,
        }

    def _callback(self, run: RoomRun, member: roomstate.Member, action: str,
                  **extra: str) -> None:
        """A callbackUrl event for a member, spooled and sent in the call's order."""
        conf = member.conference
        if conf.callback_url:
            self.webhooks.submit(member.call_uuid, conf.callback_url, conf.callback_method,
                                 conference_params(action, run.state.name, run.key,
                                                   member.member_id, member.call_uuid, **extra))

    def _give_floor(self, run: RoomRun, call_uuid: str) -> None:
        member = run.state.members.get(call_uuid)
        if member is None or run.floor == call_uuid or member.muted:
            return
        run.floor = call_uuid
        log.info("room %s: member %s has the floor", run.state.name, member.member_id)
        if member.conference.floor_event:
            self._callback(run, member, "floor")

    def _on_digit(self, s: CallSession, ev: Dtmf) -> None:
        run, member, digits = s.room, s.member, s.digits
        if run is None or member is None or digits is None:
            return
        press = digits.feed(ev.digit, ev.source, ev.at)
        if press is None:
            return
        log.info("call %s pressed %s (%s) in room %s", s.uuid, press.digit, press.source,
                 run.state.name)
        conf = member.conference
        if press.matched is not None:
            self._callback(run, member, "digits", ConferenceDigitsMatch=press.matched)
        if conf.relay_dtmf:
            # in-band keys of an unmuted member are in the mix already: tones only otherwise
            tones = press.source != "inband" or member.muted
            for other in run.state.members.values():
                if other.call_uuid != s.uuid and not other.waiting:
                    run.do(self.engine.send_digits, other.call_uuid, press.digit, tones)
        if press.digit == "*" and conf.hangup_on_star:
            log.info("call %s pressed * in room %s: leaving it", s.uuid, run.state.name)
            self._apply(run, run.state.leave(s.uuid, roomstate.STAR))

    def _leave_room(self, s: CallSession) -> None:
        """The call is going away (or its task ends): take it out of its room."""
        run = s.room
        if run is not None and s.uuid in run.state.members:
            self._apply(run, run.state.leave(s.uuid, roomstate.HANGUP))
        s.room = None

    def _apply(self, run: RoomRun, events: list) -> None:
        """Carry out what the room state machine decided (on the trio thread, no waiting)."""
        name = run.state.name
        for ev in events:
            if isinstance(ev, roomstate.Joined):
                m = ev.member
                session = self.calls.get(m.call_uuid)
                if session is not None:
                    session.member = m
                    session.digits = DigitCollector(m.conference.digits_match)
                log.info("call %s joined room %s as member %s%s", m.call_uuid, name,
                         m.member_id, " (waiting)" if m.waiting else "",
                         extra={"call_uuid": m.call_uuid, "room": name, "event": "enter"})
                run.do(self.engine.join, m.call_uuid, run.key, m.muted or m.waiting,
                       m.deaf or m.waiting)
                self._callback(run, m, "enter")
                if m.conference.record:
                    self.start_recording(run, m.conference.record_file_format, m)
                if len(run.state.members) == 1:
                    self._give_floor(run, m.call_uuid)  # alone: the floor is theirs
            elif isinstance(ev, roomstate.MemberState):
                m = ev.member
                if not ev.waiting:
                    log.info("room %s: member %s is live", name, m.member_id)
                run.do(self.engine.set_member, m.call_uuid, m.muted or ev.waiting,
                       m.deaf or ev.waiting)
            elif isinstance(ev, roomstate.Controls):
                m = ev.member
                log.info("room %s: member %s %s, %s", name, m.member_id,
                         "muted" if m.muted else "unmuted", "deaf" if m.deaf else "hearing")
                run.do(self.engine.set_member, m.call_uuid, m.muted or m.waiting,
                       m.deaf or m.waiting)
            elif isinstance(ev, roomstate.Music):
                self._music(run, ev.member, ev.on)
            elif isinstance(ev, roomstate.PlaySound):
                if self._reserve_sound(run, ev.sound) and \
                        not self._spawn(run, "sound", self._room_sound, run, ev.sound):
                    run.sounds -= 1
            elif isinstance(ev, roomstate.Deadline):
                self._arm_time_limit(run, ev.at)
            elif isinstance(ev, roomstate.Left):
                self._member_left(run, ev)
            elif isinstance(ev, roomstate.RunEnded):
                log.info("room %s: run %s ended", name, ev.room_uuid)
                run.ended.set()
                run.send.close()
                if self.rooms.get(name) is run:
                    del self.rooms[name]

    def _member_left(self, run: RoomRun, ev: roomstate.Left) -> None:
        call_uuid = ev.member.call_uuid
        scope = run.music.pop(call_uuid, None)
        if scope is not None:
            scope.cancel()
        log.info("call %s left room %s (%s)", call_uuid, run.state.name, ev.reason,
                 extra={"call_uuid": call_uuid, "room": run.state.name, "event": "exit"})
        if run.floor == call_uuid:
            run.floor = None
        self._callback(run, ev.member, "exit")
        session = self.calls.get(call_uuid)
        if session is None:
            return
        session.room = None
        session.digits = None
        session.record_params = dict(run.record_params)
        session.leave_reason = ev.reason
        session.left_room.set()
        if not session.ended:
            run.do(self.engine.leave, call_uuid)

    def _music(self, run: RoomRun, member: roomstate.Member, on: bool) -> None:
        old = run.music.pop(member.call_uuid, None)
        if old is not None:
            old.cancel()
        if on and run.nursery is not None:
            scope = run.music[member.call_uuid] = trio.CancelScope()
            self._spawn(run, "sound", self._start_music, run, member, scope)
        elif not on:
            run.do(self.engine.stop_call_sound, member.call_uuid)

    async def _clip_to_member(self, run: RoomRun, s: CallSession, member: roomstate.Member,
                              clip) -> None:
        """A clip to one member (control API); a waiting member's music comes back after."""
        await self._overlay(s, clip, 1)
        if member.call_uuid in run.music and not s.ended:
            self._music(run, member, True)

    async def _start_music(self, run: RoomRun, member: roomstate.Member,
                           scope: trio.CancelScope) -> None:
        with scope:
            try:
                clip = await self.sounds.resolve(member.conference.wait_sound)
            except SoundError as exc:
                if isinstance(exc, SoundLimit):
                    self.faults.limit(exc.option)
                log.warning("room %s: wait sound skipped: %s", run.state.name, exc)
                return
            run.do(self.engine.play_to_call, member.call_uuid, clip, 0)

    def _spawn(self, run: RoomRun, where: str, fn, *args) -> bool:
        """Start a unit of the room run (a sound, the recording, the timer) in the run's
        nursery, supervised; False if the run is over."""
        if run.nursery is None or run.ended.is_set():
            return False
        run.nursery.start_soon(functools.partial(self.faults.guard, where, fn, *args,
                                                 room=run.state.name))
        return True

    def _reserve_sound(self, run: RoomRun, what: str) -> bool:
        """Room sounds are limited (max_room_sounds): a full room skips the sound."""
        if run.sounds >= self.config.max_room_sounds:
            self.faults.limit("max_room_sounds")
            log.warning("room %s: sound %s skipped: %d playing already (max_room_sounds)",
                        run.state.name, what, run.sounds)
            return False
        run.sounds += 1
        return True

    async def _room_sound(self, run: RoomRun, spec: str) -> None:
        """An enter/exit sound, mixed into the room like a member (it never stalls the mixer:
        it is fetched and decoded here, then the clock only walks PCM)."""
        try:
            clip = await self.sounds.resolve(spec)
        except SoundError as exc:
            run.sounds -= 1
            if isinstance(exc, SoundLimit):
                self.faults.limit(exc.option)
            log.warning("room %s: sound %s skipped: %s", run.state.name, spec, exc)
            return
        except BaseException:
            run.sounds -= 1
            raise
        await self._play_in_room(run, clip, True)

    async def _play_in_room(self, run: RoomRun, clip, reserved: bool = False) -> None:
        """Mix a clip into the room; ``reserved``: it holds one of the room's sound places."""
        try:
            sound_id = await self.engine.play_to_room(run.key, clip, 1)
            if sound_id is None:
                log.warning("room %s: the mixer took no more sounds: one skipped",
                            run.state.name)
                return
            try:
                await trio.sleep(clip.duration + 0.1)
            finally:
                with trio.CancelScope(shield=True):
                    await self.engine.stop_room_sound(sound_id)
        finally:
            if reserved:
                run.sounds -= 1

    async def _record(self, run: RoomRun, owner: roomstate.Member | None,
                      scope: trio.CancelScope) -> None:
        """Record the run's mix from the mixer's tap until the run ends; then the record
        callback and, if asked, the transcription. File writes happen in a worker thread."""
        rec = run.recording
        tap = None
        for _ in range(40):  # the mixer room appears with the first leg placed in it
            tap = await self.engine.tap_room(run.key)
            if tap is not None:
                break
            await trio.sleep(0.05)
        if tap is None:
            log.error("room %s: no mixer to record", run.state.name)
            return
        log.info("room %s: recording %s (%s)", run.state.name, rec.recording_id, rec.fmt)
        try:
            with scope:  # cancelled by stop_recording, or with the run
                while True:
                    await trio.sleep(0.25)
                    pcm = tap.read()
                    if len(pcm):
                        await trio.to_thread.run_sync(rec.write, pcm)
        finally:
            with trio.CancelScope(shield=True):
                await self.engine.untap(tap)
                pcm = tap.read()
                if len(pcm):
                    await trio.to_thread.run_sync(rec.write, pcm)
                await trio.to_thread.run_sync(rec.close)
                if tap.dropped:
                    log.warning("recording %s: %d samples dropped", rec.recording_id,
                                tap.dropped)
                self._recorded(run, owner, rec)

    def _recorded(self, run: RoomRun, owner: roomstate.Member | None,
                  rec: recording.Recording) -> None:
        log.info("room %s: recording %s complete, %.1f s", run.state.name, rec.recording_id,
                 rec.duration_ms / 1000)
        if run.recording is rec:
            run.recording = None
        if owner is None:
            return
        ms = rec.duration_ms
        self._callback(run, owner, "record", **run.record_params,
                       RecordingDuration=str(round(ms / 1000)), RecordingDurationMs=str(ms),
                       RecordingStartMs=str(rec.started_ms), RecordingEndMs=str(rec.ended_ms))
        conf = owner.conference
        if conf.transcription_url and self._nursery is not None:
            self._nursery.start_soon(functools.partial(
                self.faults.guard, "transcription", self._transcribe, owner.call_uuid, conf,
                rec, call_uuid=owner.call_uuid, room=run.state.name))

    async def _transcribe(self, call_uuid: str, conf: Conference,
                          rec: recording.Recording) -> None:
        """pocketsphinx in its own process; the result goes out through the webhook worker."""
        try:
            proc = await trio.run_process(
                [sys.executable, "-m", "sipconf.media.transcribe", str(rec.path)],
                capture_stdout=True, capture_stderr=True, check=False)
            out = json.loads(proc.stdout.decode() or "{}")
        except (OSError, ValueError) as exc:
            out = {"error": f"transcriber failed: {exc}"}
        self.webhooks.submit(call_uuid, conf.transcription_url, conf.transcription_method, {
            "transcription": out.get("text", ""),
            "duration": str(out.get("duration", rec.duration_ms / 1000)),
            "call_uuid": call_uuid,
            "recording_id": rec.recording_id,
            "error": out.get("error", ""),
            "transcription_charge": "0",
            "transcription_rate": "0",
        })

    def _arm_time_limit(self, run: RoomRun, at: float) -> None:
        if run.timer is not None:
            run.timer.cancel()
        if run.nursery is None:
            return
        run.timer = trio.CancelScope()
        self._spawn(run, "room-timer", self._time_limit, run, at, run.timer)

    async def _time_limit(self, run: RoomRun, at: float, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep_until(at)
            events = run.state.expire()
            if events:
                log.info("room %s: time limit reached", run.state.name)
                self._apply(run, events)

    async def _room_supervised(self, run: RoomRun, *,
                               task_status=trio.TASK_STATUS_IGNORED) -> None:
        """The room run as a unit: if it faults, its members leave it and go on with their
        documents; other rooms are untouched."""
        await self.faults.guard("room", self._room_main, run, task_status, room=run.state.name,
                                on_fault=lambda exc: self._room_failed(run))

    def _room_failed(self, run: RoomRun) -> None:
        run.ended.set()
        run.send.close()
        if self.rooms.get(run.state.name) is run:
            del self.rooms[run.state.name]
        for m in list(run.state.members.values()):
            session = self.calls.get(m.call_uuid)
            if session is None:
                continue
            session.room, session.digits, session.leave_reason = None, None, "error"
            session.left_room.set()
            if not session.ended and self._nursery is not None:
                self._nursery.start_soon(functools.partial(
                    self.faults.guard, "room", self.engine.leave, m.call_uuid,
                    call_uuid=m.call_uuid, room=run.state.name))

    async def _room_main(self, run: RoomRun, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """A room run's own task: runs its engine commands in order until the run ends; its
        nursery holds the run's timer, sounds and music, all cancelled with it."""
        async with trio.open_nursery() as nursery:
            run.nursery = nursery
            task_status.started()
            async for action in run.recv:  # ends when the run ends (its channel is closed)
                try:
                    await action()
                except Exception as exc:  # noqa: BLE001 - one failed command must not stop the room
                    self.faults.record("room", exc, room=run.state.name)
            nursery.cancel_scope.cancel()


class _CallGone(Exception):
    """The call ended while we were working on it."""
