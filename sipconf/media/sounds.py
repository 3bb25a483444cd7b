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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import trio

from sipconf.core import voices
from sipconf.core.answer import (
    DEFAULT_LIMITS,
    AnswerError,
    Limits,
    Play,
    Speak,
    Wait,
    parse_sound_document,
)
from sipconf.core.urls import BadUrl, check_url, printable
from sipconf.webhooks.signing import PLIVO, sign_headers

log = logging.getLogger("sipconf.sounds")

RATES = (16000, 8000)
BEEP_HZ = 700.0
BEEP_ON_S = 0.3
BEEP_OFF_S = 0.2
MAX_RENDER_S = 600.0


class SoundError(Exception):
    """A sound that cannot be had; the message says which and why."""


class SoundLimit(SoundError):
    """A sound past one of the node's limits; ``option`` names the limit."""

    def __init__(self, option: str, message: str):
        super().__init__(f"{message} ({option})")
        self.option = option


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


_INFO = {b"RIFF": "wav", b"fLaC": "flac", b"OggS": "vorbis"}


def duration_of(data: bytes, what: str) -> float:
    """The length an audio file says it has, read from its headers and frame index without
    decoding it, so a small file that would decode to hours is refused first."""
    import miniaudio

    kind = _INFO.get(data[:4], "mp3")
    try:
        return float(getattr(miniaudio, f"{kind}_get_info")(data).duration)
    except miniaudio.DecodeError as exc:
        raise SoundError(f"{what}: cannot decode audio ({exc})") from None


def wav_seconds(prefix: bytes) -> float | None:
    """The length a WAV file's header says it has, from its first bytes (its ``fmt `` and
    ``data`` chunk headers); None if ``prefix`` is not a WAV file or does not reach them yet.
    Lets a download be refused (max_sound_seconds) as soon as its header is in."""
    if len(prefix) < 12 or prefix[:4] != b"RIFF" or prefix[8:12] != b"WAVE":
        return None
    pos, byte_rate = 12, 0
    while pos + 8 <= len(prefix):
        cid, size = prefix[pos:pos + 4], int.from_bytes(prefix[pos + 4:pos + 8], "little")
        if cid == b"fmt " and pos + 20 <= len(prefix):
            byte_rate = int.from_bytes(prefix[pos + 16:pos + 20], "little")
        elif cid == b"data":
            return size / byte_rate if byte_rate else None
        pos += 8 + size + (size & 1)
    return None


def decode(data: bytes, what: str, max_seconds: float = MAX_RENDER_S) -> Clip:
    """Decode an audio file (wav, mp3, flac, ogg) to a Clip, refusing one longer than
    ``max_seconds`` before decoding. Blocking: run in a thread."""
    import miniaudio

    seconds = duration_of(data, what)
    if seconds > max_seconds:
        raise SoundLimit("max_sound_seconds",
                         f"{what}: {seconds:.0f} s of audio, longer than {max_seconds:g} s")

    def at(rate: int) -> np.ndarray:
        snd = miniaudio.decode(data, output_format=miniaudio.SampleFormat.SIGNED16,
                               nchannels=1, sample_rate=rate)
        pcm = np.frombuffer(snd.samples, dtype=np.int16)
        return pcm[:int(max_seconds * rate)].copy()  # headers may understate the length

    try:
        return Clip.from_function(at)
    except miniaudio.DecodeError as exc:
        raise SoundError(f"{what}: cannot decode audio ({exc})") from None


