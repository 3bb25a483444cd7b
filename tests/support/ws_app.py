"""A real WebSocket server playing the app side of Plivo's Audio Streaming protocol (a voice
agent, a transcriber), built on the ``websockets`` library (what most Python agents serve
with; the node's client is trio-websocket, so the two ends are different implementations):
its threaded server, every message the node sends kept (parsed) with its arrival time, and a
test sends messages back on a connection."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

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
        self._stopping = threading.Event()
        self._server = None
        self._thread: threading.Thread | None = None

    def url(self, path: str = "/agent") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def start(self) -> WsApp:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.stall:  # a small receive window (inherited by accepted sockets): fills fast
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self._server = serve(self._handle, sock=sock, compression=None, max_size=2 ** 22,
                             max_queue=1 if self.stall else 64, ping_interval=None)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
        if self._thread is not None:
            self._thread.join(10)

    def _handle(self, ws: ServerConnection) -> None:
        conn = Conn(ws.request.path, ws=ws)
        self.conns.append(conn)
        if self.stall:
            self._stopping.wait(120)
            return
        try:
            for msg in ws:
                if not self.keep_media and msg.startswith('{"event": "media"'):
                    self.media_count += 1
                    continue
                conn.walls.append(time.time())
                conn.received.append((time.monotonic(), json.loads(msg)))
        except ConnectionClosed:
            pass
        conn.closed_at = time.monotonic()

    # --- from the test's thread -----------------------------------------------------------

    def send(self, conn: Conn, message: dict) -> None:
        conn.ws.send(json.dumps(message))

    def close(self, conn: Conn, code: int = 1000) -> None:
        """Close the socket (1000: normally; e.g. 1011: the app failed)."""
        conn.ws.close(code)

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
