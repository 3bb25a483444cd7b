"""What the answer XML does to one call, as a sans-I/O state machine (in the style of h11).

A :class:`CallFlow` is fed *events* (a document came back, the call was answered, a sound
finished, the caller left the room, ...) with the current time, and returns *commands* (fetch
this URL, answer, play this, sleep until then, join that room, spool this event, ...). It owns
every decision of the verb interpreter: the documents a call runs and how many it may fetch
(``max_documents_per_call``), ``Redirect``, what happens after a ``Conference`` (the action
URL: reported or fetched, ``redirect``, a reply that does not come in time), the action's
parameters, and how the call ends (503 when the answer URL fails, 486/603 for ``Hangup`` before
an answer, 500 + Warning when the call faulted unanswered), ``GetDigits`` (one
:class:`~sipconf.core.gather.Gather` at a time, fed the caller's keys, then its action),
``PreAnswer`` (early media before the answer) and ``DTMF``. It has no trio, no HTTP, no engine:
``sipconf/calls.py`` is the thin driver that carries the commands out and feeds the results
back.

Long (~500 lines) because it is the one place a call's decisions live, as h11 keeps every
state decision in ``_state.py``; the gatherer (``gather.py``) and the messages
(``callmessages.py``) are already apart, and the next split would be the post-Conference
action handling.

The events and commands are in ``callmessages.py``. The protocol:
:meth:`CallFlow.start` and :meth:`CallFlow.handle` return a list of commands to
run in order. At most the last one has a result (see each command), which the driver feeds
back as the next event; when the list ends with a command without a result the flow's run is
over (``flow.done``). Whatever ends the driver's run (the flow is done, the call is gone, the
node is stopping, a fault), it then feeds :class:`Stopped`; the commands that returns are the
call's last: leave the room, report the action, :class:`End`, then a final hang-up if the call
is still up.

Long (~500 lines) on purpose, like h11's ``_state.py``: every decision about a call is in this
one state machine, so each transition can be read beside the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sipconf.core import dialout
from sipconf.core.answer import (
    AnswerError,
    Conference,
    Document,
    GetDigits,
    Limits,
    PreAnswer,
    Redirect,
    Verb,
    Wait,
    builtin_document,
    parse_document,
)
from sipconf.core.answer import Dial as DialVerb
from sipconf.core.answer import Dtmf as DtmfVerb
from sipconf.core.answer import Hangup as HangupVerb
from sipconf.core.answer import Record as RecordVerb
from sipconf.core.answer import Stream as StreamVerb
from sipconf.core.callmessages import (
    Answer,
    Answered,
    AwaitDrained,
    CallGone,
    CollectKeys,
    Command,
    DialAnswered,
    DialFailed,
    DigitsSent,
    Drained,
    End,
    Event,
    Fetch,
    Fetched,
    FetchFailed,
    Hangup,
    JoinRoom,
    KeyPressed,
    LeaveRoom,
    LeftRoom,
    LimitHit,
    PlayToCall,
    RecordCall,
    Recorded,
    RingDial,
    RoomRefused,
    ScheduleHangup,
    SendDigits,
    Sleep,
    SoundFailed,
    SoundFinished,
    StartStream,
    Stopped,
    StreamEnded,
    Submit,
    WaitOver,
)
from sipconf.core.gather import Gather, Gathered
from sipconf.webhooks.payloads import call_params

log = logging.getLogger("sipconf.node")

DEFAULT_ROOM = "default"
FETCH_EVENTS = {"answer": "StartApp", "redirect": "Redirect"}  # Plivo's Event parameter
HANGUP_CODES = {"busy": 486, "rejected": 603}
VERB_OF = {"digits": "GetDigits", "dial": "Dial", "record": "Record"}  # whose action a fetch is
TOO_MANY_DOCUMENTS = "too many documents for one call (max_documents_per_call)"
INTERNAL_ERROR_WARNING = "internal error: see the node's log for this call"

# --- the flow -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallInfo:
    uuid: str
    from_uri: str
    to_user: str  # the dialled user ("" if none)
    to_uri: str = ""
    caller_name: str = ""
    sip_headers: tuple[tuple[str, str], ...] = ()  # the INVITE's X-PH-* headers
    outbound: bool = False  # a dial-out: answered by the callee, its document given

    @property
    def to(self) -> str:
        """``To`` in requests: the dialled user, or the To URI."""
        return self.to_user or self.to_uri


@dataclass(frozen=True)
class FlowSettings:
    answer_url: str | None = None  # None: every call joins the room it dialled
    answer_method: str = "POST"
    answer_timeout: float = 5.0
    max_documents_per_call: int = 20
    limits: Limits = field(default_factory=Limits)
    default_room: str = DEFAULT_ROOM


# states
IDLE, ANSWERING, FETCHING, PLAYING, WAITING, IN_ROOM, DRAINING, LEAVING, DONE, CLOSED = (
    "idle", "answering", "fetching", "playing", "waiting", "in-room", "draining", "leaving",
    "done", "closed")
GATHERING, SENDING = "gathering", "sending"  # a GetDigits runs; a <DTMF async="false"> is sent
RINGING, RECORDING = "ringing", "recording"  # a <Dial>'s callees ring; a <Record> runs
STREAMING = "streaming"  # a <Stream keepCallAlive="true"> runs


class CallFlow:
    """One call's verb interpreter. See the module docstring for the protocol."""

    def __init__(self, call: CallInfo, settings: FlowSettings, document: Document | None = None):
        self.call = call
        self.document = document  # runs instead of the answer URL's (a dial-out's Conference)
        self.settings = settings
        self.state = IDLE
        self.answered = False
        self.ended = False  # no final hang-up needed (hung up, gone, or refused with 503)
        self.fault = False
        self.outcome = ""  # set when the call did not simply run its course
        self.documents = 0  # answer, Redirect and action documents fetched so far
        self.document_url: str | None = None
        self.record_params: dict[str, str] = {}  # of the room run it was last in
        self.conference: Conference | None = None  # the Conference the call is in
        self.verbs: list[Verb] = []
        self._verb: Verb | None = None  # the verb last taken from the document
        self._pending: Verb | None = None  # the verb waiting for the answer
        self._fetching: tuple[str, str] | None = None  # (purpose, url)
        self._action: tuple[Conference, dict[str, str]] | None = None  # waiting for its reply
        self._gather: Gather | None = None  # the GetDigits running
        self._dial: tuple[DialVerb, str] | None = None  # the <Dial> running, its callee's UUID
        self._record: RecordVerb | None = None  # the <Record> running
        self._early = 0  # verbs at the front of the document that play as early media (183)
        self.early_media = False  # a 183 went out

    @property
    def done(self) -> bool:
        """The flow's run is over: nothing more to do until :class:`Stopped`."""
        return self.state in (DONE, CLOSED)

    # --- the entry points ---------------------------------------------------------------------

    def start(self, now: float) -> list[Command]:
        """The call arrived: fetch its answer document (or run the built-in one)."""
        assert self.state == IDLE, self.state
        if self.document is not None:
            self.answered = self.call.outbound  # the callee answered a dial-out
            return self._run(self.document, now)
        url = self.settings.answer_url
        if not url:
            return self._run(builtin_document(self.call.to_user or self.settings.default_room), now)
        return self._fetch(url, self.settings.answer_method, "answer", now)

    def handle(self, event: Event, now: float) -> list[Command]:
        if isinstance(event, Stopped):
            return self._stopped(event)
        if isinstance(event, CallGone):
            self.ended = True
            return []
        if self.state == CLOSED:
            return []
        if isinstance(event, Answered) and self.state == ANSWERING:
            if not event.ok:  # gone before the answer: nothing to hang up
                self.ended = True
                self.state = DONE
                return []
            self.answered = True
            verb, self._pending = self._pending, None
            return self._do(verb, now)
        if isinstance(event, (Fetched, FetchFailed)) and self.state == FETCHING:
            return self._fetched(event, now)
        if isinstance(event, (SoundFinished, SoundFailed)) and self.state == PLAYING:
            cmds: list[Command] = []
            if isinstance(event, SoundFailed):
                cmds += self._limit(event.option)
                log.warning("call %s: skipped <%s>: %s", self.call.uuid,
                            type(self._verb).__name__, event.reason)
            return cmds + self._next(now)
        if isinstance(event, WaitOver) and self.state == WAITING:
            return self._next(now)
        if self.state == GATHERING and isinstance(event, (KeyPressed, SoundFinished, SoundFailed,
                                                          WaitOver)):
            return self._gathering(event, now)
        if isinstance(event, DigitsSent) and self.state == SENDING:
            return self._next(now)
        if isinstance(event, (DialAnswered, DialFailed)) and self.state == RINGING:
            return self._dialled(event, now)
        if isinstance(event, Recorded) and self.state == RECORDING:
            return self._recorded(event, now)
        if isinstance(event, StreamEnded) and self.state == STREAMING:
            log.info("call %s: <Stream> over (%s); going on with the document", self.call.uuid,
                     event.reason)
            return self._next(now)
        if isinstance(event, RoomRefused) and self.state == IN_ROOM and self._dial:
            self.conference = None
            log.warning("call %s: <Dial> bridge refused: %s", self.call.uuid, event.reason)
            return self._bridge_over(dialout.FAILED, now)
        if isinstance(event, RoomRefused) and self.state == IN_ROOM:
            conf, self.conference = self.conference, None
            log.info("call %s refused by room %s: %s", self.call.uuid, conf.room, event.reason)
            return self._after_room(conf, "", "", now)
        if isinstance(event, LeftRoom) and self.state in (IN_ROOM, LEAVING):
            return self._left(event, now)
        if isinstance(event, Drained) and self.state == DRAINING:
            conf, params = self._action
            if not event.in_time:
                self._action = None
                return self._spool_action(conf, params) + self._next(now)
            self._fetching = ("action", conf.action)
            self.state = FETCHING
            return [Fetch(conf.action, conf.method, params, "action")]
        raise ValueError(f"call flow in state {self.state} cannot handle {event!r}")

    # --- documents ------------------------------------------------------------------------------

    def _count_document(self, url: str) -> list[Command] | None:
        """One more document for this call, if it may have one; else the limit's commands."""
        if self.documents >= self.settings.max_documents_per_call:
            log.error("call %s: not fetching %s: the call has run %d documents, the most it "
                      "may (max_documents_per_call)", self.call.uuid, url, self.documents)
            return [LimitHit("max_documents_per_call")]
        self.documents += 1
        return None

    def _params(self, event: str | None = None) -> dict[str, str]:
        """The call's parameters (``webhooks.call_params``: Plivo's), with ``event``."""
        c = self.call
        return call_params(c.uuid, c.from_uri, c.to, c.caller_name,
                           "in-progress" if self.answered else "ringing", event, c.sip_headers,
                           c.outbound)

    def _fetch(self, url: str, method: str, purpose: str, now: float) -> list[Command]:
        refused = self._count_document(url)
        if refused is not None:
            return refused + self._fetch_failed(purpose, url, TOO_MANY_DOCUMENTS, now)
        self._fetching = (purpose, url)
        self.state = FETCHING
        return [Fetch(url, method, self._params(FETCH_EVENTS.get(purpose)), purpose)]

    def _parse(self, body: bytes, url: str) -> tuple[Document, list[Command]]:
        doc = parse_document(body, base_url=url, limits=self.settings.limits)
        if doc.skipped:
            log.warning("call %s: %s: skipped unsupported elements: %s", self.call.uuid, url,
                        ", ".join(doc.skipped))
        if doc.ignored:
            log.warning("call %s: %s: ignored attributes: %s", self.call.uuid, url,
                        ", ".join(doc.ignored))
        cmds: list[Command] = []
        for option, what in doc.clamped:
            cmds.append(LimitHit(option))
            log.warning("call %s: %s: %s (%s)", self.call.uuid, url, what, option)
        return doc, cmds

    def _fetched(self, event: Fetched | FetchFailed, now: float) -> list[Command]:
        purpose, url = self._fetching
        self._fetching = None
        if isinstance(event, FetchFailed):
            if purpose == "action":
                return self._action_failed(event, now)
            if purpose in VERB_OF:
                log.error("%s action URL %s failed for call %s: %s; going on with the "
                          "document", VERB_OF[purpose], url, self.call.uuid, event.reason)
                return self._limit(event.option) + self._next(now)
            return self._limit(event.option) + self._fetch_failed(purpose, url, event.reason,
                                                                  now)
        try:
            doc, cmds = self._parse(event.body, url)
        except AnswerError as exc:
            cmds = self._limit(exc.option)
            if purpose == "action":
                conf, _ = self._action
                self._action = None
                log.error("action URL %s for call %s: bad XML, going on with the document: %s",
                          conf.action, self.call.uuid, exc)
                return cmds + self._next(now)
            if purpose in VERB_OF:
                log.error("%s action URL %s for call %s: bad XML, going on with the "
                          "document: %s", VERB_OF[purpose], url, self.call.uuid, exc)
                return cmds + self._next(now)
            reason = f"bad answer XML: {exc}" if purpose == "answer" else str(exc)
            return cmds + self._fetch_failed(purpose, url, reason, now)
        if purpose == "action":
            self._action = None  # its reply replaces the rest of the document
        else:
            self.document_url = url
        self.verbs = list(doc.verbs)
        self._early = 0
        return cmds + self._next(now)

    def _fetch_failed(self, purpose: str, url: str, reason: str, now: float) -> list[Command]:
        if purpose == "answer":
            self.outcome = "answer-url-failed"
            log.error("answer URL %s failed for call %s: %s", url, self.call.uuid, reason,
                      extra={"call_uuid": self.call.uuid, "event": "answer-failed"})
            self.ended = True  # a final response ends the INVITE; nothing left to hang up
            self.state = DONE
            return [Answer(503, "Service Unavailable", f"answer URL failed: {reason}")]
        log.error("redirect %s failed for call %s: %s", url, self.call.uuid, reason)
        return self._end(None)

    # --- verbs ------------------------------------------------------------------------------------

    def _run(self, doc: Document, now: float) -> list[Command]:
        self.verbs = list(doc.verbs)
        return self._next(now)

    def _next(self, now: float) -> list[Command]:
        """Run the next verb of the document; at its end, the call ends."""
        if self.ended:  # the call is gone: no further verb runs
            self.state = DONE
            return []
        if not self.verbs:
            return self._end(None)
        verb = self._verb = self.verbs.pop(0)
        early, self._early = self._early > 0, max(0, self._early - 1)
        if isinstance(verb, HangupVerb):
            if verb.schedule > 0:
                log.info("call %s: hang-up scheduled in %d s", self.call.uuid, verb.schedule)
                return [ScheduleHangup(now + verb.schedule)] + self._next(now)
            return self._end(verb)
        if isinstance(verb, Redirect):
            return self._fetch(verb.url, verb.method, "redirect", now)
        if isinstance(verb, PreAnswer):
            return self._pre_answer(verb, now)
        if early and not self.answered:
            return self._do(verb, now)  # early media: played before the answer
        if not self.answered:
            self._pending = verb
            self.state = ANSWERING
            return [Answer(200)]
        return self._do(verb, now)

    def _pre_answer(self, verb: PreAnswer, now: float) -> list[Command]:
        """``<PreAnswer>``: its prompts run as early media (183 Session Progress) before the
        call is answered; once answered, they are only played."""
        if self.answered:
            log.info("call %s: <PreAnswer> after the answer: its prompts play as usual",
                     self.call.uuid)
            self.verbs[:0] = list(verb.prompts)
            return self._next(now)
        self.verbs[:0] = list(verb.prompts)
        self._early = len(verb.prompts)
        cmds: list[Command] = []
        if not self.early_media and verb.prompts:
            self.early_media = True
            cmds.append(Answer(183, "Session Progress"))
        return cmds + self._next(now)

    def _do(self, verb: Verb, now: float) -> list[Command]:
        """A verb that needs the call answered (it is, or it plays as early media)."""
        if isinstance(verb, Conference):
            self.conference = verb
            self.state = IN_ROOM
            return [JoinRoom(verb)]
        if isinstance(verb, StreamVerb):
            if verb.keep_call_alive:
                self.state = STREAMING
                return [StartStream(verb)]
            return [StartStream(verb)] + self._next(now)
        if isinstance(verb, RecordVerb):
            self._record = verb
            self.state = RECORDING
            return ([CollectKeys(True)] if verb.finish_on_key else []) + [RecordCall(verb)]
        if isinstance(verb, DialVerb):
            self._dial = (verb, "")
            self.state = RINGING
            return [RingDial(verb)]
        if isinstance(verb, GetDigits):
            self._gather = Gather(verb)
            self.state = GATHERING
            return [CollectKeys(True)] + self._gathered(self._gather.start(now), now)
        if isinstance(verb, DtmfVerb):
            if verb.async_:
                return [SendDigits(verb.digits)] + self._next(now)
            self.state = SENDING
            return [SendDigits(verb.digits, wait=True)]
        if isinstance(verb, Wait):
            self.state = WAITING
            return [Sleep(now + verb.length)]
        self.state = PLAYING
        return [PlayToCall(verb, verb.loop)]

    def _end(self, hangup: HangupVerb | None) -> list[Command]:
        self.state = DONE
        if self.ended:
            return []
        self.ended = True
        if self.answered:
            return [Hangup()]
        code = HANGUP_CODES.get(hangup.reason.lower(), 603) if hangup else 603
        return [Hangup(code, "Busy Here" if code == 486 else "Decline")]

    # --- GetDigits ----------------------------------------------------------------------------

    def _gathering(self, event: Event, now: float) -> list[Command]:
        if isinstance(event, SoundFailed):
            log.warning("call %s: GetDigits: a prompt was skipped: %s", self.call.uuid,
                        event.reason)
            return self._limit(event.option) + self._gathered(self._gather.handle(event, now),
                                                               now)
        return self._gathered(self._gather.handle(event, now), now)

    def _gathered(self, step: Command | Gathered, now: float) -> list[Command]:
        """The GetDigits' next command, or (once over) the action request and what follows:
        with ``redirect`` the action's reply is the next document; without digits after every
        attempt, the next element."""
        if not isinstance(step, Gathered):
            return [step]
        verb, self._gather = self._gather.verb, None
        cmds: list[Command] = [CollectKeys(False)]
        if step.digits is None:
            log.info("call %s: GetDigits: no input after %d attempt(s)%s; going on with the "
                     "document", self.call.uuid, step.attempts,
                     f" ({step.invalid} invalid key(s))" if step.invalid else "")
            return cmds + self._next(now)
        shown = step.digits if verb.log else f"{len(step.digits)} digit(s), not logged"
        log.info("call %s: GetDigits got %s", self.call.uuid, shown,
                 extra={"call_uuid": self.call.uuid, "event": "digits"})
        if not verb.action:
            return cmds + self._next(now)
        params = {**self._params(), "Digits": step.digits}
        if not verb.redirect:
            return cmds + [Submit(verb.action, verb.method, params)] + self._next(now)
        refused = self._count_document(verb.action)
        if refused is not None:
            return cmds + refused + self._next(now)
        self._fetching = ("digits", verb.action)
        self.state = FETCHING
        return cmds + [Fetch(verb.action, verb.method, params, "digits")]

    # --- Dial ----------------------------------------------------------------------------------

    def _dialled(self, event: DialAnswered | DialFailed, now: float) -> list[Command]:
        verb, _ = self._dial
        if isinstance(event, DialFailed):
            log.info("call %s: <Dial> not answered: %s", self.call.uuid, event.status)
            self._dial = None
            return self._verb_action(verb, "dial", dialout.dial_action_params(
                self.call.uuid, "", event.status, event.code, event.rang), now)
        self._dial = (verb, event.b_uuid)
        cmds: list[Command] = []
        if verb.callback_url:
            cmds.append(Submit(verb.callback_url, verb.callback_method, {
                **self._params(), **dialout.dial_callback_params(
                    "answer", self.call.uuid, event.b_uuid)}))
        self.conference = dialout.bridge_conference(self.call.uuid, verb)
        self.state = IN_ROOM
        return cmds + [JoinRoom(self.conference)]

    def _bridge_over(self, status: str, now: float) -> list[Command]:
        """The caller is out of the bridge (either side hung up, hangupOnStar, timeLimit):
        the callback's hangup event, then the action (only reported if the call is over)."""
        (verb, b_uuid), self._dial = self._dial, None
        cmds: list[Command] = []
        if verb.callback_url:
            cmds.append(Submit(verb.callback_url, verb.callback_method, {
                **self._params(), **dialout.dial_callback_params(
                    "hangup", self.call.uuid, b_uuid, dialout.hangup_cause(status, 0))}))
        params = dialout.dial_action_params(self.call.uuid, b_uuid, status, 0, True)
        if self.state == LEAVING:
            if verb.action:
                cmds.append(Submit(verb.action, verb.method, {**self._params(), **params}))
            return cmds + self._final()
        return cmds + self._verb_action(verb, "dial", params, now)

    # --- Record --------------------------------------------------------------------------------

    def _recorded(self, event: Recorded, now: float) -> list[Command]:
        verb, self._record = self._record, None
        log.info("call %s: <Record> over (%s), %s ms", self.call.uuid, event.reason,
                 event.params.get("RecordingDurationMs", "0"))
        cmds: list[Command] = [CollectKeys(False)] if verb.finish_on_key else []
        if verb.callback_url and event.reason != "failed":
            cmds.append(Submit(verb.callback_url, verb.callback_method,
                               {**self._params(), **event.params}))
        return cmds + self._verb_action(verb, "record", dict(event.params), now)

    def _verb_action(self, verb: DialVerb | RecordVerb, purpose: str, params: dict[str, str],
                     now: float) -> list[Command]:
        """A Dial's or Record's ``action``: with ``redirect`` its reply is the next
        document; else only reported; without one, the next element."""
        if not verb.action:
            return self._next(now)
        params = {**self._params(), **params}
        if not verb.redirect or self.ended:
            return [Submit(verb.action, verb.method, params)] + self._next(now)
        refused = self._count_document(verb.action)
        if refused is not None:
            return refused + [Submit(verb.action, verb.method, params)] + self._next(now)
        self._fetching = (purpose, verb.action)
        self.state = FETCHING
        return [Fetch(verb.action, verb.method, params, purpose)]

    # --- after the room: the action URL -------------------------------------------------------

    def _action_params(self, conf: Conference, member_id: str, room_uuid: str,
                       status: str | None = None) -> dict[str, str]:
        c = self.call
        return {
            **call_params(c.uuid, c.from_uri, c.to, c.caller_name,
                          status or ("completed" if self.ended else "in-progress"), None,
                          c.sip_headers),
            "ConferenceName": conf.room,
            "ConferenceUUID": room_uuid,
            "ConferenceMemberID": member_id,
            **self.record_params,
        }

    def _left(self, event: LeftRoom, now: float) -> list[Command]:
        if self._dial is not None:  # a <Dial> bridge ended
            self.conference = None
            return self._bridge_over(dialout.ANSWERED, now)
        conf, self.conference = self.conference, None
        if event.record_params is not None:
            self.record_params = dict(event.record_params)
        if self.state == LEAVING:  # the call is over: after the exit event, only reported
            cmds: list[Command] = []
            if conf is not None and conf.action:
                cmds.append(Submit(conf.action, conf.method, self._action_params(
                    conf, event.member_id, event.room_uuid, "completed")))
            return cmds + self._final()
        return self._after_room(conf, event.member_id, event.room_uuid, now)

    def _after_room(self, conf: Conference, member_id: str, room_uuid: str,
                    now: float) -> list[Command]:
        """The action request after leaving the room (also for a refused caller). When the
        call is gone or redirect=false it is an event (spooled, retried); otherwise its reply
        may replace the document, after the call's earlier events went out."""
        if not conf.action:
            return self._next(now)
        params = self._action_params(conf, member_id, room_uuid)
        submit = [Submit(conf.action, conf.method, params)]
        if self.ended or not conf.redirect:
            return submit + self._next(now)
        refused = self._count_document(conf.action)
        if refused is not None:
            return refused + submit + self._next(now)
        self._action = (conf, params)
        self.state = DRAINING
        return [AwaitDrained(now + self.settings.answer_timeout)]

    def _action_failed(self, event: FetchFailed, now: float) -> list[Command]:
        conf, params = self._action
        self._action = None
        cmds = self._limit(event.option)
        log.error("action URL %s failed for call %s: %s", conf.action, self.call.uuid,
                  event.reason)
        if not event.retry:
            return cmds + self._next(now)
        return cmds + self._spool_action(conf, params) + self._next(now)

    def _spool_action(self, conf: Conference, params: dict[str, str]) -> list[Command]:
        log.warning("call %s: action URL %s not reached in time: spooled, going on with the "
                    "document", self.call.uuid, conf.action)
        return [Submit(conf.action, conf.method, params)]

    # --- the end ----------------------------------------------------------------------------------

    def _stopped(self, event: Stopped) -> list[Command]:
        if self.state == CLOSED:
            return []
        if event.fault:
            self.fault = True
            self.outcome = "error"
        if self.conference is not None and self.state == IN_ROOM:
            self.state = LEAVING  # out of the room first (its exit event), then the action
            return [LeaveRoom()]
        return self._final()

    def _final(self) -> list[Command]:
        self.state = CLOSED
        cmds: list[Command] = [End(self.outcome or ("answered" if self.answered
                                                     else "unanswered"))]
        if not self.ended:
            if self.answered:
                cmds.append(Hangup())
            elif self.outcome == "error":
                cmds.append(Answer(500, "Server Internal Error", INTERNAL_ERROR_WARNING))
            else:
                cmds.append(Hangup(603, "Decline"))
        return cmds

    @staticmethod
    def _limit(option: str | None) -> list[Command]:
        return [LimitHit(option)] if option else []
