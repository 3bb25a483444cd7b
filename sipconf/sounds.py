"""Sounds for rooms and calls: beeps, fetched audio files, local text to speech.

Everything is decoded once into a :class:`Clip` (16 kHz and 8 kHz mono int16, the mixer's two
rates) and cached, so the mixer only ever walks ready PCM. Decoding uses miniaudio (wav, mp3,
flac, ogg: one self-contained library with its own resampler, wheels on PyPI, nothing to
install from Debian); it runs in a worker thread, never on the trio loop or the clock threads.
A sound that cannot be fetched or decoded raises :class:`SoundError`; callers log and skip it.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import trio

from .answer import AnswerError, Play, Speak, Wait, parse_sound_document

log = logging.getLogger("sipconf.sounds")

RATES = (16000, 8000)
BEEP_HZ = 700.0
BEEP_ON_S = 0.3
BEEP_OFF_S = 0.2
MAX_RENDER_S = 600.0


class SoundError(Exception):
    """A sound that cannot be had; the message says which and why."""


@dataclass(frozen=True, eq=False)
class Clip:
    """Mono PCM at both mixer rates."""

    pcm16: np.ndarray
    pcm8: np.ndarray

    @property
    def duration(self) -> float:
        return len(self.pcm16) / 16000

    @property
    def nbytes(self) -> int:
        return self.pcm16.nbytes + self.pcm8.nbytes

    def at_rate(self, rate: int) -> np.ndarray:
        return self.pcm16 if rate == 16000 else self.pcm8

    @classmethod
    def from_function(cls, fn) -> Clip:
        """Build from ``fn(rate) -> int16 array``, evaluated at each mixer rate."""
        return cls(np.ascontiguousarray(fn(16000), dtype=np.int16),
                   np.ascontiguousarray(fn(8000), dtype=np.int16))

    @classmethod
    def silence(cls, seconds: float) -> Clip:
        return cls.from_function(lambda r: np.zeros(int(seconds * r), dtype=np.int16))

    @classmethod
    def concat(cls, clips: Sequence[Clip]) -> Clip:
        if not clips:
            return cls.silence(0)
        return cls(np.concatenate([c.pcm16 for c in clips]),
                   np.concatenate([c.pcm8 for c in clips]))

    def repeat(self, times: int) -> Clip:
        return Clip(np.tile(self.pcm16, times), np.tile(self.pcm8, times))


def beep(count: int) -> Clip:
    """`beep:N`: N times a 700 Hz tone for 300 ms then 200 ms of silence (5 ms ramps, so no
    clicks)."""

    def one(rate: int) -> np.ndarray:
        n_on = int(BEEP_ON_S * rate)
        t = np.arange(n_on) / rate
        tone = 0.3 * 32767 * np.sin(2 * np.pi * BEEP_HZ * t)
        ramp = int(0.005 * rate)
        env = np.ones(n_on)
        env[:ramp] = np.linspace(0, 1, ramp)
        env[-ramp:] = np.linspace(1, 0, ramp)
        on = (tone * env).astype(np.int16)
        return np.concatenate([on, np.zeros(int(BEEP_OFF_S * rate), dtype=np.int16)])

    return Clip.from_function(one).repeat(count)


def decode(data: bytes, what: str) -> Clip:
    """Decode an audio file (wav, mp3, flac, ogg) to a Clip. Blocking: run in a thread."""
    import miniaudio

    def at(rate: int) -> np.ndarray:
        snd = miniaudio.decode(data, output_format=miniaudio.SampleFormat.SIGNED16,
                               nchannels=1, sample_rate=rate)
        return np.frombuffer(snd.samples, dtype=np.int16).copy()

    try:
        return Clip.from_function(at)
    except miniaudio.DecodeError as exc:
        raise SoundError(f"{what}: cannot decode audio ({exc})") from None


class SoundLibrary:
    """Fetches, renders and caches sounds; bounded in bytes, time and length."""

    def __init__(self, http: httpx.AsyncClient, fetch_timeout: float = 10.0,
                 cache_bytes: int = 20 * 1024 * 1024, max_file_bytes: int = 20 * 1024 * 1024,
                 espeak: str = "espeak-ng"):
        self.http = http
        self.fetch_timeout = fetch_timeout
        self.cache_bytes = cache_bytes
        self.max_file_bytes = max_file_bytes
        self.espeak = espeak
        self._cache: OrderedDict[str, Clip] = OrderedDict()
        self._cached_bytes = 0
        self._beeps = {n: beep(n) for n in (1, 2)}

    # --- cache -------------------------------------------------------------------------------

    def _get(self, key: str) -> Clip | None:
        clip = self._cache.get(key)
        if clip is not None:
            self._cache.move_to_end(key)
        return clip

    def _put(self, key: str, clip: Clip) -> None:
        if clip.nbytes > self.cache_bytes:
            return
        old = self._cache.pop(key, None)
        if old is not None:
            self._cached_bytes -= old.nbytes
        self._cache[key] = clip
        self._cached_bytes += clip.nbytes
        while self._cached_bytes > self.cache_bytes:
            _, evicted = self._cache.popitem(last=False)
            self._cached_bytes -= evicted.nbytes

    # --- sources -----------------------------------------------------------------------------

    async def _download(self, url: str) -> bytes:
        try:
            with trio.fail_after(self.fetch_timeout):
                async with self.http.stream("GET", url, timeout=self.fetch_timeout) as resp:
                    if not 200 <= resp.status_code < 300:
                        raise SoundError(f"{url}: HTTP {resp.status_code}")
                    chunks, size = [], 0
                    async for chunk in resp.aiter_bytes():
                        size += len(chunk)
                        if size > self.max_file_bytes:
                            raise SoundError(f"{url}: larger than {self.max_file_bytes} bytes")
                        chunks.append(chunk)
                    return b"".join(chunks)
        except trio.TooSlowError:
            raise SoundError(f"{url}: timed out after {self.fetch_timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise SoundError(f"{url}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None

    async def audio(self, url: str) -> Clip:
        """An audio file by URL (Play)."""
        clip = self._get(url)
        if clip is None:
            data = await self._download(url)
            clip = await trio.to_thread.run_sync(decode, data, url)
            self._put(url, clip)
        return clip

    async def speech(self, text: str, voice: str = "WOMAN", language: str = "en-US") -> Clip:
        """Text to speech with espeak-ng, rendered once per (text, voice, language)."""
        key = "speak:" + hashlib.sha256(f"{voice}\0{language}\0{text}".encode()).hexdigest()
        clip = self._get(key)
        if clip is not None:
            return clip
        variant = "+f3" if voice.upper() == "WOMAN" else "+m3"
        lang = language.lower()
        with tempfile.TemporaryDirectory(prefix="sipconf-speak-") as d:
            wav = Path(d) / "speech.wav"
            try:
                with trio.fail_after(30):
                    res = await trio.run_process(
                        [self.espeak, "-v", lang + variant, "-w", str(wav), "--", text],
                        capture_stdout=True, capture_stderr=True, check=False,
                    )
            except (OSError, trio.TooSlowError) as exc:
                raise SoundError(f"espeak-ng failed: {exc}") from None
            if res.returncode != 0 or not wav.exists():
                err = res.stderr.decode(errors="replace").strip()[:200]
                raise SoundError(f"espeak-ng failed for voice {lang}{variant}: {err}")
            data = wav.read_bytes()
        clip = await trio.to_thread.run_sync(decode, data, "espeak-ng output")
        self._put(key, clip)
        return clip

    async def render(self, verbs: Sequence[Play | Speak | Wait], what: str) -> Clip:
        """Play/Speak/Wait in order as one clip; parts that fail are logged and left out."""
        parts: list[Clip] = []
        total = 0.0
        for verb in verbs:
            try:
                if isinstance(verb, Wait):
                    clip, times = Clip.silence(verb.length), 1
                elif isinstance(verb, Play):
                    clip, times = await self.audio(verb.url), max(verb.loop, 1)
                else:
                    clip = await self.speech(verb.text, verb.voice, verb.language)
                    times = max(verb.loop, 1)
            except SoundError as exc:
                log.warning("%s: skipped a sound: %s", what, exc)
                continue
            for _ in range(times):
                if total + clip.duration > MAX_RENDER_S:
                    log.warning("%s: longer than %g s, cut", what, MAX_RENDER_S)
                    return Clip.concat(parts)
                parts.append(clip)
                total += clip.duration
        return Clip.concat(parts)

    async def document(self, url: str) -> Clip:
        """A sound document (enterSound/exitSound/waitSound URL): XML with Play/Speak/Wait."""
        key = "doc:" + url
        clip = self._get(key)
        if clip is not None:
            return clip
        try:
            with trio.fail_after(self.fetch_timeout):
                resp = await self.http.get(url, timeout=self.fetch_timeout)
        except (httpx.HTTPError, trio.TooSlowError) as exc:
            raise SoundError(f"{url}: {exc.__class__.__name__}") from None
        if not 200 <= resp.status_code < 300:
            raise SoundError(f"{url}: HTTP {resp.status_code}")
        try:
            doc = parse_sound_document(resp.content, base_url=url)
        except AnswerError as exc:
            raise SoundError(f"{url}: {exc}") from None
        if doc.skipped:
            log.warning("%s: ignored elements in a sound document: %s", url,
                        ", ".join(doc.skipped))
        clip = await self.render(doc.verbs, url)
        if clip.duration == 0:
            raise SoundError(f"{url}: no playable sound in the document")
        # Cached briefly by URL like any other sound (the document may be dynamic, but a room
        # playing it for every joiner should not refetch it each time).
        self._put(key, clip)
        return clip

    async def resolve(self, spec: str) -> Clip:
        """An enter/exit/wait sound: `beep:1`, `beep:2`, or a sound-document URL."""
        if spec.startswith("beep:"):
            return self._beeps[int(spec[5:])]
        return await self.document(spec)

