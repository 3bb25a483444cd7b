"""A call's or an AI agent's audio over a WebSocket, in Plivo's Audio Streaming protocol or
Twilio's Media Streams (``core/streamproto.py``): ``<Stream>`` on a call, and agent members
of a room.

The audio crosses between the mixer's clock and this task through the leg's pipe
(``mixer_ext/pipes.c``): every 20 ms what the tick put up is sent as media chunks, and what the
app sends down is written to the pipe, which the tick plays at real time (a burst plays over
its own length; ``clearAudio`` drops what has not played within a tick, and is answered
``clearedAudio``; a ``checkpoint`` is answered ``playedStream`` once the audio before it has
played). The WebSocket never blocks the mixer: a send that takes longer than STALL_S, a socket
the app closes, or the stream's timeout ends the stream, with its status callback; a message
the node cannot read is logged and skipped (and counted), never the stream's end.
"""

from __future__ import annotations

import logging
import ssl
import time
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from sipconf.core import streamproto as sp
from sipconf.core.answer import Stream
from sipconf.faults import split

if TYPE_CHECKING:
    from sipconf.node import Node

log = logging.getLogger("sipconf.node")

CONNECT_S = 10.0  # to open the WebSocket
STALL_S = 5.0  # one send may take this long; a socket that takes longer has stalled
TICK_S = sp.CHUNK_MS / 1000
MAX_BAD_MESSAGES = 100  # unreadable messages logged, per stream (all are counted)

_SSL = None


def _ssl() -> ssl.SSLContext:
    global _SSL
    if _SSL is None:
        _SSL = ssl.create_default_context()
    return _SSL


@dataclass
class StreamRun:
    """One stream: what it carries and where its status goes."""

    owner: str  # the call's (or agent's) UUID
    spec: Stream
    pipe: object  # mixer_ext.streams.Pipe
    agent: bool = False  # an agent member: what it hears is its "inbound" track
    stream_id: str = ""
    reason: str = ""  # why it ended
    dropped: bool = False  # it failed (DroppedStream) rather than stopped
    bad_messages: int = 0

    def __post_init__(self) -> None:
        self.stream_id = self.stream_id or str(uuidlib.uuid4())

    @property
    def tracks(self) -> tuple[str, ...]:
        t = self.spec.audio_track
        return ("inbound", "outbound") if t == "both" else (t,)


async def run(node: Node, st: StreamRun, dtmf: trio.MemoryReceiveChannel | None = None,
              send_digits=None) -> str:
    """Run the stream until the app closes it, its timeout, a stall, or cancellation (the call
    ended); returns why it ended. Status callbacks go out through the webhook worker."""
    spec, fmt = st.spec, sp.Format.parse(st.spec.content_type)
    out = sp.outgoing(spec.protocol, st.stream_id, st.owner, st.tracks, fmt,
                      spec.extra_headers, node.config.auth_id or "")
    started = False
    try:
        async with open_websocket_url(
                spec.url, _ssl() if spec.url.startswith("wss") else None,
                connect_timeout=CONNECT_S, disconnect_timeout=2,
                max_message_size=sp.MAX_MESSAGE) as ws:
            tx = _Sender(ws, out)
            try:
                await tx.send(out.opening)
                started = True
                status(node, st, "StartStream")
                log.info("stream %s of %s to %s started (%s, %s)", st.stream_id, st.owner,
                         spec.url, "+".join(st.tracks), spec.content_type,
                         extra={"call_uuid": st.owner, "event": "stream-start"})
                with trio.move_on_after(spec.stream_timeout) as timer:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(_up, tx, st, fmt, node.config.stream_chunk_ms)
                        nursery.start_soon(_down, ws, tx, st, fmt, nursery, send_digits)
                        if dtmf is not None:
                            nursery.start_soon(_dtmf, tx, dtmf)
                if timer.cancelled_caught:
                    st.reason = "streamTimeout"
            except BaseException as exc:  # noqa: BLE001 - ours are told apart, the rest re-raised
                if not _ended(st, exc):
                    broken, rest = split(exc)  # the socket library failed: the peer's doing
                    if broken is not None:
                        st.reason = f"protocol error: {type(broken).__name__}: {broken}"
                        st.dropped = True
                    if rest is not None:
                        raise rest from None
            finally:
                st.reason = st.reason or "the call ended"
                if started and not st.reason.startswith(("stalled", "closed")):
                    with trio.CancelScope(shield=True), trio.move_on_after(1):
                        try:
                            await ws.send_message(out.stop(st.reason))
                        except ConnectionClosed:
                            pass
    except BaseException as exc:  # noqa: BLE001 - a failed connect is told apart, the rest raised
        leaf = exc
        while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
            leaf = leaf.exceptions[0]
        broken, rest = split(exc)
        if rest is not None or broken is None:
            raise
        if not started:  # whatever the socket library raised: the app could not be reached
            st.reason = f"could not connect: {type(leaf).__name__}: {leaf}"
            st.dropped = True
    finally:
        st.reason = st.reason or "the call ended"
        if st.reason.startswith("stalled"):
            st.dropped = True
        status(node, st, "DroppedStream" if st.dropped else "StopStream",
               st.reason if st.dropped else "")
        log.log(logging.WARNING if st.dropped else logging.INFO,
                "stream %s of %s to %s ended: %s%s", st.stream_id, st.owner, spec.url,
                st.reason, f" ({st.bad_messages} unreadable messages)" if st.bad_messages
                else "", extra={"call_uuid": st.owner, "event": "stream-stop"})
    return st.reason


