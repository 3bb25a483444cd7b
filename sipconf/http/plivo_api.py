"""Plivo's Conference API shape, beside the node's own ``/v1/rooms`` (``api.py``), so an app
written against the official ``plivo`` SDK's ``RestClient`` drives live rooms unchanged.

Paths, methods, parameters and response shapes are Plivo's (``plivo/resources/conferences.py``
of the SDK; Plivo's API reference): under ``/v1/Account/{auth_id}/Conference/``, HTTP Basic
auth with the node's ``auth_id`` and ``auth_token``. Every action is carried out by the same
backend as ``/v1/rooms`` (``sipconf/control.py``); this module only translates. A conference
is a room, a member id is the room run's member id (1, 2, ... per run, as Plivo counts them).
Every reply is JSON with an ``api_id``; errors carry ``error`` (the SDK raises with it).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import re
import time
import uuid
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote

from sipconf.faults import Faults

log = logging.getLogger("sipconf.api")

PREFIX = "/v1/Account/"
MAX_BODY = 64 * 1024
MAX_PATH = 4096
MAX_MEMBERS = 100  # ids in one comma list
_ID = re.compile(r"^[0-9]{1,9}$")

# (path's action, method) -> (the backend's member action, reply status, message)
_MEMBER_FLAGS = {
    ("Mute", "POST"): ("mute", 202, "muted"),
    ("Mute", "DELETE"): ("unmute", 204, "unmuted"),
    ("Deaf", "POST"): ("deaf", 202, "deaf"),
    ("Deaf", "DELETE"): ("undeaf", 204, "undeaf"),
    ("Kick", "POST"): ("kick", 202, "kicked"),
}
_ALLOWED = {"Mute": "POST, DELETE", "Deaf": "POST, DELETE", "Kick": "POST",
            "Play": "POST, DELETE", "Speak": "POST, DELETE", "Record": "POST, DELETE",
            "": "DELETE", "conference": "GET, DELETE", "list": "GET, DELETE"}


class PlivoControls(Protocol):
    """What this API needs from the node (``control.Control`` has it all)."""

    async def rooms_info(self) -> list[dict[str, Any]]: ...
    async def room_info(self, name: str) -> dict[str, Any] | None: ...
    async def member_action(self, room: str, member_id: str, action: str) -> bool: ...
    def end_room(self, room: str) -> bool: ...
    async def room_command(self, room: str, command: str, body: dict) -> dict | None: ...
    async def members_sound(self, room: str, command: str, body: dict,
                            member_ids: list[str]) -> dict | None: ...
    def stop_member_sounds(self, room: str, member_ids: list[str]) -> bool: ...


class BadRequest(Exception):
    """A request we answer with ``status`` and a JSON ``error`` (never a 500)."""

    def __init__(self, status: int, error: str, headers: list | None = None):
        super().__init__(error)
        self.status, self.error, self.headers = status, error, headers or []


class PlivoApi:
    """ASGI app for ``/v1/Account/...``. Without both ``auth_id`` and ``auth_token``
    configured it answers 401 to everything (as the bearer API does without its token). Each
    request is its own unit: an unexpected error is counted and answered with a JSON 500."""

    def __init__(self, node: PlivoControls, auth_id: str | None, auth_token: str | None,
                 faults: Faults | None = None):
        self.node = node
        self.auth_id = auth_id or None
        self.auth_token = auth_token or None
        self.faults = faults or Faults()

    async def __call__(self, scope, receive, send) -> None:
        api_id = str(uuid.uuid4())
        try:  # (_handle only decides: nothing is sent before _reply)
            status, body, headers = await self._handle(scope, receive, api_id)
        except BadRequest as exc:
            status, body, headers = exc.status, {"api_id": api_id, "error": exc.error}, \
                exc.headers
        except Exception as exc:  # noqa: BLE001 - the boundary of one request
            self.faults.record("api", exc)
            status, headers = 500, []
            body = {"api_id": api_id, "error": "internal error (see the node's log)"}
        await _reply(send, status, body, headers)

    async def _handle(self, scope, receive, api_id: str) -> tuple[int, Any, list]:
        headers = dict(scope.get("headers") or [])
        self._authenticate(headers.get(b"authorization", b""))
        raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
        if len(raw) > MAX_PATH:
            raise BadRequest(414, "path too long")
        try:
            parts = [unquote(p, errors="strict") for p in
                     raw.split(b"?", 1)[0].decode("ascii").split("/")]
        except UnicodeError:
            raise BadRequest(400, "path is not valid UTF-8") from None
        # "", "v1", "Account", auth_id, "Conference", ...; the SDK ends every path with "/"
        if parts and parts[-1] == "":
            parts.pop()
        if len(parts) < 4 or parts[:3] != ["", "v1", "Account"]:
            raise BadRequest(404, "no such resource")
        if not hmac.compare_digest(parts[3].encode(), (self.auth_id or "").encode()):
            raise BadRequest(401, "the account in the path is not the authenticated one")
        rest, method = parts[4:], scope["method"]
        if not rest or rest[0] != "Conference":
            raise BadRequest(404, "no such resource (this node serves Conference/ only)")
        rest = rest[1:]
        if any(not p for p in rest) or any("\0" in p for p in rest):
            raise BadRequest(404, "no such resource")
        body = await _read_body(receive, headers) if method in ("POST", "DELETE") else {}
        if not rest:
            return await self._conferences(method, api_id)
        name = rest[0]
        if len(rest) == 1:
            return await self._conference(method, name, api_id)
        if rest[1] == "Record" and len(rest) == 2:
            return await self._record(method, name, body, api_id)
        if rest[1] == "Member" and 3 <= len(rest) <= 4:
            return await self._member(method, name, rest[2], rest[3] if len(rest) == 4 else "",
                                      body, api_id)
        raise BadRequest(404, "no such resource")

    def _authenticate(self, header: bytes) -> None:
        """HTTP Basic with the node's auth id and token, compared in constant time."""
        challenge = [(b"www-authenticate", b'Basic realm="sipconf"')]
        if not (self.auth_id and self.auth_token):
            raise BadRequest(401, "this node has no auth_id/auth_token: the Conference API "
                                  "is off", challenge)
        if not header[:6].lower() == b"basic ":
            raise BadRequest(401, "HTTP Basic auth (auth id, auth token) required", challenge)
        try:
            user, _, password = base64.b64decode(header[6:].strip(), validate=True) \
                .partition(b":")
        except (binascii.Error, ValueError):
            raise BadRequest(401, "malformed Basic credentials", challenge) from None
        ok_user = hmac.compare_digest(user, self.auth_id.encode())
        ok_token = hmac.compare_digest(password, self.auth_token.encode())
        if not (ok_user and ok_token):
            raise BadRequest(401, "authentication failed", challenge)

    async def _conferences(self, method: str, api_id: str) -> tuple[int, Any, list]:
        if method == "GET":
            names = [r["name"] for r in await self.node.rooms_info()]
            return 200, {"api_id": api_id, "conferences": names}, []
        if method == "DELETE":
            for r in await self.node.rooms_info():
                self.node.end_room(r["name"])
            log.info("Conference API: all conferences hung up")
            return 204, None, []
        raise _not_allowed("list")

    async def _conference(self, method: str, name: str, api_id: str) -> tuple[int, Any, list]:
        if method == "GET":
            info = await self.node.room_info(name)
            if info is None:
                raise BadRequest(404, f"conference {name!r} not found")
            return 200, {**conference_json(info), "api_id": api_id}, []
        if method == "DELETE":
            if not self.node.end_room(name):
                raise BadRequest(404, f"conference {name!r} not found")
            return 204, None, []
        raise _not_allowed("conference")

    async def _member(self, method: str, name: str, member: str, action: str, body: dict,
                      api_id: str) -> tuple[int, Any, list]:
        if action not in _ALLOWED or action in ("Record", "conference", "list"):
            raise BadRequest(404, "no such resource")
        if method not in _ALLOWED[action].split(", "):
            raise _not_allowed(action)
        ids = await self._members(name, member)
        reply_ids: str | list[str] = ids[0] if member != "all" and len(ids) == 1 else ids
        if action == "" or (action, method) in _MEMBER_FLAGS:
            backend, status, message = ("hangup", 204, "hangup") if action == "" else \
                _MEMBER_FLAGS[(action, method)]
            for i in ids:  # (a member gone meanwhile, e.g. endConferenceOnExit: nothing to do)
                await self.node.member_action(name, i, backend)
            return status, {"api_id": api_id, "message": message, "member_id": reply_ids}, []
        if method == "DELETE":  # stop Play / Speak
            if not self.node.stop_member_sounds(name, ids):
                raise BadRequest(404, "conference or member gone")
            return 204, None, []
        command = "play" if action == "Play" else "speak"
        result = await self.node.members_sound(name, command, _sound_body(command, body), ids)
        if result is None:
            raise BadRequest(404, "conference or member gone")
        if not result.get("ok"):
            raise BadRequest(int(result.get("status", 400)), str(result.get("error", "")))
        message = f"{command} queued into conference"
        return 202, {"api_id": api_id, "message": message, "member_id": reply_ids}, []

    async def _members(self, name: str, member: str) -> list[str]:
        """``all``, one id or a comma list: the member ids, each in the conference (404
        naming the missing ones otherwise; nothing is done then)."""
        info = await self.node.room_info(name)
        if info is None:
            raise BadRequest(404, f"conference {name!r} not found")
        present = [m["member_id"] for m in info["members"]]
        if member == "all":
            return present
        ids = [i.strip() for i in member.split(",")]
        if len(ids) > MAX_MEMBERS or not all(_ID.match(i) for i in ids):
            raise BadRequest(400, "member_id must be 'all' or member ids (digits) separated "
                                  f"by commas, at most {MAX_MEMBERS}")
        ids = list(dict.fromkeys(ids))
        missing = [i for i in ids if i not in present]
        if missing:
            raise BadRequest(404, f"member {','.join(missing)} not in conference {name!r}")
        return ids

    async def _record(self, method: str, name: str, body: dict,
                      api_id: str) -> tuple[int, Any, list]:
        if method == "POST":
            fmt = body.get("file_format", "mp3")
            if fmt is None:
                fmt = "mp3"
            if not isinstance(fmt, str) or fmt not in ("mp3", "wav"):
                raise BadRequest(400, "file_format must be mp3 or wav")
            result = await self.node.room_command(name, "record/start", {"format": fmt})
            if result is None:
                raise BadRequest(404, f"conference {name!r} not found")
            if not result.get("ok"):
                raise BadRequest(int(result.get("status", 400)), str(result.get("error", "")))
            return 202, {"api_id": api_id, "message": "conference recording started",
                         "url": result.get("RecordUrl", ""),
                         "recording_id": result.get("RecordingID", "")}, []
        if method == "DELETE":
            result = await self.node.room_command(name, "record/stop", {})
            if result is None:
                raise BadRequest(404, f"conference {name!r} not found")
            if not result.get("ok"):
                raise BadRequest(int(result.get("status", 409)), str(result.get("error", "")))
            return 204, None, []
        raise _not_allowed("Record")


