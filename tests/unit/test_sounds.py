"""The sound library against a real HTTP server: decoding (wav, mp3), beeps, espeak-ng,
documents, the cache bound, and failures that are reported, not fatal."""

import httpx
import numpy as np
import pytest
import trio
from support.audio import encode_mp3, tone_pcm, wav_bytes

from sipconf.media.sounds import BEEP_HZ, Clip, SoundError, SoundLibrary, beep


def run(fn):
    async def main():
        async with httpx.AsyncClient() as http:
            return await fn(SoundLibrary(http, fetch_timeout=2.0))

    return trio.run(main)


def dominant_hz(pcm: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(pcm.astype(float)))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[np.argmax(spec)])


def test_beeps():
    one, two = beep(1), beep(2)
    assert one.duration == pytest.approx(0.5) and two.duration == pytest.approx(1.0)
    assert dominant_hz(one.pcm16[:4800], 16000) == pytest.approx(BEEP_HZ, abs=5)
    assert len(one.pcm8) == 4000
    assert np.abs(one.pcm16[int(0.31 * 16000):]).max() == 0  # 200 ms of silence after


@pytest.mark.parametrize("kind", ["wav", "mp3"])
def test_decodes_audio_files_to_both_mixer_rates(answer_server, kind):
    pcm = tone_pcm(600, 2.0, 16000)
    body = wav_bytes(pcm, 16000) if kind == "wav" else encode_mp3(pcm, 16000)
    url = answer_server.route(f"/a.{kind}", body, content_type="audio/" + kind)
    clip = run(lambda lib: lib.audio(url))
    assert clip.duration == pytest.approx(2.0, abs=0.1)
    assert dominant_hz(clip.pcm16, 16000) == pytest.approx(600, abs=5)
    assert dominant_hz(clip.pcm8, 8000) == pytest.approx(600, abs=5)


def test_speech_is_rendered_once_and_cached():
    async def go(lib):
        a = await lib.speech("Hello there", "WOMAN", "en-US")
        b = await lib.speech("Hello there", "WOMAN", "en-US")
        return a, b

    a, b = run(go)
    assert a is b and a.duration > 0.5
    assert np.abs(a.pcm16).max() > 3000


def test_sound_document_renders_play_wait_speak(answer_server):
    wav = answer_server.route("/t.wav", wav_bytes(tone_pcm(600, 1.0, 8000), 8000))
    doc = answer_server.route(
        "/s.xml", f'<Response><Play loop="2">{wav}</Play><Wait length="1"/>'
                  "<Conference>ignored</Conference></Response>")
    clip = run(lambda lib: lib.resolve(doc))
    assert clip.duration == pytest.approx(3.0, abs=0.1)


@pytest.mark.parametrize("case, message", [
    ("404", "HTTP 404"),
    ("garbage", "cannot decode audio"),
    ("slow", "timed out"),
    ("down", "http://127.0.0.1:9/x.wav: "),
])
def test_failures_raise_sound_error(answer_server, case, message):
    if case == "404":
        url = answer_server.url("/missing.wav")
    elif case == "garbage":
        url = answer_server.route("/bad.wav", b"this is not audio" * 100)
    elif case == "slow":
        url = answer_server.route("/slow.wav", b"x", delay=4)
    else:
        url = "http://127.0.0.1:9/x.wav"
    with pytest.raises(SoundError) as err:
        run(lambda lib: lib.audio(url))
    assert message in str(err.value)


def test_a_failing_part_of_a_document_is_skipped(answer_server):
    good = answer_server.route("/ok.wav", wav_bytes(tone_pcm(600, 1.0, 8000), 8000))
    doc = answer_server.route(
        "/mixed.xml", f"<Response><Play>{answer_server.url('/nope.wav')}</Play>"
                      f"<Play>{good}</Play></Response>")
    clip = run(lambda lib: lib.resolve(doc))
    assert clip.duration == pytest.approx(1.0, abs=0.05)


def test_cache_is_bounded_in_bytes():
    async def go(_):
        async with httpx.AsyncClient() as http:
            lib = SoundLibrary(http, cache_bytes=100_000)
            for i in range(10):
                lib._put(f"k{i}", Clip.silence(1.0))  # 48 kB each
            return lib

    lib = run(go)
    assert lib._cached_bytes <= 100_000
    assert list(lib._cache) == ["k8", "k9"]


def test_a_file_that_would_decode_to_hours_is_refused_before_decoding(tmp_path):
    """20 minutes of silence packs into a small FLAC: its length is read from its headers and
    it is refused before any decoding; a WAV whose header lies about its size decodes only
    what is there."""
    import struct
    import subprocess

    from sipconf.media.sounds import SoundLimit, decode, duration_of

    flac = tmp_path / "long.flac"
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(flac), "trim", "0",
                    "1200"], check=True, timeout=30)
    data = flac.read_bytes()
    assert len(data) < 2_000_000 and duration_of(data, "long") == pytest.approx(1200)
    with pytest.raises(SoundLimit) as err:
        decode(data, "long", max_seconds=600)
    assert err.value.option == "max_sound_seconds" and "longer than 600 s" in str(err.value)
    liar = (b"RIFF" + struct.pack("<I", 0xFFFFFFF0) + b"WAVE" + b"fmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
            + b"data" + struct.pack("<I", 0xFFFFFFE0) + b"\0" * 3200)
    assert decode(liar, "liar").duration == pytest.approx(0.2)
    ten = wav_bytes(tone_pcm(600, 10.0, 8000), 8000)
    with pytest.raises(SoundLimit):
        decode(ten, "ten", max_seconds=5)
    assert decode(ten, "ten", max_seconds=11).duration == pytest.approx(10.0, abs=0.01)


def test_a_huge_wait_in_a_sound_document_is_cut_not_allocated(answer_server):
    doc = answer_server.route("/w.xml", '<Response><Wait length="99999999999"/></Response>')
    clip = run(lambda lib: lib.resolve(doc))
    assert clip.duration == pytest.approx(600, abs=0.1)  # max_sound_seconds, not 3000 years


@pytest.mark.parametrize("head, body, message", [
    # says 30 MB: refused on its Content-Length, nothing of the body read
    ("Content-Length: 31457280\r\n", b"RIFF", "larger than"),
    # a WAV whose header says 700 s: refused once the header is in, the rest never read
    ("", b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x40\x1f\x00\x00"
         b"\x80\x3e\x00\x00\x02\x00\x10\x00data\x00\xe6\xaa\x00" + b"\0" * 8192,
     "700 s of audio"),
])
def test_a_file_to_be_refused_is_refused_before_the_rest_of_it_arrives(head, body, message):
    """The server sends the start and then stalls: what the start already shows to be past a
    limit is refused at once (SoundLimit), not after the fetch timeout."""
    import socket
    import threading

    from sipconf.media.sounds import SoundLimit

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    stop = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        conn.recv(65536)
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\n{head}\r\n".encode() + body)
        stop.wait(10)  # the rest never comes
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    url = f"http://127.0.0.1:{srv.getsockname()[1]}/x.wav"
    try:
        with pytest.raises(SoundLimit) as err:
            run(lambda lib: lib.audio(url))  # fetch_timeout 2 s: a timeout would be SoundError
        assert message in str(err.value)
    finally:
        stop.set()
        t.join(5)
        srv.close()
