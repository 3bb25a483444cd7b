"""Audio-streaming WebSocket protocols, as plain functions: the node's messages built, the
app's read and checked, and the audio between the mixer's PCM (8/16 kHz int16) and the
stream's content type (``audio/x-mulaw`` 8 kHz, ``audio/x-l16`` 8 or 16 kHz, little-endian as
Plivo sends it).

Two dialects (``PROTOCOLS``):
- ``plivo`` (the default): Plivo's "Stream Event Protocol" (docs: voice/audio-streaming), as
  voice-agent frameworks' Plivo serializers (pipecat's ``PlivoFrameSerializer``) send and read
  it. Node: ``start``, ``media``, ``dtmf``, ``playedStream``, ``clearedAudio``, ``stop``; app:
  ``playAudio``, ``clearAudio``, ``checkpoint``, ``sendDTMF``.
- ``twilio``: Twilio's Media Streams (docs: voice/media-streams/websocket-messages), μ-law
  8 kHz only. Node: ``connected``, ``start``, ``media``, ``dtmf``, ``mark`` (a mark's audio has
  played, or a ``clear`` dropped it), ``stop``; app: ``media``, ``mark``, ``clear``. Sequence
  numbers, chunks and timestamps are strings, as Twilio sends them.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

import numpy as np

MAX_MESSAGE = 1024 * 1024  # bytes of one message from the app (a 1 MiB JSON frame)
PROTOCOLS = ("plivo", "twilio")
TWILIO_CONTENT_TYPE = "audio/x-mulaw;rate=8000"  # Twilio's only media format
CHUNK_MS = 20  # audio per media message


@dataclass(frozen=True)
class Format:
    encoding: str  # "audio/x-mulaw" or "audio/x-l16"
    rate: int

    @classmethod
    def parse(cls, content_type: str) -> Format:
        enc, _, rest = content_type.replace(" ", "").partition(";")
        rate = int(rest.split("=", 1)[1]) if rest.startswith("rate=") else 8000
        if enc not in ("audio/x-mulaw", "audio/x-l16") or rate not in (8000, 16000) \
                or (enc == "audio/x-mulaw" and rate != 8000):
            raise ValueError(f"unsupported content type {content_type!r}")
        return cls(enc, rate)


# --- audio ---------------------------------------------------------------------------------

def _ulaw_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(np.int16)


_ULAW_DECODE = _ulaw_table()
_ULAW_ENCODE = None


def _ulaw_encoder() -> np.ndarray:
    """A table from each int16 value (offset by 32768) to its μ-law byte (G.711)."""
    global _ULAW_ENCODE
    if _ULAW_ENCODE is None:
        x = np.arange(-32768, 32768, dtype=np.int32)
        sign = np.where(x < 0, 0x80, 0)
        mag = np.minimum(np.abs(x), 32635) + 0x84
        exp = np.floor(np.log2(mag)).astype(np.int32) - 7
        mant = (mag >> (exp + 3)) & 0x0F
        _ULAW_ENCODE = (~(sign | (exp << 4) | mant) & 0xFF).astype(np.uint8)
    return _ULAW_ENCODE


# half-band low-pass for 2x up/down sampling (31 taps, windowed sinc at a quarter of the rate)
_N = np.arange(-15, 16)
_HB = np.sinc(_N / 2) / 2 * np.hamming(31)
_HB /= _HB.sum()


def resample(pcm: np.ndarray, rate_from: int, rate_to: int) -> np.ndarray:
    """8 <-> 16 kHz (int16), through a half-band filter (chunk by chunk: a few samples of
    filter edge per chunk, inaudible in 20 ms speech frames)."""
    if rate_from == rate_to or not len(pcm):
        return pcm
    x = pcm.astype(np.float64)
    if rate_to == 2 * rate_from:
        up = np.zeros(2 * len(x))
        up[::2] = x
        y = np.convolve(up, 2 * _HB, mode="same")
    elif rate_from == 2 * rate_to:
        y = np.convolve(x, _HB, mode="same")[::2]
    else:
        raise ValueError(f"cannot resample {rate_from} -> {rate_to}")
    return np.clip(np.rint(y), -32768, 32767).astype(np.int16)


def encode(pcm: np.ndarray, rate: int, fmt: Format) -> bytes:
    """Mixer PCM at ``rate`` -> the stream's payload bytes."""
    x = resample(pcm, rate, fmt.rate)
    if fmt.encoding == "audio/x-mulaw":
        return _ulaw_encoder()[x.astype(np.int32) + 32768].tobytes()
    return x.astype("<i2").tobytes()


