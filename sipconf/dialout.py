"""Dial-outs for a node: the control API starts one (``POST /v1/rooms/{room}/dial``), the
engine's events move it on, and an answered one becomes a call like any other, running the
``<Conference>`` document built from the request (``core/dialout.py`` holds the decisions).

Each ringing dial-out has a timer in the node's call nursery (a CANCEL when it rings too long)
under ``Faults.guard``; progress goes to the request's ``callbackUrl`` through the webhook
worker, so a slow web app never holds a dial-out up.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from sipconf.calls import CallSession, new_session
from sipconf.core import dialout
from sipconf.core.answer import Dial
from sipconf.core.callmessages import DialAnswered, DialFailed
from sipconf.core.sipmsg import uri_user
from sipconf.engine import CallEnded, DialProgress, EngineError, IncomingCall, MediaUp

if TYPE_CHECKING:
    from sipconf.node import Node

log = logging.getLogger("sipconf.node")


@dataclass
class Dialing:
    uuid: str
    req: dialout.DialRequest
    from_uri: str
    started_at: float = field(default_factory=time.time)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)  # its ring timer
    status: str = "dialing"  # then ringing, then how it ended ringing (core.dialout)
    code: int = 0  # the INVITE's final response
    rang: bool = False
    timed_out: bool = False
    canceled: bool = False
    media_rate: int | None = None  # early media
    done: trio.Event = field(default_factory=trio.Event)  # answered, or ended ringing

    def finish(self, status: str, code: int) -> None:
        self.status, self.code = status, code
        self.scope.cancel()
        self.done.set()


class Dials:
    """The node's ringing dial-outs, by call UUID."""

    def __init__(self, node: Node):
        self.node = node
        cfg = node.config
        self.ringing: dict[str, Dialing] = {}
        self.rate = dialout.RateLimit(cfg.dial_rate, cfg.max_dials)
        self.outcomes: dict[str, int] = {}  # for /metrics

    def from_uri(self, from_user: str) -> str:
        """The From of a dial-out: the registered AOR (its PBX knows it) or the node's own
        address; ``from_user`` as its user part when given."""
        cfg = self.node.config
        target = cfg.register_target
        own = target.uri if target else f"sip:sipconf@{cfg.sip_host}:{cfg.sip_port}"
        return f"sip:{from_user}@{own.split('@', 1)[1]}" if from_user else own

    def pbx(self) -> str | None:
        """host[:port] of the PBX the node registers with (bare numbers go there)."""
        target = self.node.config.register_target
        return target.registrar_uri.removeprefix("sip:") if target else None

    async def start(self, room: str, body: dict) -> tuple[int, dict, list]:
        """(HTTP status, JSON body, extra headers) for a dial request."""
        try:
            req = dialout.parse_request(room, body, limits=self.node.limits,
                                        registrar_hostport=self.pbx())
        except ValueError as exc:
            return 400, {"error": str(exc)}, []
        placed = await self.place(req, "control API")
        if not isinstance(placed, Dialing):
            return placed
        if req.ignored:
            log.warning("dial-out %s: ignored attributes: %s", placed.uuid,
                        ", ".join(req.ignored))
        return 200, {"ok": True, "call_uuid": placed.uuid, "to": req.to_uri,
                     "from": placed.from_uri, "ignored": list(req.ignored)}, []

    async def place(self, req: dialout.DialRequest, who: str) -> Dialing | tuple[int, dict, list]:
        """Send a dial-out's INVITE if ``--dial-allow`` and the limits let it: its Dialing,
        or (HTTP status, JSON body, headers) saying why not (also logged, naming the cause)."""
        node = self.node
        refused = self._refusal(req)
        if refused is not None:
            log.warning("%s: dial-out to %s refused: %s", who, req.to_uri,
                        refused[1]["error"])
            return refused
        d = Dialing(str(uuidlib.uuid4()), req, self.from_uri(req.from_user))
        self.ringing[d.uuid] = d  # before the INVITE: its events may come before dial returns
        try:
            err = await node.engine.dial(d.uuid, req.to_uri, d.from_uri, req.caller_name,
                                         req.headers)
        except EngineError as exc:
            err = str(exc)
        if err is not None:
            self.ringing.pop(d.uuid, None)
            d.finish(dialout.FAILED, 0)
            return 502, {"error": f"the INVITE to {req.to_uri} could not be sent: {err}"}, []
        log.info("%s: dial-out %s to %s into room %s (rings up to %d s)", who, d.uuid,
                 req.to_uri, req.room, req.timeout,
                 extra={"call_uuid": d.uuid, "event": "dial-out"})
        if d.uuid in self.ringing and node.nursery is not None:
            node.nursery.start_soon(functools.partial(
                node.faults.guard, "dial", self._ring_timer, d, call_uuid=d.uuid))
        return d

    def _refusal(self, req: dialout.DialRequest) -> tuple[int, dict, list] | None:
        node, cfg = self.node, self.node.config
        if not node.accepting:
            return 503, {"error": "the node is stopping"}, []
        if not dialout.allowed(req.to_uri, cfg.dial_allow):
            return 403, {"error": f"{req.to_uri} is not an allowed destination "
                                  "(no --dial-allow pattern matches)"}, []
        if len(self.ringing) >= cfg.max_dials:
            node.faults.limit("max_dials")
            return 429, {"error": f"{len(self.ringing)} dial-outs ringing, the most there may be "
                                  "(max_dials)"}, [(b"retry-after", b"5")]
        if len(node.calls) + len(self.ringing) >= cfg.max_calls:
            node.faults.limit("max_calls")
            return 503, {"error": "the node is at capacity (max_calls)"}, []
        wait = self.rate.take(trio.current_time())
        if wait:
            node.faults.limit("dial_rate")
            return 429, {"error": "dial-outs started too fast (dial_rate)"}, [
                (b"retry-after", str(math.ceil(wait)).encode())]
        return None

    async def ring(self, s: CallSession, verb: Dial) -> DialAnswered | DialFailed:
        """``<Dial>``: every target rung at once, the first to answer goes into the bridge
        room (``core.dialout.bridge_conference``), the others are cancelled (or, answering a
        moment too late, hung up). If the caller goes meanwhile, every callee goes too."""
        started: list[Dialing] = []
        failed = DialFailed(dialout.FAILED)
        for target in verb.targets:
            try:
                uri = dialout.target_uri(target.to, self.pbx())
            except ValueError as exc:
                log.warning("call %s: <Dial> %s: %s", s.uuid, target.to, exc)
                continue
            req = dialout.DialRequest(
                room=dialout.bridge_room(s.uuid), to_uri=uri, from_user=verb.caller_id,
                caller_name=verb.caller_name, timeout=verb.timeout, callback_url=None,
                callback_method="POST",
                conference=dialout.bridge_conference(s.uuid, verb, target),
                headers=verb.headers + target.headers)
            placed = await self.place(req, f"call {s.uuid} <Dial>")
            if isinstance(placed, Dialing):
                started.append(placed)
        winner = None
        try:
            while started and winner is None:
                pending = [d for d in started if not d.done.is_set()]
                winner = next((d for d in started if d.status == dialout.ANSWERED), None)
                if winner is not None or not pending:
                    break
                await _first(d.done for d in pending)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                for d in started:
                    if d is winner:
                        continue
                    if d.uuid in self.ringing:
                        await self.cancel(d.uuid)
                    elif d.status == dialout.ANSWERED:  # answered too late: the bridge is taken
                        await self.node.engine.hangup(d.uuid)
                if winner is not None and s.ended:
                    await self.node.engine.hangup(winner.uuid)
        if winner is not None:
            s.bridged = winner.uuid
            return DialAnswered(winner.uuid)
        for want in (dialout.BUSY, dialout.NO_ANSWER, dialout.FAILED):
            d = next((d for d in started if d.status == want), None)
            if d is not None:
                return DialFailed(want, d.code, any(x.rang for x in started))
        return failed

    async def cancel(self, call_uuid: str) -> bool:
        """Stop a dial-out that is still ringing (its CANCEL; outcome ``canceled``)."""
        d = self.ringing.get(call_uuid)
        if d is None:
            return False
        log.info("dial-out %s canceled", call_uuid)
        d.canceled = True
        await self.node.engine.hangup(call_uuid)
        return True

    def info(self) -> list[dict]:
        return [{"call_uuid": d.uuid, "room": d.req.room, "to": d.req.to_uri,
                 "status": d.status, "started_at": round(d.started_at, 3)}
                for d in self.ringing.values()]

    async def _ring_timer(self, d: Dialing) -> None:
        with d.scope:
            await trio.sleep(d.req.timeout)
            d.timed_out = True
            log.info("dial-out %s: no answer in %d s -> CANCEL", d.uuid, d.req.timeout)
            await self.node.engine.hangup(d.uuid)

    def on_event(self, ev: object) -> bool:
        """An engine event about a ringing dial-out (True), or not one (False)."""
        d = self.ringing.get(getattr(ev, "uuid", ""))
        if d is None:
            return False
        if isinstance(ev, MediaUp):
            d.media_rate = ev.rate
        elif isinstance(ev, DialProgress) and ev.status == dialout.RINGING:
            d.status, d.rang = dialout.RINGING, True
            self._report(d, dialout.RINGING, ev.code)
        elif isinstance(ev, DialProgress):
            self._answered(d, ev)
        elif isinstance(ev, CallEnded):
            self._ended(d, ev)
        return True

    def _report(self, d: Dialing, status: str, code: int = 0, reason: str = "") -> None:
        if status != dialout.RINGING:
            self.outcomes[status] = self.outcomes.get(status, 0) + 1
        if d.req.callback_url:
            self.node.webhooks.submit(d.uuid, d.req.callback_url, d.req.callback_method,
                                      dialout.progress_params(d.uuid, d.req, d.from_uri, status,
                                                              code, reason))

    def _ended(self, d: Dialing, ev: CallEnded) -> None:
        del self.ringing[d.uuid]
        status = dialout.outcome(ev.status, d.timed_out, d.canceled)
        d.finish(status, ev.status)
        log.info("dial-out %s to %s: %s (%s %s)", d.uuid, d.req.to_uri, status, ev.status,
                 ev.reason, extra={"call_uuid": d.uuid, "event": "dial-" + status})
        self._report(d, status, ev.status, ev.reason)

    def _answered(self, d: Dialing, ev: DialProgress) -> None:
        """The callee answered: from here it is a call like a taken one, in its room."""
        node = self.node
        del self.ringing[d.uuid]
        d.finish(dialout.ANSWERED, ev.code)
        self._report(d, dialout.ANSWERED, ev.code)
        log.info("dial-out %s to %s answered", d.uuid, d.req.to_uri,
                 extra={"call_uuid": d.uuid, "event": "dial-answered"})
        if node.nursery is None:  # stopping: the engine hangs every call up
            return
        req = d.req
        inc = IncomingCall(uuid=d.uuid, from_uri=d.from_uri, to_uri=req.to_uri,
                           to_user=uri_user(req.to_uri), caller_name=req.caller_name,
                           sip_call_id=ev.sip_call_id, sip_headers=req.headers)
        session = new_session(node, inc, document=req.document)
        session.started_at, session.answered_at = d.started_at, time.time()
        session.media_rate = d.media_rate
        node.calls[d.uuid] = session
        node.nursery.start_soon(node.call_driver.main, session, name=f"call-{d.uuid}")


async def _first(events) -> None:
    """Return once any of ``events`` is set."""
    async with trio.open_nursery() as nursery:
        for ev in events:
            async def wait(ev: trio.Event = ev) -> None:
                await ev.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait)