class SoundLibrary:
    """Fetches, renders and caches sounds; bounded in bytes, time and length."""

    def __init__(self, http: httpx.AsyncClient, fetch_timeout: float = 10.0,
                 cache_bytes: int = 20 * 1024 * 1024, max_file_bytes: int = 20 * 1024 * 1024,
                 espeak: str = "espeak-ng", max_seconds: float = MAX_RENDER_S,
                 limits: Limits = DEFAULT_LIMITS, fetches: int = 8, tts_processes: int = 4,
                 on_limit: Callable[[str], None] = lambda option: None,
                 token: str | None = None, signature: str = PLIVO):
        self.http = http
        self.token = token  # sound files and documents are signed like every other request
        self.signature = signature
        self.fetch_timeout = fetch_timeout
        self.cache_bytes = cache_bytes
        self.max_file_bytes = max_file_bytes
        self.max_seconds = max_seconds
        self.limits = limits
        self.espeak = espeak
        self._fetches = trio.CapacityLimiter(fetches)  # sound fetches: their own pool
        self._tts = trio.CapacityLimiter(tts_processes)
        self.on_limit = on_limit  # told the option's name when a document goes past a limit
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

    async def _download(self, url: str, max_bytes: int, method: str = "GET",
                        params: Mapping[str, str] | None = None,
                        audio: bool = False) -> bytes:
        """GET ``url`` (a sound file), or POST ``params`` to it (a sound document, as Plivo
        requests them), signed, within the fetch deadline (in all, not per read) and
        ``max_bytes``. What will be refused is refused as early as it can be, before the rest
        is downloaded: a Content-Length past ``max_bytes``; for ``audio``, a WAV header saying
        it is longer than max_sound_seconds."""
        try:
            check_url(url)
            form = {str(k): str(v) for k, v in (params or {}).items()}
            if method == "GET":
                req = self.http.build_request("GET", url, params=form or None,
                                              timeout=self.fetch_timeout)
            else:
                req = self.http.build_request("POST", url, data=form,
                                              timeout=self.fetch_timeout)
            req.headers.update(sign_headers(self.token, url, form, method=method,
                                            scheme=self.signature, sent_url=str(req.url)))
            async with self._fetches:
                with trio.fail_after(self.fetch_timeout):
                    resp = await self.http.send(req, stream=True)
                    try:
                        if not 200 <= resp.status_code < 300:
                            raise SoundError(f"{url}: HTTP {resp.status_code}")
                        option = ("max_sound_bytes" if max_bytes == self.max_file_bytes
                                  else "max_document_bytes")
                        length = resp.headers.get("content-length", "")
                        if length.isdigit() and int(length) > max_bytes:
                            raise SoundLimit(option, f"{url}: {length} bytes, larger than "
                                                     f"{max_bytes} bytes")
                        chunks, size, checked = [], 0, not audio
                        async for chunk in resp.aiter_bytes():
                            size += len(chunk)
                            if size > max_bytes:
                                raise SoundLimit(option, f"{url}: larger than {max_bytes} bytes")
                            chunks.append(chunk)
                            if not checked and size >= 4096:
                                checked = True
                                self._check_wav_header(b"".join(chunks), url)
                        return b"".join(chunks)
                    finally:
                        await resp.aclose()
        except trio.TooSlowError:
            raise SoundError(f"{url}: timed out after {self.fetch_timeout:g} s") from None
        except (httpx.HTTPError, httpx.InvalidURL, BadUrl, ValueError, TypeError,
                UnicodeError) as exc:
            raise SoundError(f"{printable(url)}: {(str(exc).splitlines() or [repr(exc)])[0]}"
                             ) from None

    def _check_wav_header(self, prefix: bytes, url: str) -> None:
        seconds = wav_seconds(prefix)
        if seconds is not None and seconds > self.max_seconds:
            raise SoundLimit("max_sound_seconds", f"{url}: {seconds:.0f} s of audio, longer "
                                                  f"than {self.max_seconds:g} s")

    async def audio(self, url: str) -> Clip:
        """An audio file by URL (Play)."""
        clip = self._get(url)
        if clip is None:
            data = await self._download(url, self.max_file_bytes, audio=True)
            clip = await trio.to_thread.run_sync(decode, data, url, self.max_seconds)
            self._put(url, clip)
        return clip

    async def speech(self, text: str, voice: str = "WOMAN", language: str = "en-US") -> Clip:
        """Text to speech with espeak-ng, rendered once per (text, voice, language); at most
        ``tts_processes`` run at once."""
        if len(text) > self.limits.max_speak_chars:
            raise SoundLimit("max_speak_chars", f"text of {len(text)} characters")
        try:
            text.encode("utf-8")
        except UnicodeError:
            raise SoundError("text is not valid Unicode (a lone surrogate)") from None
        if "\0" in text:
            raise SoundError("text holds a NUL character")
        key = "speak:" + hashlib.sha256(f"{voice}\0{language}\0{text}".encode()).hexdigest()
        clip = self._get(key)
        if clip is not None:
            return clip
        espeak_name = voices.espeak_voice(voice, language)  # Plivo's names, mapped
        with tempfile.TemporaryDirectory(prefix="sipconf-speak-") as d:
            wav = Path(d) / "speech.wav"
            try:
                async with self._tts:
                    with trio.fail_after(30):
                        res = await trio.run_process(
                            [self.espeak, "-v", espeak_name, "-w", str(wav), "--", text],
                            capture_stdout=True, capture_stderr=True, check=False,
                        )
            except (OSError, trio.TooSlowError, ValueError) as exc:
                # ValueError (UnicodeError too): text no process argument can carry (a NUL)
                raise SoundError(f"espeak-ng failed: {exc}") from None
            if res.returncode != 0 or not wav.exists():
                err = res.stderr.decode(errors="replace").strip()[:200]
                raise SoundError(f"espeak-ng failed for voice {espeak_name}: {err}")
            data = wav.read_bytes()
        clip = await trio.to_thread.run_sync(decode, data, "espeak-ng output", self.max_seconds)
        self._put(key, clip)
        return clip

    async def render(self, verbs: Sequence[Play | Speak | Wait], what: str) -> Clip:
        """Play/Speak/Wait in order as one clip, at most ``max_seconds`` long (cut there);
        parts that fail are logged and left out."""
        parts: list[Clip] = []
        total = 0.0
        for verb in verbs:
            try:
                if isinstance(verb, Wait):
                    seconds = min(verb.length, self.max_seconds - total)
                    clip, times = Clip.silence(max(seconds, 0)), 1
                elif isinstance(verb, Play):
                    clip, times = await self.audio(verb.url), max(verb.loop, 1)
                else:
                    clip = await self.speech(verb.text, verb.voice, verb.language)
                    times = max(verb.loop, 1)
            except SoundError as exc:
                if isinstance(exc, SoundLimit):
                    self.on_limit(exc.option)
                log.warning("%s: skipped a sound: %s", what, exc)
                continue
            for _ in range(min(times, self.limits.max_loops)):
                if total + clip.duration > self.max_seconds:
                    self.on_limit("max_sound_seconds")
                    log.warning("%s: longer than %g s, cut (max_sound_seconds)", what,
                                self.max_seconds)
                    return Clip.concat(parts)
                parts.append(clip)
                total += clip.duration
        return Clip.concat(parts)

    async def document(self, url: str, params: Mapping[str, str] | None = None) -> Clip:
        """A sound document (enterSound/exitSound/waitSound URL): XML with Play/Speak/Wait,
        requested as Plivo does, by POST with the call's ``params`` (signed), each time it is
        needed: the app may answer each caller differently. The audio files it names are
        cached like any other."""
        body = await self._download(url, self.limits.max_bytes, "POST", params or {})
        try:
            doc = parse_sound_document(body, base_url=url, limits=self.limits)
        except AnswerError as exc:
            if exc.option:
                raise SoundLimit(exc.option, f"{url}: {exc}") from None
            raise SoundError(f"{url}: {exc}") from None
        if doc.skipped:
            log.warning("%s: ignored elements in a sound document: %s", url,
                        ", ".join(doc.skipped))
        for option, what in doc.clamped:
            self.on_limit(option)
            log.warning("%s: %s (%s)", url, what, option)
        clip = await self.render(doc.verbs, url)
        if clip.duration == 0:
            raise SoundError(f"{url}: no playable sound in the document")
        return clip

    async def resolve(self, spec: str, params: Mapping[str, str] | None = None) -> Clip:
        """An enter/exit/wait sound: `beep:1`, `beep:2`, or a sound-document URL (requested
        with ``params``, the parameters of the call it is for)."""
        if spec in ("beep:1", "beep:2"):
            return self._beeps[int(spec[5:])]
        return await self.document(spec, params)