def decode(payload: bytes, fmt: Format, rate: int) -> np.ndarray:
    """The stream's payload bytes -> mixer PCM at ``rate``."""
    if fmt.encoding == "audio/x-mulaw":
        x = _ULAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]
    else:
        x = np.frombuffer(payload[: len(payload) // 2 * 2], dtype="<i2").astype(np.int16)
    return resample(x, fmt.rate, rate)


# --- the node's messages ------------------------------------------------------------------


class Outgoing:
    """The node's side of one stream: every message numbered (``sequenceNumber``, from 1),
    media chunks counted per track."""

    def __init__(self, stream_id: str, call_id: str, tracks: tuple[str, ...], fmt: Format,
                 extra_headers: str = "", account_id: str = ""):
        self.stream_id, self.call_id, self.tracks, self.fmt = stream_id, call_id, tracks, fmt
        self.extra_headers, self.account_id = extra_headers, account_id
        self.seq = 0
        self.chunks: dict[str, int] = {}

    def snapshot(self) -> tuple[int, dict[str, int]]:
        """The counters before messages are built, for ``rewind`` if they are not sent."""
        return self.seq, dict(self.chunks)

    def rewind(self, before: tuple[int, dict[str, int]], sent: int) -> None:
        """Only ``sent`` of the messages built since ``before`` went out (a send was cancelled
        as the call ended): the next message takes the first unsent one's number, so the app
        sees no gap."""
        self.seq = before[0] + sent
        if not sent:
            self.chunks = dict(before[1])

    def _msg(self, event: str, **fields) -> str:
        self.seq += 1
        return json.dumps({"event": event, "sequenceNumber": self.seq,
                           "streamId": self.stream_id, **fields,
                           "extra_headers": self.extra_headers})

    def opening(self) -> list[str]:
        """What the node sends once the socket is open."""
        return [self.start()]

    def start(self) -> str:
        return self._msg("start", start={
            "callId": self.call_id, "streamId": self.stream_id, "accountId": self.account_id,
            "tracks": list(self.tracks),
            "mediaFormat": {"encoding": self.fmt.encoding, "sampleRate": self.fmt.rate}})

    def media(self, track: str, payload: bytes, timestamp_ms: int) -> str:
        self.chunks[track] = self.chunks.get(track, 0) + 1
        return self._msg("media", media={
            "track": track, "timestamp": str(timestamp_ms), "chunk": self.chunks[track],
            "payload": base64.b64encode(payload).decode()})

    def dtmf(self, digit: str, timestamp_ms: int) -> str:
        return self._msg("dtmf", dtmf={"track": "inbound", "digit": digit,
                                       "timestamp": str(timestamp_ms)})

    def played(self, name: str) -> str:
        return self._msg("playedStream", name=name)

    def cleared(self, dropped: list[str]) -> list[str]:
        """The answer to a clear; ``dropped``: the checkpoints whose audio it dropped."""
        return [self._msg("clearedAudio")]

    def stop(self, reason: str) -> str:
        return self._msg("stop", stop={"callId": self.call_id, "reason": reason})


class TwilioOutgoing(Outgoing):
    """The node's side in Twilio's Media Streams dialect (``streamSid``, string counters)."""

    def _msg(self, event: str, **fields) -> str:
        self.seq += 1
        return json.dumps({"event": event, "sequenceNumber": str(self.seq), **fields,
                           "streamSid": self.stream_id})

    def opening(self) -> list[str]:
        # "connected" is the one message without a sequence number or streamSid
        return [json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
                self.start()]

    def start(self) -> str:
        return self._msg("start", start={
            "accountSid": self.account_id, "streamSid": self.stream_id,
            "callSid": self.call_id, "tracks": list(self.tracks),
            "customParameters": dict(p.split("=", 1) for p in self.extra_headers.split(",")
                                     if "=" in p),
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}})

    def media(self, track: str, payload: bytes, timestamp_ms: int) -> str:
        self.chunks[track] = self.chunks.get(track, 0) + 1
        return self._msg("media", media={
            "track": track, "chunk": str(self.chunks[track]),
            "timestamp": str(timestamp_ms), "payload": base64.b64encode(payload).decode()})

    def dtmf(self, digit: str, timestamp_ms: int) -> str:
        return self._msg("dtmf", dtmf={"track": "inbound_track", "digit": digit})

    def played(self, name: str) -> str:
        return self._msg("mark", mark={"name": name})

    def cleared(self, dropped: list[str]) -> list[str]:
        # Twilio answers a clear with the marks of the audio it dropped
        return [self.played(name) for name in dropped]

    def stop(self, reason: str) -> str:
        return self._msg("stop", stop={"accountSid": self.account_id, "callSid": self.call_id})


def outgoing(protocol: str, stream_id: str, call_id: str, tracks: tuple[str, ...], fmt: Format,
             extra_headers: str = "", account_id: str = "") -> Outgoing:
    """The node's side of a stream in ``protocol`` (one of ``PROTOCOLS``)."""
    cls = TwilioOutgoing if protocol == "twilio" else Outgoing
    return cls(stream_id, call_id, tracks, fmt, extra_headers, account_id)


# --- the app's messages -------------------------------------------------------------------


@dataclass(frozen=True)
class PlayAudio:
    payload: bytes
    fmt: Format


@dataclass(frozen=True)
class ClearAudio:
    pass


@dataclass(frozen=True)
class Checkpoint:
    name: str


@dataclass(frozen=True)
class SendDtmf:
    digits: str


Incoming = PlayAudio | ClearAudio | Checkpoint | SendDtmf


def _payload(event: str, media: dict) -> bytes:
    try:
        return base64.b64decode(media["payload"], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{event}: payload is not base64") from None


def parse(message: str | bytes, default: Format, protocol: str = "plivo") -> Incoming | None:
    """One message from the app in ``protocol``; None for an event the node has no use for
    (ignored); ValueError naming what is wrong with a message it cannot read."""
    if len(message) > MAX_MESSAGE:
        raise ValueError(f"message of {len(message)} bytes, more than {MAX_MESSAGE}")
    try:
        m = json.loads(message)
    except (ValueError, RecursionError):
        raise ValueError("not JSON") from None
    if not isinstance(m, dict) or not isinstance(m.get("event"), str):
        raise ValueError("not an object with an event")
    event = m["event"]
    if protocol == "twilio":
        return _parse_twilio(event, m)
    if event == "playAudio":
        media = m.get("media")
        if not isinstance(media, dict) or not isinstance(media.get("payload"), str):
            raise ValueError("playAudio without media.payload")
        fmt = default
        if "contentType" in media or "sampleRate" in media:
            ctype = str(media.get("contentType", default.encoding))
            rate = media.get("sampleRate", default.rate)
            if not isinstance(rate, int | str) or not str(rate).isdigit():
                raise ValueError(f"playAudio: sampleRate {rate!r}")
            fmt = Format.parse(f"{ctype};rate={int(rate)}")
        return PlayAudio(_payload(event, media), fmt)
    if event == "clearAudio":
        return ClearAudio()
    if event == "checkpoint":
        return Checkpoint(_mark_name(event, m.get("name")))
    if event == "sendDTMF":
        digits = m.get("dtmf", m.get("digits"))
        if isinstance(digits, dict):
            digits = digits.get("digits", digits.get("digit"))
        if not isinstance(digits, str) or not digits or len(digits) > 64 \
                or any(c not in "0123456789*#ABCDabcd" for c in digits):
            raise ValueError("sendDTMF: digits must be 1-64 of 0-9 * # A-D")
        return SendDtmf(digits.upper())
    return None


def _mark_name(event: str, name) -> str:
    if not isinstance(name, str) or len(name) > 256:
        raise ValueError(f"{event} without a name (a string of at most 256 characters)")
    return name


def _parse_twilio(event: str, m: dict) -> Incoming | None:
    """Twilio's ``media`` (μ-law 8 kHz), ``mark`` and ``clear``; ``streamSid`` is not
    checked (the socket is the stream)."""
    if event == "media":
        media = m.get("media")
        if not isinstance(media, dict) or not isinstance(media.get("payload"), str):
            raise ValueError("media without media.payload")
        return PlayAudio(_payload(event, media), Format.parse(TWILIO_CONTENT_TYPE))
    if event == "mark":
        mark = m.get("mark")
        return Checkpoint(_mark_name(event, mark.get("name") if isinstance(mark, dict)
                                     else None))
    if event == "clear":
        return ClearAudio()
    return None


def status_params(event: str, stream_id: str, call_uuid: str, error: str = "") -> dict[str, str]:
    """``statusCallbackUrl``'s parameters: Event StartStream, StopStream or DroppedStream."""
    params = {"Event": event, "StreamID": stream_id, "CallUUID": call_uuid}
    if error:
        params["Error"] = error
    return params