def conference_json(info: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """A room as Plivo's conference object: counts and times are strings of whole seconds,
    as Plivo sends them; ``muted``/``deaf`` are booleans."""
    now = time.time() if now is None else now
    started = info.get("started_at")
    joins = [m["joined_at"] for m in info["members"]]
    begun = started if started is not None else min(joins, default=now)
    return {
        "conference_name": info["name"],
        "conference_run_time": str(max(0, int(now - begun))),
        "conference_member_count": str(len(info["members"])),
        "members": [{
            "member_id": m["member_id"], "muted": m["muted"], "deaf": m["deaf"],
            "from": m.get("from", ""), "to": m.get("to", ""),
            "caller_name": m.get("caller_name", ""), "direction": "inbound",
            "call_uuid": m["call_uuid"],
            "join_time": str(max(0, int(now - m["joined_at"])))} for m in info["members"]],
    }


def _sound_body(command: str, body: dict) -> dict:
    """Plivo's Play/Speak parameters to the control backend's body (it checks them)."""
    if command == "play":
        return {"url": body.get("url")}
    out: dict[str, Any] = {"text": body.get("text")}
    for key in ("voice", "language"):  # Plivo's voice names are mapped when spoken
        if body.get(key) is not None:
            out[key] = body[key]
    return out


def _not_allowed(resource: str) -> BadRequest:
    allow = _ALLOWED[resource]
    return BadRequest(405, f"method not allowed here (allowed: {allow})",
                      [(b"allow", allow.encode())])


async def _read_body(receive, headers: dict) -> dict:
    """A JSON object (what the SDK sends) or a form (what curl users send); bounded."""
    data = b""
    while True:
        msg = await receive()
        data += msg.get("body", b"")
        if len(data) > MAX_BODY:
            raise BadRequest(413, f"body larger than {MAX_BODY} bytes")
        if not msg.get("more_body"):
            break
    if not data.strip():
        return {}
    ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    if ctype == b"application/x-www-form-urlencoded":
        try:
            return dict(parse_qsl(data.decode("utf-8"), keep_blank_values=True,
                                  errors="strict", max_num_fields=100))
        except (UnicodeError, ValueError):
            raise BadRequest(400, "body is not a valid form") from None
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise BadRequest(400, "body is not JSON (nor a form)") from None
    if not isinstance(body, dict):
        raise BadRequest(400, "body must be a JSON object")
    return body


async def _reply(send, status: int, body: Any, headers: list) -> None:
    data = b"" if status == 204 or body is None else json.dumps(body).encode()
    base = [(b"content-length", str(len(data)).encode())]
    if data:
        base.insert(0, (b"content-type", b"application/json"))
    await send({"type": "http.response.start", "status": status, "headers": base + headers})
    await send({"type": "http.response.body", "body": data})


def openapi_paths() -> dict[str, Any]:
    """This API's paths for the node's /openapi.json (HTTP Basic: auth id, auth token), made
    from the same tables the router uses."""
    basic = [{"basic": []}]
    p = {n: {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
         for n in ("auth_id", "name", "member_id")}
    done = {"200": {"description": "done (JSON with api_id)"},
            "202": {"description": "accepted (JSON with api_id, message)"},
            "204": {"description": "done, no body"},
            "401": {"description": "Basic auth missing or wrong"},
            "404": {"description": "no such conference or member"}}

    def ops(methods: str, summary: str, params: list, body: dict | None = None) -> dict:
        out = {}
        for m in methods.split(", "):
            op = {"summary": summary, "security": basic, "parameters": params,
                  "responses": done}
            if body and m == "POST":
                op["requestBody"] = {"content": {"application/x-www-form-urlencoded": {
                    "schema": {"type": "object", "properties": body}}}}
            out[m.lower()] = op
        return out

    base = f"{PREFIX}{{auth_id}}/Conference/"
    room, member = [p["auth_id"], p["name"]], [p["auth_id"], p["name"], p["member_id"]]
    text = {"type": "string"}
    paths = {
        base: ops(_ALLOWED["list"], "Conferences (GET: names; DELETE: hang up all)",
                  [p["auth_id"]]),
        f"{base}{{name}}/": ops(_ALLOWED["conference"], "One conference (GET: its members; "
                                "DELETE: every member leaves)", room),
        f"{base}{{name}}/Record/": ops(_ALLOWED["Record"], "Start (POST) or stop (DELETE) "
                                       "recording", room, {"file_format": text}),
        f"{base}{{name}}/Member/{{member_id}}/": ops(_ALLOWED[""], "Hang up the member(s) "
                                                    "(ids comma-separated, or all)", member),
    }
    bodies = {"Play": {"url": text}, "Speak": {"text": text, "voice": text, "language": text}}
    for action, summary in (("Mute", "Mute (POST) or unmute (DELETE)"),
                            ("Deaf", "Deafen (POST) or undeafen (DELETE)"),
                            ("Kick", "Take out of the conference (it goes on with its action)"),
                            ("Play", "Play a sound URL to (POST), or stop it for (DELETE)"),
                            ("Speak", "Speak text to (POST), or stop it for (DELETE)")):
        paths[f"{base}{{name}}/Member/{{member_id}}/{action}/"] = ops(
            _ALLOWED[action], f"{summary} the member(s)", member, bodies.get(action))
    return paths
