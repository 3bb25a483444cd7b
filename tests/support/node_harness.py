"""Runs a real :class:`sipconf.node.Node` in-process, without pjsua2, the C mixer or a network:

- the engine is :class:`support.fake_engine.FakeEngine` (``Node(engine_factory=...)``);
- every HTTP request the node makes (answer, Redirect, action, callbacks, sound files and sound
  documents) goes to :class:`WebApp` through an ``httpx.MockTransport`` (``Node(transport=...)``);
- time is a trio ``MockClock`` that jumps ahead whenever every task is idle, so a ``<Wait
  length="3600">`` costs nothing. Work the node hands to real threads or processes (audio
  decoding, espeak-ng) freezes the mock clock until it is done (:class:`FreezingClock`), so a
  bounded wait around it (``fail_after``) does not expire in virtual time while the real work
  runs;
- the HTTP server is not started (the ``serve`` node.py calls is replaced by a stub that keeps the
  ASGI app it was given); tests call that app directly (:meth:`Harness.api`);
- ``python -m sipconf.media.transcribe`` (pocketsphinx) is answered by a stub.

Usage: ``h = run_node(body, app=WebApp(...), max_wait_seconds=5)`` where ``body`` is an
``async def body(h: Harness)``; the node is stopped after it, and ``h`` is returned for checks.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import math
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import numpy as np
import pytest
import trio
import trio.testing

from sipconf import node as node_module
from sipconf.config import NodeConfig
from sipconf.node import Node, NodeBroken

from .fake_engine import FakeEngine

BASE = "http://app.test"
API_TOKEN = "test-api-token"


# --- time -----------------------------------------------------------------------------------------


class FreezingClock:
    """An autojumping MockClock (made by :meth:`new`) that stands still while real work (a
    worker thread, a child process) is in progress: virtual time then waits for it, as real
    time would. (MockClock cannot be subclassed: this keeps the busy count beside it.)"""

    _busy: dict[int, int] = {}

    @staticmethod
    def new() -> trio.testing.MockClock:
        return trio.testing.MockClock(autojump_threshold=0)

    @classmethod
    @contextlib.contextmanager
    def busy(cls, clock: trio.testing.MockClock):
        cls._busy[id(clock)] = cls._busy.get(id(clock), 0) + 1
        clock.autojump_threshold = math.inf
        try:
            yield
        finally:
            cls._busy[id(clock)] -= 1
            if cls._busy[id(clock)] == 0:
                del cls._busy[id(clock)]
                clock.autojump_threshold = 0


def _frozen(fn):
    async def wrapper(*args, **kwargs):
        clock = trio.lowlevel.current_clock()
        if isinstance(clock, trio.testing.MockClock):
            with FreezingClock.busy(clock):
                return await fn(*args, **kwargs)
        return await fn(*args, **kwargs)

    return wrapper


def _run_process_stub(real):
    frozen = _frozen(real)

    async def run_process(command, *args, **kwargs):
        if any(str(arg).endswith(".transcribe") for arg in command):  # pocketsphinx: slow
            out = json.dumps({"text": "hello world", "duration": 1.0}).encode()
            await trio.lowlevel.checkpoint()
            return subprocess.CompletedProcess(command, 0, out, b"")
        return await frozen(command, *args, **kwargs)

    return run_process


# --- the customer's web app -----------------------------------------------------------------------


def wav_bytes(seconds: float = 0.5, rate: int = 8000, hz: float = 440.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.2 * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


@dataclass
class Req:
    method: str
    url: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    at: float  # trio time
    form: dict[str, str] = field(default_factory=dict)  # a POST's form fields alone


Reply = tuple[int, bytes | str] | bytes | str


@dataclass
class WebApp:
    """The web app the node talks to. ``routes`` maps a path to a reply (a body, or
    ``(status, body)``) or to ``fn(req) -> reply`` (or ``async def fn``); ``answer`` gives
    the answer document per dialled user (``To``), or ``answer_fn(req)`` decides. Every
    request is kept in ``requests``."""

    answer: dict[str, Reply] = field(default_factory=dict)
    answer_fn: Callable[[Req], Reply] | None = None
    routes: dict[str, Reply | Callable[[Req], Reply]] = field(default_factory=dict)
    requests: list[Req] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.routes.setdefault("/s.wav", wav_bytes(0.5))
        self.routes.setdefault("/cb", "")
        self.routes.setdefault("/action", "")

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        split = urlsplit(str(request.url))
        params = dict(request.url.params)
        form: dict[str, str] = {}
        if request.method == "POST" and request.content:
            form = dict(parse_qsl(request.content.decode(), keep_blank_values=True))
            params.update(form)
        try:
            now = trio.current_time()
        except RuntimeError:
            now = 0.0
        req = Req(request.method, str(request.url), split.path, params, dict(request.headers),
                  now, form)
        self.requests.append(req)
        if split.path == "/answer":
            reply = (self.answer_fn(req) if self.answer_fn is not None
                     else self.answer.get(params.get("To", ""), (404, "no document")))
        else:
            route = self.routes.get(split.path, (404, "not found"))
            reply = route(req) if callable(route) else route
        if inspect.isawaitable(reply):
            reply = await reply  # a route that takes its time (async def)
        status, body = reply if isinstance(reply, tuple) else (200, reply)
        if isinstance(body, str):
            body = body.encode()
        ctype = "audio/wav" if body[:4] == b"RIFF" else "text/xml"
        return httpx.Response(status, content=body, headers={"content-type": ctype})

    # queries

    def to(self, path: str) -> list[Req]:
        return [r for r in self.requests if r.path == path]

    def events(self, path: str = "/cb", call_uuid: str | None = None) -> list[Req]:
        return [r for r in self.requests if r.path == path
                and (call_uuid is None or r.params.get("CallUUID") == call_uuid)]

    def actions_of(self, call_uuid: str, path: str = "/action") -> list[Req]:
        return self.events(path, call_uuid)


# --- the harness ----------------------------------------------------------------------------------


@dataclass
class Harness:
    app: WebApp
    config: NodeConfig
    clock: trio.testing.MockClock
    node: Node | None = None
    http_app: Any = None  # the ASGI app the node would serve (recordings + control API)
    broken: NodeBroken | None = None  # what node.run raised
    run_done: trio.Event = field(default_factory=trio.Event)

    @property
    def engine(self) -> FakeEngine:
        return self.node.engine  # type: ignore[return-value]

    async def wait_until(self, pred: Callable[[], bool], timeout: float = 120.0,
                         step: float = 0.05, what: str = "condition") -> None:
        with trio.move_on_after(timeout):
            while not pred():
                await trio.sleep(step)
            return
        raise AssertionError(f"timed out (virtual {timeout} s) waiting for {what}")

    async def call(self, to_user: str, uuid: str | None = None, **kw) -> str:
        uuid = self.engine.incoming(uuid, to_user, **kw)
        await trio.sleep(0.01)
        return uuid

    async def joined(self, uuid: str, timeout: float = 60.0) -> str:
        """Wait until the call is in a mixer room; returns the room key (ConferenceUUID)."""
        await self.wait_until(lambda: self.engine.room_of(uuid) is not None, timeout,
                              what=f"{uuid} joined")
        return self.engine.room_of(uuid)  # type: ignore[return-value]

    async def ended(self, uuid: str, timeout: float = 60.0) -> None:
        await self.wait_until(lambda: self.engine.calls[uuid].ended
                              and uuid not in self.node.calls, timeout, what=f"{uuid} ended")

    async def asgi(self, method: str, path: str, data: bytes, headers: list[tuple[bytes, bytes]],
                   *, raw_path: bytes | None = None,
                   query: bytes = b"") -> tuple[int, bytes, dict[str, str]]:
        """One request to the node's HTTP app (ASGI, in-process); (status, body, headers)."""
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": method, "scheme": "http", "path": path,
                 "raw_path": path.encode() if raw_path is None else raw_path,
                 "query_string": query, "root_path": "",
                 "headers": [(b"host", b"node.test"), *headers],
                 "client": ("127.0.0.1", 1234), "server": ("127.0.0.1", 8080)}
        pending = [{"type": "http.request", "body": data, "more_body": False}]
        sent: list[dict] = []

        async def receive():
            if pending:
                return pending.pop(0)
            await trio.sleep_forever()

        async def send(msg):
            sent.append(msg)

        await self.http_app(scope, receive, send)
        start = next(m for m in sent if m["type"] == "http.response.start")
        content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return start["status"], content, {k.decode(): v.decode() for k, v in start["headers"]}

    async def api(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                  token: str | None = API_TOKEN, query: bytes = b"") -> tuple[int, Any]:
        """One request to the node's own API (Bearer token); (status, JSON or text)."""
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        headers = [(b"content-type", b"application/json")]
        if token is not None:
            headers.append((b"authorization", f"Bearer {token}".encode()))
        status, content, _ = await self.asgi(method, path, data, headers, query=query)
        try:
            return status, json.loads(content)
        except ValueError:
            return status, content.decode(errors="replace")


