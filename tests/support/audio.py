"""Tones in, FFT out: what the tests measure about audio."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

BAND_HZ = 25.0


def write_tone_wav(path: Path, freq: float, seconds: float, rate: int = 8000,
                   amplitude: float = 0.25) -> Path:
    """A mono S16 WAV with one steady sine (baresip's aufile microphone)."""
    t = np.arange(int(seconds * rate)) / rate
    pcm = (amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
    write_wav(path, pcm, rate)
    return path


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono float samples and rate; tolerates a header whose sizes were never written
    (a recorder that was killed before it could finish the file)."""
    with wave.open(str(path), "rb") as w:
        rate = w.getframerate()
        ch = w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    if len(data) == 0:
        raw = Path(path).read_bytes()
        at = raw.find(b"data")
        data = np.frombuffer(raw[at + 8:][: (len(raw) - at - 8) // 2 * 2], dtype="<i2")
    if ch > 1:
        data = data.reshape(-1, ch)[:, 0]
    return data.astype(np.float64), rate


def band_levels(pcm: np.ndarray, rate: int, freqs: list[float],
                frame_s: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Per 100 ms frame: power (dB) in a band around each frequency, and of everything else.

    Returns (levels[frames, len(freqs)], rest[frames]).
    """
    n = int(frame_s * rate)
    frames = len(pcm) // n
    win = np.hanning(n)
    fbins = np.fft.rfftfreq(n, 1 / rate)
    masks = [np.abs(fbins - f) <= BAND_HZ for f in freqs]
    any_tone = np.logical_or.reduce(masks)
    # The noise reference: the band every codec here carries and the test tones live in.
    speech = (fbins >= 100) & (fbins <= min(rate / 2, 4000) - 100)
    levels = np.zeros((frames, len(freqs)))
    rest = np.zeros(frames)
    for i in range(frames):
        spec = np.abs(np.fft.rfft(pcm[i * n:(i + 1) * n] * win)) ** 2 + 1e-9
        for j, m in enumerate(masks):
            levels[i, j] = 10 * np.log10(spec[m].sum())
        rest[i] = 10 * np.log10(spec[speech & ~any_tone].sum())
    return levels, rest


def tone_report(path: Path, freqs: list[float], skip_s: float = 1.0,
                tail_s: float = 0.5) -> dict[float, float]:
    """Median level (dB) of each tone over the steady part of a recording, plus 'rest'."""
    pcm, rate = read_wav(path)
    pcm = pcm[int(skip_s * rate): len(pcm) - int(tail_s * rate)]
    levels, rest = band_levels(pcm, rate, freqs)
    if len(levels) == 0:
        raise AssertionError(f"{path}: nothing recorded")
    out = {f: float(np.median(levels[:, j])) for j, f in enumerate(freqs)}
    out["rest"] = float(np.median(rest))
    return out


def timeline(path: Path, freqs: list[float], frame_s: float = 0.1,
             ) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-frame tone levels (dB) of a whole recording: (levels[frames, freqs], rest, frame_s)."""
    pcm, rate = read_wav(path)
    levels, rest = band_levels(pcm, rate, freqs, frame_s)
    return levels, rest, frame_s


def bursts(on: np.ndarray, frame_s: float) -> list[tuple[float, float]]:
    """(start, length) in seconds of each run of True frames."""
    out = []
    start = None
    for i, v in enumerate(list(on) + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start * frame_s, (i - start) * frame_s))
            start = None
    return out


def encode_mp3(pcm: np.ndarray, rate: int) -> bytes:
    """Real mp3 encoding (LAME, through lameenc), mono."""
    import lameenc

    enc = lameenc.Encoder()
    enc.set_bit_rate(64)
    enc.set_in_sample_rate(rate)
    enc.set_channels(1)
    enc.set_quality(5)
    return bytes(enc.encode(pcm.astype("<i2").tobytes()) + enc.flush())


def tone_pcm(freq: float, seconds: float, rate: int = 16000, amplitude: float = 0.25,
             ) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def wav_bytes(pcm: np.ndarray, rate: int) -> bytes:
    import io

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())
    return buf.getvalue()


def ulaw_decode(payload: bytes) -> np.ndarray:
    """G.711 mu-law bytes (an RTP payload) to linear samples."""
    u = ~np.frombuffer(payload, dtype=np.uint8)
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    mag = ((mantissa.astype(np.int32) << 3) + 0x84) << exponent
    return np.where(sign != 0, -(mag - 0x84), mag - 0x84).astype(np.int32)

def ulaw_encode(pcm: np.ndarray) -> bytes:
    """Linear int16 to G.711 mu-law (ITU-T G.711's segment/mantissa form, bias 0x84; the
    inverse of ulaw_decode)."""
    x = pcm.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    mag = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(mag)).astype(np.int32) - 7
    mantissa = (mag >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


def dtmf_wav(path: Path, digits: str, start_s: float, seconds: float, gap_s: float = 0.25,
             rate: int = 8000) -> Path:
    """A microphone file for a softphone: silence with in-band DTMF ``digits`` (120 ms each,
    ``gap_s`` apart) from ``start_s``."""
    from mixer_ext.mixer import dtmf_tone

    pcm = np.zeros(int(seconds * rate), np.int16)
    pos = int(start_s * rate)
    for d in digits:
        tone = dtmf_tone(d, rate, 120, 5000)
        pcm[pos:pos + len(tone)] = tone
        pos += len(tone) + int(gap_s * rate)
    write_wav(path, pcm, rate)
    return path


def decode_audio(data: bytes, rate: int = 16000) -> np.ndarray:
    """A recording's bytes (mp3 or wav), decoded to mono int16 at ``rate``."""
    import miniaudio

    snd = miniaudio.decode(data, output_format=miniaudio.SampleFormat.SIGNED16, nchannels=1,
                           sample_rate=rate)
    return np.frombuffer(snd.samples.tobytes(), np.int16)