class _Stalled(Exception):
    pass


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def _ended(st: StreamRun, exc: BaseException) -> bool:
    """How the socket ended the stream (a stall, the app closing it), from ``exc`` or the
    exceptions of a nursery's group (sender and receiver may both see the close in one turn);
    False for anything else (cancellation, a fault)."""
    leaves = _leaves(exc)
    if not all(isinstance(e, (_Stalled, ConnectionClosed)) for e in leaves):
        return False
    if any(isinstance(e, _Stalled) for e in leaves):
        st.reason, st.dropped = f"stalled: a send took over {STALL_S:g} s", True
        return True
    code = next((e.reason.code for e in leaves if e.reason), None)
    st.reason = f"closed by the app ({code})"
    st.dropped = code not in (1000, 1001)
    return True


class _Sender:
    """Numbers and sends the node's messages one at a time (sender, checkpoint watcher and
    digits share the socket), so numbers go out in order; a message the call's end cancelled
    before it went out gives its number back, so the app never sees a gap."""

    def __init__(self, ws, out: sp.Outgoing):
        self.ws, self.out, self.lock = ws, out, trio.Lock()

    async def send(self, make: Callable[..., str | list[str]], *args) -> None:
        """Sends what ``make(*args)`` (one of the Outgoing's messages) builds."""
        async with self.lock:
            before = self.out.snapshot()
            built = make(*args)
            messages = [built] if isinstance(built, str) else built
            sent = 0
            try:
                for message in messages:
                    with trio.move_on_after(STALL_S) as waited:
                        await self.ws.send_message(message)  # all of it or none (trio's send)
                    if waited.cancelled_caught:
                        raise _Stalled()
                    sent += 1
            finally:
                if sent < len(messages):
                    self.out.rewind(before, sent)


async def _up(tx: _Sender, st: StreamRun, fmt: sp.Format, chunk_ms: int) -> None:
    """Every ``chunk_ms``: what the tick put up, as media chunks of that length per track."""
    from mixer_ext import streams

    pipe = st.pipe
    rate = pipe.rate
    chunk = rate * chunk_ms // 1000
    keys = {"inbound": streams.OUT if st.agent else streams.IN, "outbound": streams.OUT}
    held = {t: [] for t in st.tracks}
    sent = {t: 0 for t in st.tracks}
    t0 = time.time()
    while True:
        await trio.sleep(chunk_ms / 1000)
        for track in st.tracks:
            pcm = pipe.read(keys[track], rate)  # up to 1 s: what a late turn left
            if not len(pcm):
                continue
            buf = np.concatenate([*held[track], pcm]) if held[track] else pcm
            whole = len(buf) // chunk * chunk
            for i in range(0, whole, chunk):
                ms = int(t0 * 1000) + sent[track] * 1000 // rate
                payload = sp.encode(buf[i:i + chunk], rate, fmt)
                await tx.send(tx.out.media, track, payload, ms)
                sent[track] += chunk
            held[track] = [buf[whole:]] if whole < len(buf) else []


async def _down(ws, tx: _Sender, st: StreamRun, fmt: sp.Format, nursery,
                send_digits) -> None:
    """The app's messages: audio to play, clears, checkpoints, digits to send."""
    pipe = st.pipe
    marks: list[tuple[int, str]] = []  # (samples played once the audio before it has, name)

    async def watch() -> None:
        """Answer each checkpoint once the audio before it has played."""
        while True:
            await trio.sleep(TICK_S)
            if marks:
                played = pipe.stats()["played"]
                while marks and marks[0][0] <= played:
                    name = marks.pop(0)[1]
                    await tx.send(tx.out.played, name)

    nursery.start_soon(watch)
    while True:
        message = await ws.get_message()
        try:
            ev = sp.parse(message, fmt, st.spec.protocol)
        except ValueError as exc:
            st.bad_messages += 1
            if st.bad_messages <= MAX_BAD_MESSAGES:
                log.warning("stream %s: skipped a message from the app: %s", st.stream_id, exc)
            continue
        if isinstance(ev, sp.PlayAudio):
            if not st.spec.bidirectional:
                st.bad_messages += 1
                if st.bad_messages == 1:
                    log.warning("stream %s: playAudio on a stream that is not bidirectional: "
                                "ignored", st.stream_id)
                continue
            pipe.write(sp.decode(ev.payload, ev.fmt, pipe.rate))
        elif isinstance(ev, sp.ClearAudio):
            pipe.clear()
            played = pipe.stats()["played"]
            dropped = [name for at, name in marks if at > played]  # never plays
            marks[:] = [m for m in marks if m[0] <= played]
            await tx.send(tx.out.cleared, dropped)
        elif isinstance(ev, sp.Checkpoint):
            now = pipe.stats()
            marks.append((now["played"] + now["pending"], ev.name))
        elif isinstance(ev, sp.SendDtmf) and send_digits is not None:
            nursery.start_soon(send_digits, ev.digits)


async def _dtmf(tx: _Sender, keys: trio.MemoryReceiveChannel) -> None:
    async for digit in keys:
        await tx.send(tx.out.dtmf, digit, int(time.time() * 1000))


def status(node: Node, st: StreamRun, event: str, error: str = "") -> None:
    url = st.spec.status_callback_url
    if url:
        node.webhooks.submit(st.owner, url, st.spec.status_callback_method,
                             sp.status_params(event, st.stream_id, st.owner, error))
