"""The node: trio tasks that turn SIP events into answer requests, rooms and mixer commands.

Structure: one nursery for the node; in it, one task (with its own nursery) per call and one per
room run. The SIP thread reports events (`sip.IncomingCall`, `sip.CallEnded`, ...) which are
routed here on the trio thread; a call that hangs up has its task's cancel scope cancelled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import httpx
import trio

from . import room as roomstate
from .answer import (
    AnswerError,
    Conference,
    Document,
    Hangup,
    Play,
    Redirect,
    Speak,
    Wait,
    builtin_document,
    parse_document,
)
from .config import NodeConfig
from .sip import CallEnded, IncomingCall, MediaError, MediaUp, SipEngine
from .webhooks import FetchError, call_params, fetch_document

log = logging.getLogger("sipconf.node")

DEFAULT_ROOM = "default"
MAX_REDIRECTS = 10
HANGUP_CODES = {"busy": 486, "rejected": 603}


@dataclass
class CallSession:
    incoming: IncomingCall
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    answered: bool = False
    ended: bool = False
    room: RoomRun | None = None
    left_room: trio.Event = field(default_factory=trio.Event)
    media_rate: int | None = None
    document_url: str | None = None
    nursery: trio.Nursery | None = None

    @property
    def uuid(self) -> str:
        return self.incoming.uuid


@dataclass
class RoomRun:
    """A room while it has members: its sans-I/O state plus the trio task that owns it."""

    state: roomstate.Room
    ended: trio.Event = field(default_factory=trio.Event)

    @property
    def key(self) -> str:
        # The mixer room is per run: a new run never inherits an old run's mixer state.
        return self.state.run_uuid or ""


class Node:
    def __init__(self, config: NodeConfig):
        self.config = config
        self.engine = SipEngine(config, self._on_engine_event)
        self.calls: dict[str, CallSession] = {}
        self.rooms: dict[str, RoomRun] = {}
        self._nursery: trio.Nursery | None = None
        self.http: httpx.AsyncClient | None = None

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; on the way out every call gets a BYE."""
        async with httpx.AsyncClient(follow_redirects=True) as http:
            self.http = http
            await self.engine.start()
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    task_status.started(self)
                    await trio.sleep_forever()
            finally:
                self._nursery = None
                with trio.CancelScope(shield=True):
                    await self.engine.stop()
                log.info("node stopped")

    # --- events from the SIP thread ------------------------------------------------------------

    def _on_engine_event(self, ev: object) -> None:
        if isinstance(ev, IncomingCall):
            if self._nursery is None:
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
            log.info("call %s ended (%s %s)", session.uuid, ev.status, ev.reason)
        elif isinstance(ev, MediaUp):
            session.media_rate = ev.rate
        elif isinstance(ev, MediaError):
            log.error("call %s: %s", session.uuid, ev.reason)

    # --- one call ------------------------------------------------------------------------------

    async def _call_main(self, s: CallSession) -> None:
        inc = s.incoming
        log.info("call %s from %s to %s", s.uuid, inc.from_uri, inc.to_uri)
        try:
            with s.scope:
                async with trio.open_nursery() as call_nursery:
                    s.nursery = call_nursery
                    doc = await self._first_document(s)
                    if doc is not None:
                        await self._execute(s, doc)
        except _CallGone:
            s.ended = True
        except Exception:
            log.exception("call %s failed", s.uuid)
        finally:
            self._leave_room(s)
            self.calls.pop(s.uuid, None)
        if not s.ended and self._nursery is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                if s.answered:
                    await self.engine.hangup(s.uuid)
                else:
                    await self.engine.hangup(s.uuid, 603, "Decline")

    async def _first_document(self, s: CallSession) -> Document | None:
        url = self.config.answer_url
        if not url:
            return builtin_document(s.incoming.to_user or DEFAULT_ROOM)
        try:
            return await self._fetch(s, url, self.config.answer_method)
        except (FetchError, AnswerError) as exc:
            reason = exc.reason if isinstance(exc, FetchError) else f"bad answer XML: {exc}"
            log.error("answer URL %s failed for call %s: %s", url, s.uuid, reason)
            await self.engine.answer(s.uuid, 503, "Service Unavailable",
                                     f"answer URL failed: {reason}")
            s.ended = True  # a final response ends the INVITE; nothing left to hang up
            return None

    async def _fetch(self, s: CallSession, url: str, method: str) -> Document:
        inc = s.incoming
        status = "in-progress" if s.answered else "ringing"
        params = call_params(inc.uuid, inc.from_uri, inc.to_user or inc.to_uri,
                             inc.caller_name, status)
        body = await fetch_document(self.http, url, method, params, self.config.answer_timeout)
        doc = parse_document(body, base_url=url)
        if doc.skipped:
            log.warning("call %s: %s: skipped unsupported elements: %s", s.uuid, url,
                        ", ".join(doc.skipped))
        s.document_url = url
        return doc

    async def _execute(self, s: CallSession, doc: Document) -> None:
        redirects = 0
        verbs = list(doc.verbs)
        while verbs:
            verb = verbs.pop(0)
            if isinstance(verb, Conference):
                await self._answer(s)
                await self._conference(s, verb)
            elif isinstance(verb, Wait):
                await self._answer(s)
                await trio.sleep(verb.length)
            elif isinstance(verb, Hangup):
                break
            elif isinstance(verb, Redirect):
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    log.error("call %s: more than %d redirects", s.uuid, MAX_REDIRECTS)
                    break
                try:
                    verbs = list((await self._fetch(s, verb.url, verb.method)).verbs)
                except (FetchError, AnswerError) as exc:
                    log.error("redirect %s failed for call %s: %s", verb.url, s.uuid,
                              getattr(exc, "reason", exc))
                    break
            elif isinstance(verb, (Play, Speak)):
                log.warning("call %s: <%s> is not executed by this version; skipped",
                            s.uuid, type(verb).__name__)
        await self._end(s, verb if isinstance(verb, Hangup) else None)

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

    async def _conference(self, s: CallSession, conf: Conference) -> None:
        run = self.rooms.get(conf.room)
        if run is None:
            run = self.rooms[conf.room] = RoomRun(roomstate.Room(conf.room))
        for ev in run.state.join(s.uuid, conf):
            if isinstance(ev, roomstate.Refused):
                log.info("call %s refused by room %s: %s", s.uuid, conf.room, ev.reason)
                if run.state.empty:
                    self.rooms.pop(conf.room, None)
                return
            if isinstance(ev, roomstate.RunStarted):
                self._nursery.start_soon(self._room_main, run, name=f"room-{conf.room}")
            elif isinstance(ev, roomstate.Joined):
                log.info("call %s joined room %s as member %s", s.uuid, conf.room,
                         ev.member.member_id)
        s.room = run
        s.left_room = trio.Event()
        await self.engine.join(s.uuid, run.key, muted=conf.muted)
        await s.left_room.wait()

    def _leave_room(self, s: CallSession) -> None:
        run = s.room
        if run is None:
            return
        s.room = None
        for ev in run.state.leave(s.uuid):
            if isinstance(ev, roomstate.Left):
                log.info("call %s left room %s", s.uuid, run.state.name)
            elif isinstance(ev, roomstate.RunEnded):
                run.ended.set()
                if self.rooms.get(run.state.name) is run:
                    del self.rooms[run.state.name]
        s.left_room.set()
        if not s.ended and self._nursery is not None:
            self._nursery.start_soon(self.engine.leave, s.uuid)

    async def _room_main(self, run: RoomRun) -> None:
        """A room run's own task: timers and sounds hang off this nursery."""
        async with trio.open_nursery():
            await run.ended.wait()


class _CallGone(Exception):
    """The call ended while we were working on it."""
