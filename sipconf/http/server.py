"""The node's HTTP server (hypercorn on trio): recordings at unguessable URLs (with Range)
and the live-control API (api.py), one small ASGI app."""

from __future__ import annotations

import re
from pathlib import Path

import trio

from sipconf.media.recording import FORMATS

CHUNK = 64 * 1024
_NAME = re.compile(r"^/recordings/([A-Za-z0-9_-]{16,64})\.(wav|mp3)$")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b`` / ``a-`` / ``-n`` to an inclusive (start, end); None if unsatisfiable.
    Several ranges are answered with the first."""
    m = re.match(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)", header)
    if not m or (not m.group(1) and not m.group(2)) or size == 0:
        return None
    if not m.group(1):
        n = int(m.group(2))
        if n == 0:
            return None
        return max(0, size - n), size - 1
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


class RecordingsApp:
    """ASGI: GET/HEAD /recordings/<id>.<wav|mp3> from ``directory``."""

    def __init__(self, directory: Path):
        self.directory = directory

    async def __call__(self, scope, receive, send) -> None:
        method = scope["method"]
        m = _NAME.match(scope["path"])
        path = self.directory / f"{m.group(1)}.{m.group(2)}" if m else None
        if method not in ("GET", "HEAD"):
            return await _reply(send, 405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
        if path is None or not path.is_file():
            return await _reply(send, 404, b"not found\n")
        size = path.stat().st_size
        headers = [(b"content-type", FORMATS[m.group(2)].encode()),
                   (b"accept-ranges", b"bytes"), (b"cache-control", b"private")]
        rng = dict(scope["headers"]).get(b"range")
        start, end, status = 0, size - 1, 200
        if rng is not None:
            span = parse_range(rng.decode("latin-1"), size)
            if span is None:
                unsatisfiable = [(b"content-range", f"bytes */{size}".encode())]
                return await _reply(send, 416, b"", unsatisfiable)
            (start, end), status = span, 206
            headers.append((b"content-range", f"bytes {start}-{end}/{size}".encode()))
        length = end - start + 1 if size else 0
        headers.append((b"content-length", str(length).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if method == "HEAD" or length == 0:
            await send({"type": "http.response.body", "body": b""})
            return
        async with await trio.open_file(path, "rb") as f:
            await f.seek(start)
            left = length
            while left > 0:
                chunk = await f.read(min(CHUNK, left))
                if not chunk:
                    break
                left -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
            if left > 0:
                await send({"type": "http.response.body", "body": b""})


class NodeApp:
    """/recordings/... to the recordings, /v1/Account/... to the Plivo-shaped Conference API
    (plivo_api.py, if given), everything else to the control API.

    API requests take turns, ``concurrency`` at a time: the node's calls share its one trio
    thread with them, and a burst of fifty at once would otherwise put every new call's
    events behind fifty handlers in each round of the scheduler. Recording downloads wait on
    the disk, not the CPU, and go past the queue."""

    def __init__(self, recordings: RecordingsApp, api, plivo=None, concurrency: int = 8):
        self.recordings = recordings
        self.api = api
        self.plivo = plivo
        self._turns = trio.CapacityLimiter(concurrency)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"].startswith("/recordings/"):
            await self.recordings(scope, receive, send)
            return
        async with self._turns:
            if self.plivo is not None and scope["path"].startswith("/v1/Account/"):
                await self.plivo(scope, receive, send)
            else:
                await self.api(scope, receive, send)


async def _reply(send, status: int, body: bytes, headers: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


async def serve(app, host: str, port: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Serve ``app`` until cancelled."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    cfg = Config()
    cfg.bind = [f"{host}:{port}"]
    cfg.accesslog = None
    cfg.errorlog = None
    cfg.graceful_timeout = 0.5
    try:
        await hypercorn_serve(app, cfg, task_status=task_status)
    except* OSError as group:  # hypercorn binds inside its own nursery
        exc: BaseException = group
        while isinstance(exc, BaseExceptionGroup):
            exc = exc.exceptions[0]
        raise HttpError(f"cannot serve HTTP on {host}:{port}: "
                        f"{getattr(exc, 'strerror', None) or exc}") from None


class HttpError(RuntimeError):
    """The HTTP server could not start (its port is taken, say)."""
