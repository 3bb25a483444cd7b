"""Room recordings on disk: WAV (stdlib ``wave`` layout) or MP3 (lameenc), written as they go.

Crash safety: a WAV's header is rewritten with the true sizes every second, and
:func:`repair` fixes any WAV left with a stale header (after ``kill -9``) when the node starts;
MP3 frames are written and flushed as they are encoded, so a killed node leaves a file that
decodes up to about its last second. Writers are plain blocking objects: the node calls them
from a worker thread, never from the mixer.
"""

from __future__ import annotations

import logging
import os
import secrets
import struct
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import lameenc

log = logging.getLogger("sipconf.recording")

RATE = 16000
FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg"}
HEADER_EVERY_S = 1.0
MP3_KBPS = 48


def new_id() -> str:
    """Unguessable: 128 random bits, URL-safe."""
    return secrets.token_urlsafe(16)


def _wav_header(data_bytes: int, rate: int) -> bytes:
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", data_bytes))


@dataclass
class Recording:
    """One room run's recording. ``write`` takes 16 kHz int16 mono samples."""

    path: Path
    fmt: str
    recording_id: str
    rate: int = RATE
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    ended_ms: int = 0
    samples: int = 0

    def __post_init__(self) -> None:
        self._f = open(self.path, "wb")
        self._last_header = time.monotonic()
        if self.fmt == "wav":
            self._f.write(_wav_header(0, self.rate))
            self._enc = None
        else:
            enc = lameenc.Encoder()
            enc.set_bit_rate(MP3_KBPS)
            enc.set_in_sample_rate(self.rate)
            enc.set_channels(1)
            enc.set_quality(5)
            self._enc = enc
        self._f.flush()

    @classmethod
    def create(cls, directory: Path, fmt: str, rate: int = RATE) -> Recording:
        if fmt not in FORMATS:
            raise ValueError(f"unsupported recording format {fmt!r}")
        directory.mkdir(parents=True, exist_ok=True)
        rid = new_id()
        return cls(directory / f"{rid}.{fmt}", fmt, rid, rate)

    @property
    def filename(self) -> str:
        return self.path.name

    def timing(self) -> dict[str, str]:
        """Plivo's parameters for how long it is and when it ran (ms since the epoch)."""
        ms = self.duration_ms
        return {"RecordingDuration": str(round(ms / 1000)), "RecordingDurationMs": str(ms),
                "RecordingStartMs": str(self.started_ms), "RecordingEndMs": str(self.ended_ms)}

    @property
    def duration_ms(self) -> int:
        return self.samples * 1000 // self.rate

    def write(self, pcm) -> None:
        data = pcm.astype("<i2").tobytes()
        self.samples += len(pcm)
        if self._enc is None:
            self._f.write(data)
            if time.monotonic() - self._last_header >= HEADER_EVERY_S:
                self._rewrite_header()
        else:
            self._f.write(self._enc.encode(data))
        self._f.flush()

    def _rewrite_header(self) -> None:
        pos = self._f.tell()
        self._f.seek(0)
        self._f.write(_wav_header(self.samples * 2, self.rate))
        self._f.seek(pos)
        self._last_header = time.monotonic()

    def close(self) -> None:
        if self._f.closed:
            return
        if self._enc is None:
            self._rewrite_header()
        elif self.samples:  # lameenc cannot flush an encoder that was never given audio
            self._f.write(self._enc.flush())
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        self.ended_ms = self.started_ms + self.duration_ms


def repair(directory: Path) -> list[Path]:
    """Fix WAV headers left stale by a crash (sizes from the file's length); returns the
    files fixed."""
    fixed = []
    if not directory.is_dir():
        return fixed
    for path in directory.glob("*.wav"):
        try:
            size = path.stat().st_size
            with open(path, "r+b") as f:
                head = f.read(44)
                if len(head) < 44 or head[:4] != b"RIFF" or head[36:40] != b"data":
                    continue
                data = size - 44
                data -= data % 2
                if struct.unpack("<I", head[40:44])[0] == data:
                    continue
                rate = struct.unpack("<I", head[24:28])[0]
                if not 0 < rate <= 384000:
                    continue  # not one of ours
                f.seek(0)
                f.write(_wav_header(data, rate))
            fixed.append(path)
            log.warning("recording %s: header repaired after an unclean stop (%.1f s)",
                        path.name, data / 2 / rate)
        except Exception as exc:  # noqa: BLE001 - start-up never fails on a file
            log.error("recording %s: cannot repair: %s", path.name, exc)
    return fixed


def expire(directory: Path, days: float) -> int:
    """Delete recordings older than ``days`` (retention); returns how many."""
    if days <= 0 or not directory.is_dir():
        return 0
    cutoff = time.time() - days * 86400
    n = 0
    for path in directory.iterdir():
        try:
            if path.suffix[1:] in FORMATS and path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                n += 1
        except OSError as exc:  # start-up never fails on a file
            log.error("recording %s: cannot expire: %s", path.name, exc)
    return n


def wav_duration(path: Path) -> float:
    with wave.open(str(path)) as w:
        return w.getnframes() / w.getframerate()
