"""AI agents as room members: ``POST /v1/rooms/{room}/agents`` makes the node open a
WebSocket to the agent (Plivo's Audio Streaming protocol, ``audio_stream.py``); the agent joins
the room with its own member ID, hears the room's N-1 mix (its ``inbound`` track), and what it
plays is mixed into the room. It is a member like any other (listed, muted, kicked, hung up,
enter/exit events); it ends when its socket closes, stalls or is kicked/hung up.

Agents are calls without SIP: the SIP thread keeps a CallRec with an agent leg
(``mixer_ext.streams.Agent``) and no pjsua2 Call, and the node runs a CallSession whose
document is the ``<Conference>`` built from the request.
"""

from __future__ import annotations

import functools
import logging
import uuid as uuidlib
from typing import TYPE_CHECKING

import trio

from sipconf import audio_stream
from sipconf.calls import new_session
from sipconf.core import dialout
from sipconf.core.answer import (
    STREAM_CONTENT_TYPES,
    STREAM_PROTOCOLS,
    AnswerError,
    Stream,
    extra_headers,
    parse_document,
    twilio_content_type,
    ws_url,
)
from sipconf.core.backoff import backoff
from sipconf.core.urls import BadUrl, check_url
from sipconf.engine import EngineError, IncomingCall

if TYPE_CHECKING:
    from sipconf.node import Node

log = logging.getLogger("sipconf.node")

MAX_NAME = 64


def parse(room: str, body: dict, node: Node) -> tuple[Stream, object, str]:
    """(the stream to the agent, its Conference, its name), or ValueError naming the field."""
    url = body.get("url")
    if not isinstance(url, str):
        raise ValueError("url is required: the agent's ws:// or wss:// URL")
    protocol = body.get("protocol", "plivo")
    if protocol not in STREAM_PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(STREAM_PROTOCOLS)}")
    ctype = body.get("contentType")
    if protocol == "twilio":
        try:
            ctype = twilio_content_type("contentType", ctype)
        except AnswerError as exc:
            raise ValueError(str(exc)) from None
    ctype = "audio/x-l16;rate=16000" if ctype is None else ctype
    if not isinstance(ctype, str) or ctype.replace(" ", "") not in STREAM_CONTENT_TYPES:
        raise ValueError(f"contentType must be one of {', '.join(STREAM_CONTENT_TYPES)}")
    headers = body.get("extraHeaders", "")
    name = body.get("name", "agent")
    if not isinstance(name, str) or len(name) > MAX_NAME or not name.isprintable():
        raise ValueError(f"name must be printable text of at most {MAX_NAME} characters")
    callback = body.get("statusCallbackUrl")
    method = body.get("statusCallbackMethod", "POST")
    if method not in ("GET", "POST"):
        raise ValueError("statusCallbackMethod must be GET or POST")
    muted = body.get("muted", False)
    if not isinstance(muted, bool):
        raise ValueError("muted must be true or false")
    attrs = body.get("attrs", {})
    if not isinstance(attrs, dict):
        raise ValueError("attrs must be an object of Conference attributes")
    try:
        if not isinstance(headers, str):
            raise ValueError("extraHeaders must be a string of key=value pairs")
        spec = Stream(url=ws_url("url", url), bidirectional=True,
                      content_type=ctype.replace(" ", ""), protocol=protocol,
                      extra_headers=extra_headers("extraHeaders", headers),
                      status_callback_url=check_url(callback) if callback is not None else None,
                      status_callback_method=method)
        doc = parse_document(dialout.conference_xml(room, {**attrs, "muted": muted}),
                             limits=node.limits)
    except (AnswerError, BadUrl) as exc:
        raise ValueError(str(exc)) from None
    return spec, doc, name


async def start(node: Node, room: str, body: dict) -> tuple[int, dict]:
    """(HTTP status, JSON reply) for an agent request."""
    if not node.accepting or node.nursery is None:
        return 503, {"error": "the node is stopping"}
    try:
        spec, doc, name = parse(room, body, node)
    except ValueError as exc:
        return 400, {"error": str(exc)}
    if room not in node.rooms:  # an agent joins callers; it never opens a room alone
        return 404, {"error": "no such room (an agent joins a room that has members)"}
    agents = sum(1 for s in node.calls.values() if s.agent)
    if agents >= node.config.max_agents:
        node.faults.limit("max_agents")
        return 429, {"error": f"{agents} agents, the most there may be (max_agents)"}
    uuid = f"agent-{uuidlib.uuid4()}"
    try:
        pipe = await node.engine.add_agent(uuid)
    except EngineError as exc:
        return 503, {"error": f"the mixer could not take the agent: {exc}"}
    inc = IncomingCall(uuid=uuid, from_uri=spec.url, to_uri="", to_user=room, caller_name=name,
                       sip_call_id="")
    session = new_session(node, inc, document=doc)
    session.agent = True
    st = audio_stream.StreamRun(uuid, spec, pipe, agent=True)
    session.tasks.append(functools.partial(
        node.faults.guard, "agent", _socket, node, session, st, call_uuid=uuid))
    node.calls[uuid] = session
    node.nursery.start_soon(node.call_driver.main, session, name=f"agent-{uuid}")
    log.info("control API: agent %s (%s) into room %s", uuid, spec.url, room,
             extra={"call_uuid": uuid, "event": "agent"})
    with trio.move_on_after(2):  # its member ID, once it is in the room
        while session.member is None and not session.ended:
            await trio.sleep(0.02)
    member = session.member
    return 200, {"ok": True, "call_uuid": uuid, "stream_id": st.stream_id,
                 "member_id": member.member_id if member else None}


async def _socket(node: Node, session, st: audio_stream.StreamRun) -> None:
    """The agent's WebSocket for its life in the room, opened again (with backoff, up to
    ``agent_reconnects`` times) when it fails or drops; when it ends, so does the agent."""
    attempt = 0
    while True:
        await audio_stream.run(node, st)
        if not st.dropped or attempt >= node.config.agent_reconnects or session.ended:
            break
        attempt += 1
        delay = backoff(attempt)
        log.info("agent %s: its stream dropped (%s); connecting again in %g s (%d of %d)",
                 st.owner, st.reason, delay, attempt, node.config.agent_reconnects)
        await trio.sleep(delay)
        st.reason, st.dropped = "", False
        st.stream_id = str(uuidlib.uuid4())  # a new socket, a new streamId
    if not session.ended:
        log.info("agent %s leaves: its stream ended (%s)", st.owner, st.reason)
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await node.engine.hangup(st.owner)
