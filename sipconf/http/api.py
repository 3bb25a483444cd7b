"""The live-control API (JSON over HTTP, on the node's HTTP port): rooms, members, and what an
operator does to them. Every ``/v1`` request needs ``Authorization: Bearer <--api-token>``;
without a configured token the API refuses everything (401). ``/health`` and ``/metrics`` are
open (for probes and scrapers; the server listens on the SIP address, 127.0.0.1 by default).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from typing import Any, Protocol
from urllib.parse import unquote

from sipconf.core.dialout import MAX_TIMEOUT_S
from sipconf.core.room import VOLUME_MAX_DB, VOLUME_MIN_DB
from sipconf.faults import Faults
from sipconf.http import plivo_api

log = logging.getLogger("sipconf.api")

MEMBER_ACTIONS = ("mute", "unmute", "deaf", "undeaf", "hold", "unhold", "denoise", "undenoise",
                  "agc", "unagc", "kick", "hangup")
MAX_URL = 2048


class Controls(Protocol):
    """What the API needs from the node."""

    async def rooms_info(self) -> list[dict[str, Any]]: ...
    async def room_info(self, name: str) -> dict[str, Any] | None: ...
    async def member_action(self, room: str, member_id: str, action: str,
                            music: str = "") -> bool: ...
    async def member_volume(self, room: str, member_id: str, volume_in: float | None,
                            volume_out: float | None) -> bool: ...
    async def member_coach(self, room: str, member_id: str, target: str | None) -> int: ...
    def end_room(self, room: str) -> bool: ...
    async def metrics_text(self) -> str: ...
    async def room_command(self, room: str, command: str, body: dict) -> dict | None: ...
    def health(self) -> str | None: ...
    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]: ...
    def forget_dead_letter(self, dead_id: int) -> bool: ...
    async def dial(self, room: str, body: dict) -> tuple[int, dict, list]: ...
    async def cancel_dial(self, call_uuid: str) -> bool: ...
    async def add_agent(self, room: str, body: dict) -> tuple[int, dict]: ...
    def dials_info(self) -> list[dict[str, Any]]: ...


def openapi() -> dict[str, Any]:
    member = {"type": "object", "properties": {
        "member_id": {"type": "string"}, "call_uuid": {"type": "string"},
        "from": {"type": "string"}, "to": {"type": "string", "description": "the user "
                                            "part of the URI the caller dialled"},
        "caller_name": {"type": "string"}, "muted": {"type": "boolean"},
        "deaf": {"type": "boolean"}, "held": {"type": "boolean"},
        "coach": {"type": "boolean", "description": "heard only by the member it coaches"},
        "coaching": {"type": "string", "nullable": True,
                     "description": "member_id of the member it coaches"},
        "volume_in": {"type": "number", "description": "dB on what the room hears of it"},
        "volume_out": {"type": "number", "description": "dB on what it hears"},
        "waiting": {"type": "boolean"}, "talking": {"type": "boolean"},
        "denoise": {"type": "boolean", "description": "denoised and gated"},
        "agc": {"type": "boolean", "description": "its level set automatically"},
        "media": {"type": "object", "nullable": True,
                  "description": "GET /v1/rooms/{room} only: packets received, lost, jitter_ms, "
                                 "concealed (frames the codec filled in), jb_discarded, "
                                 "jb_empty (reads that found the buffer empty), "
                                 "jb_delay_ms, jb_playout_ms (how long after its earliest "
                                 "possible arrival a packet is played), jb_target_ms (the "
                                 "lateness the jitter buffer waits for: a quantile of how "
                                 "late packets came, capped), jb_steps (delay steps: "
                                 "its packets later for good, the lateness measured "
                                 "again from them), sent_lost (packets the "
                                 "member's RTCP reports say it lost of the node's), fec_pct "
                                 "(the loss the node's Opus encoder codes in-band FEC for, "
                                 "following those reports; null: not Opus or no report "
                                 "yet), fec_recovered (lost frames its Opus decoder "
                                 "rebuilt from the member's in-band FEC); null for an "
                                 "agent"},
        "floor": {"type": "boolean"}, "joined_at": {"type": "number",
                                                   "description": "Unix time, seconds"}}}
    room = {"type": "object", "properties": {
        "name": {"type": "string"}, "uuid": {"type": "string"},
        "started_at": {"type": "number", "description": "Unix time the run started"},
        "members": {"type": "array", "items": {"$ref": "#/components/schemas/Member"}}}}
    ok = {"200": {"description": "done"}, "401": {"description": "no or wrong bearer token"},
          "404": {"description": "no such room or member"}}
    paths: dict[str, Any] = {
        "/health": {"get": {"summary": "Liveness (no auth)", "security": [],
                            "responses": {"200": {"description": "the node is up"},
                                          "503": {"description": "the node is broken (its SIP "
                                                  "thread died or a mixer clock stalled) and "
                                                  "is exiting; reason in the body"}}}},
        "/v1/dead-letters": {"get": {
            "summary": "Events no retry could deliver, newest first, with the reason",
            "parameters": [{"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}],
            "responses": {"200": {"description": "{\"dead_letters\": [...]}"},
                          "401": ok["401"]}}},
        "/v1/dead-letters/{id}": {"delete": {
            "summary": "Forget one dead letter", "parameters": [_p("id")], "responses": ok}},
        "/metrics": {"get": {"summary": "Prometheus metrics (no auth)", "security": [],
                             "responses": {"200": {"description": "text exposition"}}}},
        "/v1/rooms": {"get": {"summary": "Rooms and their members", "responses": {
            "200": {"description": "rooms", "content": {"application/json": {"schema": {
                "type": "array", "items": {"$ref": "#/components/schemas/Room"}}}}},
            "401": ok["401"]}}},
        "/v1/rooms/{room}": {"get": {"summary": "One room", "parameters": [_p("room")],
                                     "responses": {"200": {"description": "the room", "content": {
                                         "application/json": {"schema": {
                                             "$ref": "#/components/schemas/Room"}}}},
                                         "401": ok["401"], "404": ok["404"]}}},
        "/v1/rooms/{room}/end": {"post": {"summary": "Every member leaves the room (each goes "
                                                     "on with its action / next element)",
                                          "parameters": [_p("room")], "responses": ok}},
    }
    body = {"type": "object", "properties": {
        "url": {"type": "string", "description": "play: a wav or mp3 URL"},
        "text": {"type": "string", "description": "speak: the text"},
        "voice": {"type": "string"}, "language": {"type": "string"},
        "member_id": {"type": "string", "description": "only this member hears it"},
        "format": {"type": "string", "enum": ["mp3", "wav"],
                   "description": "record/start"},
        "tracks": {"type": "boolean", "description": "record/start: also one file per member "
                   "(its own voice, aligned to the mix), listed in RecordTracks"}}}
    for cmd, summary in (("play", "Play a sound URL to the room or one member"),
                         ("speak", "Speak text to the room or one member"),
                         ("record/start", "Start recording the room (RecordUrl in the reply)"),
                         ("record/stop", "Stop the room's recording")):
        paths[f"/v1/rooms/{{room}}/{cmd}"] = {"post": {
            "summary": summary, "parameters": [_p("room")],
            "requestBody": {"content": {"application/json": {"schema": body}}},
            "responses": {**ok, "400": {"description": "bad request"},
                          "409": {"description": "the room cannot take it now (its sound "
                                                 "limit, or already / not recording)"}}}}
    for action in MEMBER_ACTIONS:
        paths[f"/v1/rooms/{{room}}/members/{{member_id}}/{action}"] = {"post": {
            "summary": {"mute": "Nobody hears the member", "unmute": "Undo mute",
                        "deaf": "The member hears nobody", "undeaf": "Undo deaf",
                        "hold": "Nobody hears the member and it hears nobody; it hears the "
                                "sound at the body's \"music\" URL (wav/mp3, looped) or "
                                "silence. callbackUrl event ConferenceAction=hold",
                        "unhold": "Undo hold (ConferenceAction=unhold)",
                        "denoise": "The member's voice is denoised (speexdsp) and gated: "
                                   "while it does not talk it adds nothing to the mix",
                        "undenoise": "Its voice as it comes again",
                        "agc": "The member's level is set automatically: a quiet talker "
                               "brought up, a loud one down (towards -22 dBFS, 12 dB at most)",
                        "unagc": "Its level as it comes again",
                        "kick": "The member leaves the room and goes on with its action or "
                                "next element", "hangup": "End the member's call"}[action],
            "parameters": [_p("room"), _p("member_id")], "responses": ok}}
    paths["/v1/rooms/{room}/members/{member_id}/coach"] = {"post": {
        "summary": "The member coaches another: only that member hears it (the rest of the "
                   "room does not, nor the recording); it hears the whole room",
        "parameters": [_p("room"), _p("member_id")],
        "requestBody": {"content": {"application/json": {"schema": {
            "type": "object", "required": ["member_id"],
            "properties": {"member_id": {"type": "string", "description": "who is coached"}}}}}},
        "responses": {**ok, "400": {"description": "no member_id, or the member itself"},
                      "409": {"description": "that member hears 4 coaches already"}}}}
    paths["/v1/rooms/{room}/members/{member_id}/uncoach"] = {"post": {
        "summary": "The member stops coaching: the whole room hears it again",
        "parameters": [_p("room"), _p("member_id")], "responses": ok}}
    paths["/v1/rooms/{room}/members/{member_id}/volume"] = {"post": {
        "summary": "Set a member's volumes: in (what the room hears of it) and out (what it "
                   "hears), each in dB from -24 to +12; an absent one is left as it is",
        "parameters": [_p("room"), _p("member_id")],
        "requestBody": {"content": {"application/json": {"schema": {
            "type": "object", "properties": {
                "in": {"type": "number", "minimum": VOLUME_MIN_DB, "maximum": VOLUME_MAX_DB},
                "out": {"type": "number", "minimum": VOLUME_MIN_DB,
                        "maximum": VOLUME_MAX_DB}}}}}},
        "responses": {**ok, "400": {"description": "not a number in range"}}}}
    paths["/v1/rooms/{room}/dial"] = {"post": {
        "summary": "Call a SIP URI (or, with --register, a number at the PBX) and put the "
                   "callee in the room once it answers, as a member like any other. Only "
                   "destinations matching a --dial-allow pattern. Progress (DialStatus "
                   "ringing, answered, busy, no-answer, failed, canceled; SIPResponseCode) "
                   "goes to callbackUrl",
        "parameters": [_p("room")],
        "requestBody": {"content": {"application/json": {"schema": {
            "type": "object", "required": ["to"], "properties": {
                "to": {"type": "string", "description": "sip:user@host[:port] or a number"},
                "from": {"type": "string", "description": "caller ID: From's user part"},
                "callerName": {"type": "string", "description": "From's display name"},
                "timeout": {"type": "number", "minimum": 1, "maximum": MAX_TIMEOUT_S,
                            "description": "seconds it may ring (default 30)"},
                "attrs": {"type": "object", "description": "<Conference> attributes for "
                          "the callee (e.g. muted, callbackUrl, coach), as in answer XML"},
                "headers": {"type": "object", "description": "X-PH-* headers for the INVITE"},
                "callbackUrl": {"type": "string"},
                "callbackMethod": {"type": "string", "enum": ["GET", "POST"]}}}}}},
        "responses": {"200": {"description": "{ok, call_uuid, to, from, ignored}: ringing"},
                      "400": {"description": "bad request"},
                      "401": ok["401"],
                      "403": {"description": "not an allowed destination (--dial-allow)"},
                      "429": {"description": "max_dials ringing or dial_rate passed "
                                             "(Retry-After)"},
                      "502": {"description": "the INVITE could not be sent"},
                      "503": {"description": "at capacity or stopping"}}}}
    paths["/v1/rooms/{room}/agents"] = {"post": {
        "summary": "An AI agent joins the room: the node opens a WebSocket to url (Plivo's "
                   "Audio Streaming protocol, bidirectional); the agent hears the room's N-1 "
                   "mix (its inbound track) and what it plays (playAudio) is mixed into the "
                   "room; a member like any other (listed, muted, kicked, hung up)",
        "parameters": [_p("room")],
        "requestBody": {"content": {"application/json": {"schema": {
            "type": "object", "required": ["url"], "properties": {
                "url": {"type": "string", "description": "ws:// or wss://"},
                "contentType": {"type": "string", "enum": [
                    "audio/x-l16;rate=16000", "audio/x-l16;rate=8000",
                    "audio/x-mulaw;rate=8000"]},
                "protocol": {"type": "string", "enum": ["plivo", "twilio"],
                             "description": "the messages' dialect: Plivo's Audio Streaming "
                                            "(default) or Twilio's Media Streams (μ-law only)"},
                "muted": {"type": "boolean"}, "name": {"type": "string"},
                "extraHeaders": {"type": "string"},
                "statusCallbackUrl": {"type": "string"},
                "statusCallbackMethod": {"type": "string", "enum": ["GET", "POST"]},
                "attrs": {"type": "object", "description": "<Conference> attributes"}}}}}},
        "responses": {"200": {"description": "{ok, call_uuid, member_id, stream_id}"},
                      "400": {"description": "bad request"}, "401": ok["401"],
                      "404": {"description": "no such room"},
                      "429": {"description": "max_agents reached"}}}}
    paths["/v1/dials"] = {"get": {"summary": "Dial-outs still ringing",
                                  "responses": {"200": {"description": "{\"dials\": [...]}"},
                                                "401": ok["401"]}}}
    paths["/v1/dials/{call_uuid}"] = {"delete": {
        "summary": "Cancel a dial-out that is still ringing (DialStatus canceled)",
        "parameters": [_p("call_uuid")], "responses": {**ok, "404": {
            "description": "no such dial-out ringing"}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "sipconf control API", "version": "1"},
        "components": {"schemas": {"Member": member, "Room": room},
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                           "basic": {"type": "http", "scheme": "basic"}}},
        "security": [{"bearer": []}],
        "paths": {**paths, **plivo_api.openapi_paths()},  # Plivo's shape: with --auth-id
    }


def _p(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


_ROOM = re.compile(r"^/v1/rooms/([^/]+)$")
_END = re.compile(r"^/v1/rooms/([^/]+)/end$")
_COMMAND = re.compile(r"^/v1/rooms/([^/]+)/(play|speak|record/start|record/stop)$")
MAX_BODY = 64 * 1024
_DEAD = re.compile(r"^/v1/dead-letters/([0-9]{1,18})$")
_VOLUME = re.compile(r"^/v1/rooms/([^/]+)/members/([^/]+)/volume$")
_DIAL = re.compile(r"^/v1/rooms/([^/]+)/dial$")
_AGENTS = re.compile(r"^/v1/rooms/([^/]+)/agents$")
_DIALING = re.compile(r"^/v1/dials/([0-9a-f\-]{36})$")
_COACH = re.compile(r"^/v1/rooms/([^/]+)/members/([^/]+)/(coach|uncoach)$")
_MEMBER = re.compile(r"^/v1/rooms/([^/]+)/members/([^/]+)/(" + "|".join(MEMBER_ACTIONS) + r")$")


class ControlApi:
    """ASGI app for /health, /openapi.json and /v1/...; each request is its own unit: an
    unexpected error is counted and answered with a JSON 500, nothing else is touched."""

    def __init__(self, node: Controls, token: str | None, faults: Faults | None = None):
        self.node = node
        self.token = token
        self.faults = faults or Faults()

    async def __call__(self, scope, receive, send) -> None:
        started = False

        async def tracked(msg) -> None:
            nonlocal started
            started = started or msg["type"] == "http.response.start"
            await send(msg)

        try:
            await self._handle(scope, receive, tracked)
        except Exception as exc:  # noqa: BLE001 - the boundary of one request
            self.faults.record("api", exc)
            if not started:
                await _json(send, 500, {"error": "internal error (see the node's log)"})

    async def _handle(self, scope, receive, send) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/health":
            broken = self.node.health()
            if broken:
                return await _json(send, 503, {"status": "broken", "reason": broken})
            return await _json(send, 200, {"status": "ok"})
        if path == "/openapi.json":
            return await _json(send, 200, openapi())
        if path == "/metrics":
            data = (await self.node.metrics_text()).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/plain; version=0.0.4"),
                (b"content-length", str(len(data)).encode())]})
            return await send({"type": "http.response.body", "body": data})
        if not path.startswith("/v1/"):
            return await _json(send, 404, {"error": "not found"})
        if not self._authorized(dict(scope["headers"]).get(b"authorization", b"")):
            return await _json(send, 401, {"error": "bearer token required"},
                               [(b"www-authenticate", b"Bearer")])
        if path == "/v1/rooms" and method == "GET":
            return await _json(send, 200, await self.node.rooms_info())
        if path == "/v1/dead-letters" and method == "GET":
            query = dict(p.split("=", 1) for p in scope.get("query_string", b"").decode(
                "latin-1").split("&") if "=" in p)
            limit = query.get("limit", "100")
            if not re.fullmatch(r"[0-9]{1,4}", limit) or not 1 <= int(limit) <= 1000:
                return await _json(send, 400, {"error": "limit must be 1-1000"})
            return await _json(send, 200, {"dead_letters": self.node.dead_letters(int(limit))})
        if (m := _DEAD.match(path)) and method == "DELETE":
            ok = self.node.forget_dead_letter(int(m.group(1)))
            return await _json(send, 200 if ok else 404, {"ok": ok})
        if (m := _ROOM.match(path)) and method == "GET":
            info = await self.node.room_info(unquote(m.group(1)))
            return await _json(send, 200 if info else 404, info or {"error": "no such room"})
        if (m := _END.match(path)) and method == "POST":
            ok = self.node.end_room(unquote(m.group(1)))
            return await _json(send, 200 if ok else 404, {"ok": ok})
        if (m := _COMMAND.match(path)) and method == "POST":
            try:
                body = await _read_json(receive)
            except ValueError as exc:
                return await _json(send, 400, {"ok": False, "error": str(exc)})
            result = await self.node.room_command(unquote(m.group(1)), m.group(2), body)
            if result is None:
                return await _json(send, 404, {"error": "no such room or member"})
            status = 200 if result.get("ok") else result.pop("status", 400)
            result.pop("status", None)
            return await _json(send, status, result)
        if (m := _DIAL.match(path)) and method == "POST":
            try:
                body = await _read_json(receive)
            except ValueError as exc:
                return await _json(send, 400, {"ok": False, "error": str(exc)})
            status, reply, headers = await self.node.dial(unquote(m.group(1)), body)
            return await _json(send, status, {"ok": False, **reply} if status != 200 else reply,
                               headers)
        if (m := _AGENTS.match(path)) and method == "POST":
            try:
                body = await _read_json(receive)
            except ValueError as exc:
                return await _json(send, 400, {"ok": False, "error": str(exc)})
            status, reply = await self.node.add_agent(unquote(m.group(1)), body)
            return await _json(send, status, reply if status == 200 else {"ok": False, **reply})
        if path == "/v1/dials" and method == "GET":
            return await _json(send, 200, {"dials": self.node.dials_info()})
        if (m := _DIALING.match(path)) and method == "DELETE":
            ok = await self.node.cancel_dial(m.group(1))
            return await _json(send, 200 if ok else 404, {"ok": ok})
        if (m := _COACH.match(path)) and method == "POST":
            target = None
            if m.group(3) == "coach":
                try:
                    target = (await _read_json(receive)).get("member_id")
                except ValueError as exc:
                    return await _json(send, 400, {"ok": False, "error": str(exc)})
                if isinstance(target, int) and not isinstance(target, bool):
                    target = str(target)
                if not isinstance(target, str) or not target or target == unquote(m.group(2)):
                    return await _json(send, 400, {"ok": False, "error": "member_id must name "
                                                   "another member of the room"})
            status = await self.node.member_coach(unquote(m.group(1)), unquote(m.group(2)),
                                                  target)
            errors = {404: "no such room or member", 409: "that member hears 4 coaches already"}
            return await _json(send, status, {"ok": status == 200} | (
                {"error": errors[status]} if status in errors else {}))
        if (m := _VOLUME.match(path)) and method == "POST":
            try:
                body = await _read_json(receive)
                levels = {k: _volume(body, k) for k in ("in", "out")}
            except ValueError as exc:
                return await _json(send, 400, {"ok": False, "error": str(exc)})
            if levels["in"] is None and levels["out"] is None:
                return await _json(send, 400, {"ok": False, "error": "give in and/or out"})
            ok = await self.node.member_volume(unquote(m.group(1)), unquote(m.group(2)),
                                               levels["in"], levels["out"])
            return await _json(send, 200 if ok else 404, {"ok": ok})
        if (m := _MEMBER.match(path)) and method == "POST":
            music = ""
            if m.group(3) == "hold":
                try:
                    music = (await _read_json(receive)).get("music") or ""
                except ValueError as exc:
                    return await _json(send, 400, {"ok": False, "error": str(exc)})
                if not isinstance(music, str) or len(music) > MAX_URL or (
                        music and not re.match(r"https?://[^\s]+$", music)):
                    return await _json(send, 400, {"ok": False, "error": "music must be an "
                                                   f"http(s) URL of at most {MAX_URL} chars"})
            ok = await self.node.member_action(unquote(m.group(1)), unquote(m.group(2)),
                                               m.group(3), music)
            return await _json(send, 200 if ok else 404, {"ok": ok})
        return await _json(send, 404 if method in ("GET", "POST", "DELETE") else 405,
                           {"error": "no such endpoint"})

    def _authorized(self, header: bytes) -> bool:
        if not self.token or not header.startswith(b"Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip(), self.token.encode())


def _volume(body: dict, key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not VOLUME_MIN_DB <= value <= VOLUME_MAX_DB:
        raise ValueError(f"{key} must be a number of dB from {VOLUME_MIN_DB:g} to "
                         f"{VOLUME_MAX_DB:g}")
    return float(value)


async def _read_json(receive) -> dict:
    data = b""
    while True:
        msg = await receive()
        data += msg.get("body", b"")
        if len(data) > MAX_BODY:
            raise ValueError("body too large")
        if not msg.get("more_body"):
            break
    if not data.strip():
        return {}
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise ValueError("body is not JSON") from None
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


async def _json(send, status: int, body: Any, headers: list | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": data})
