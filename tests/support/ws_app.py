"""A real WebSocket server playing the app side of Plivo's Audio Streaming protocol (a voice
agent, a transcriber): trio-websocket in its own thread; every message the node sends is kept
(parsed) with its arrival time, and a test sends messages back on a connection."""

from __future__ import annotations

import base64
import functools
import json
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import trio
from trio_websocket import ConnectionClosed, serve_websocket

from . import ports


@dataclass
class Conn:
    path: str
    received: list[tuple[float, dict]] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)  # time.time() of each received message
    closed_at: float | None = None
    ws: object = None

    def events(self, name: str) -> list[dict]:
        return [m for _, m in self.received if m.get("event") == name]

    def audio(self, track: str) -> np.ndarray:
        """The μ-law or L16 audio of one track's media messages, as int16 at its rate."""
        start = self.events("start")[0]["start"]["mediaFormat"]
        chunks = [base64.b64decode(m["media"]["payload"]) for m in self.events("media")
                  if m["media"]["track"] == track]
        data = b"".join(chunks)
        if start["encoding"] == "audio/x-mulaw":
            from .audio import ulaw_decode

            return ulaw_decode(data).astype(np.int16)
        return np.frombuffer(data, dtype="<i2")


class WsApp:
    def __init__(self, keep_media: bool = True, stall: bool = False) -> None:
        self.keep_media = keep_media  # False: media messages are counted, not kept (load)
        self.stall = stall  # True: accept, then never read again (a stalled app)
        self.media_count = 0
        self.port = ports.block(1)
        self.conns: list[Conn] = []
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    def url(self, path: str = "/agent") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def start(self) -> WsApp:
        self._thread.start()
        assert self._ready.wait(10), "WebSocket server did not start"
        return self

    def stop(self) -> None:
        if self._token is not None:
            try:
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join(10)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(
                serve_websocket, self._handle, "127.0.0.1", self.port, None,
                message_queue_size=1, receive_buffer_size=4096))
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    async def _handle(self, request) -> None:
        ws = await request.accept()
        conn = Conn(request.path, ws=ws)
        self.conns.append(conn)
        if self.stall:
            await trio.sleep_forever()
        try:
            while True:
                msg = await ws.get_message()
                if not self.keep_media and msg.startswith('{"event": "media"'):
                    self.media_count += 1
                    continue
                conn.walls.append(time.time())
                conn.received.append((time.monotonic(), json.loads(msg)))
        except ConnectionClosed:
            conn.closed_at = time.monotonic()

    # --- from the test's thread -----------------------------------------------------------

    def send(self, conn: Conn, message: dict) -> None:
        async def go() -> None:
            await conn.ws.send_message(json.dumps(message))

        trio.from_thread.run(go, trio_token=self._token)

    def close(self, conn: Conn, code: int = 1000) -> None:
        """Close the socket (1000: normally; e.g. 1011: the app failed)."""
        trio.from_thread.run(conn.ws.aclose, code, trio_token=self._token)

    def play(self, conn: Conn, pcm: np.ndarray, rate: int, content_type: str = "audio/x-l16",
             chunk_s: float = 1.0) -> None:
        """playAudio messages of ``pcm`` in chunks, all at once (the node paces them)."""
        n = int(rate * chunk_s)
        for i in range(0, len(pcm), n):
            self.send(conn, {"event": "playAudio", "media": {
                "contentType": content_type, "sampleRate": rate,
                "payload": base64.b64encode(pcm[i:i + n].astype("<i2").tobytes()).decode()}})

    def wait_conn(self, index: int = 0, timeout: float = 10.0) -> Conn:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.conns) > index and self.conns[index].events("start"):
                return self.conns[index]
            time.sleep(0.05)
        raise AssertionError(f"no stream {index} started: {self.conns}")