def make_config(app_base: str = BASE, **overrides: Any) -> NodeConfig:
    opts: dict[str, Any] = dict(
        answer_url=f"{app_base}/answer", data_dir=tempfile.mkdtemp(prefix="sipconf-test-"),
        http_port=18080, api_token=API_TOKEN, auth_token="webhook-key")
    opts.update(overrides)
    return NodeConfig(**opts)


def run_node(body: Callable[[Harness], Awaitable[None]], *, app: WebApp | None = None,
             setup: Callable[[FakeEngine], None] | None = None, timeout: float = 20_000.0,
             **config: Any) -> Harness:
    """Start a node (fake engine, mock web app, mock clock), run ``body(h)``, stop the node;
    returns the harness for checks after the stop. ``timeout`` is in virtual seconds."""
    app = app or WebApp()
    cfg = make_config(**config)
    clock = FreezingClock.new()
    h = Harness(app, cfg, clock)

    async def fake_serve(asgi_app, host, port, *, task_status=trio.TASK_STATUS_IGNORED):
        h.http_app = asgi_app
        task_status.started()
        await trio.sleep_forever()

    async def main() -> None:
        h.run_done = trio.Event()
        h.node = Node(cfg, engine_factory=FakeEngine, transport=app.transport)
        if setup is not None:
            setup(h.engine)

        async def runner(task_status=trio.TASK_STATUS_IGNORED):
            try:
                await h.node.run(task_status=task_status)
            except NodeBroken as exc:
                h.broken = exc
            finally:
                h.run_done.set()

        with trio.fail_after(timeout):
            async with trio.open_nursery() as nursery:
                await nursery.start(runner)
                await body(h)
                h.node.stop()

    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(node_module.web, "serve", fake_serve)  # whatever module node.py serves with
            mp.setattr(trio.to_thread, "run_sync", _frozen(trio.to_thread.run_sync))
            mp.setattr(trio, "run_process", _run_process_stub(trio.run_process))
            trio.run(main, clock=clock)
    finally:
        if "data_dir" not in config:
            shutil.rmtree(cfg.data_dir, ignore_errors=True)
    return h
