"""Recording end to end: two baresip callers with tones in a recorded room (wav, mp3), the
record callback, the file served at RecordUrl (bytes, Range, decoded, both tones, duration),
kill -9 mid-call, and a transcription of espeak-ng speech with its word error rate."""

from __future__ import annotations

import re
import subprocess
import time

import httpx
import numpy as np
import pytest
from support.audio import band_levels, decode_audio
from support.waiting import wait_until, word_errors

pytestmark = pytest.mark.e2e
A, B = 440.0, 1000.0


def _action(server, name, path="/cb"):
    return [r for r in server.requests_to(path, delivered=True)
            if r.params.get("ConferenceAction") == name]


def _over_noise(pcm: np.ndarray, freqs: list[float]) -> list[float]:
    """Median dB of each tone over everything else in the voice band, per 100 ms frame."""
    levels, rest = band_levels(pcm, 16000, freqs)
    return [float(np.median(levels[:, j] - rest)) for j in range(len(freqs))]


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_recorded_room_serves_a_real_file_with_both_tones(fmt, answer_server, node_factory,
                                                          uas, tmp_path):
    cb = answer_server.route("/cb", "ok", content_type="text/plain")
    act = answer_server.route("/act", "<Response/>")
    url = answer_server.conference("/answer", "rec", record="true", recordFileFormat=fmt,
                                   callbackUrl=cb, action=act)
    node = node_factory(url)
    a = uas("alice", tone_hz=A).dial(node.uri("rec"), 30)
    assert a.wait_for("Call established", 10)
    b = uas("bob", tone_hz=B).dial(node.uri("rec"), 30)
    assert b.wait_for("Call established", 10)
    time.sleep(6)
    b.stop()
    time.sleep(0.5)
    a.stop()
    assert wait_until(lambda: _action(answer_server, "record"), 10), answer_server.requests
    rec = _action(answer_server, "record")[0].params
    for key in ("ConferenceName", "ConferenceUUID", "ConferenceMemberID", "CallUUID",
                "RecordUrl", "RecordingID", "RecordingDuration", "RecordingDurationMs",
                "RecordingStartMs", "RecordingEndMs"):
        assert rec.get(key), (key, rec)
    assert re.fullmatch(rf"{node.http_url}/recordings/[A-Za-z0-9_-]{{22}}\.{fmt}",
                        rec["RecordUrl"]), rec["RecordUrl"]
    dur_ms = int(rec["RecordingDurationMs"])
    assert int(rec["RecordingEndMs"]) - int(rec["RecordingStartMs"]) == dur_ms
    assert abs(int(rec["RecordingDuration"]) - dur_ms / 1000) <= 0.5

    resp = httpx.get(rec["RecordUrl"], timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == {"wav": "audio/wav", "mp3": "audio/mpeg"}[fmt]
    data = resp.content
    if fmt == "wav":
        assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    else:
        assert data[:3] == b"ID3" or (data[0] == 0xFF and data[1] & 0xE0 == 0xE0)
    pcm = decode_audio(data)
    seconds = len(pcm) / 16000
    assert abs(seconds - dur_ms / 1000) <= 1.0, (seconds, dur_ms)
    # sox reads it too
    fetched = tmp_path / f"fetched.{fmt}"
    fetched.write_bytes(data)
    probe = subprocess.run(["sox", "--i", "-D", str(fetched)], capture_output=True,
                           timeout=30)
    assert probe.returncode == 0 and abs(float(probe.stdout) - seconds) < 1.0, probe

    # both tones, well above the noise, while both were in the room
    both = pcm[int(1.5 * 16000):int(5.5 * 16000)]
    la, lb = _over_noise(both, [A, B])
    assert la >= 20 and lb >= 20, (la, lb)

    part = httpx.get(rec["RecordUrl"], headers={"Range": "bytes=100-199"}, timeout=10)
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    bad = httpx.get(rec["RecordUrl"], headers={"Range": f"bytes={len(data) + 5}-"}, timeout=10)
    assert bad.status_code == 416
    assert httpx.get(f"{node.http_url}/recordings/{'x' * 22}.{fmt}").status_code == 404

    acts = answer_server.requests_to("/act", delivered=True)
    assert len(acts) == 2 and all(r.params["RecordUrl"] == rec["RecordUrl"]
                                  and r.params["RecordingID"] == rec["RecordingID"]
                                  for r in acts)
    print(f"FIGURE record {fmt}: {seconds:.2f} s decoded vs RecordingDuration "
          f"{dur_ms / 1000:.2f} s; tones {la:.0f} / {lb:.0f} dB over noise; {len(data)} bytes")


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_recording_survives_kill_9(fmt, answer_server, node_factory, uas, tmp_path):
    url = answer_server.conference("/answer", "crash", record="true", recordFileFormat=fmt)
    data = tmp_path / "data"
    node = node_factory(url, data_dir=data)
    a = uas("alice", tone_hz=A).dial(node.uri("crash"), 30)
    assert a.wait_for("Call established", 10)
    assert wait_until(lambda: "recording" in node.log(), 5)
    started = time.monotonic()
    time.sleep(6)
    node.proc.kill()
    node.proc.wait(5)
    ran = time.monotonic() - started
    a.stop()
    files = list((data / "recordings").glob(f"*.{fmt}"))
    assert len(files) == 1
    if fmt == "wav":
        node_factory(url, data_dir=data)  # a restart repairs a stale header

        def header_true():
            raw = files[0].read_bytes()
            return raw[:4] == b"RIFF" and int.from_bytes(raw[40:44], "little") == len(raw) - 44

        assert wait_until(header_true, 10)
        raw = files[0].read_bytes()
    else:
        raw = files[0].read_bytes()
    pcm = decode_audio(raw)
    got = len(pcm) / 16000
    assert got >= ran - 2.0, (got, ran)
    (la,) = _over_noise(pcm[-16000:], [A])  # alice's tone to the very end
    assert la >= 20, la
    print(f"FIGURE kill -9 {fmt}: {got:.2f} s decodable of {ran:.2f} s recorded")


def test_transcription_of_a_recorded_room(answer_server, node_factory, uas, tmp_path):
    text = "please call me back tomorrow morning at the office"
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "110", "-w", str(wav), text], check=True,
                   timeout=30)
    mic = tmp_path / "mic.wav"  # wideband (G.722): pocketsphinx's model wants 16 kHz speech
    subprocess.run(["sox", str(wav), "-r", "16000", "-c", "1", "-b", "16", str(mic),
                    "pad", "1", "20"], check=True, timeout=30)
    cb = answer_server.route("/cb", "ok", content_type="text/plain")
    tx = answer_server.route("/tx", "ok", content_type="text/plain")
    url = answer_server.conference("/answer", "tx", record="true", recordFileFormat="wav",
                                   callbackUrl=cb, transcriptionType="auto",
                                   transcriptionUrl=tx)
    node = node_factory(url)
    a = uas("alice", mic_wav=mic, codecs="G722").dial(node.uri("tx"), 30)
    assert a.wait_for("Call established", 10)
    time.sleep(7)
    a.stop()
    got = wait_until(lambda: answer_server.requests_to("/tx", delivered=True), 60)
    assert got, node.log()[-2000:]
    p = got[0].params
    rec = _action(answer_server, "record")[0].params
    assert p["recording_id"] == rec["RecordingID"] and p["call_uuid"] == rec["CallUUID"]
    assert p["error"] == "" and p["transcription_charge"] == "0"
    assert p["transcription_rate"] == "0" and float(p["duration"]) > 5
    assert p["transcription"].strip(), p
    edits, words = word_errors(text, p["transcription"])
    wer = edits / words
    assert wer <= 0.75, (wer, p["transcription"])
    print(f"FIGURE transcription: WER {wer:.2f} ({p['transcription']!r} for {text!r})")


def test_sigterm_closes_the_recording_and_sends_its_callback(answer_server, node_factory, uas):
    cb = answer_server.route("/cb", "ok", content_type="text/plain")
    url = answer_server.conference("/answer", "term", record="true", recordFileFormat="wav",
                                   callbackUrl=cb)
    node = node_factory(url)
    a = uas("alice", tone_hz=A).dial(node.uri("term"), 30)
    assert a.wait_for("Call established", 10)
    time.sleep(3)
    code, took = node.terminate()
    assert code == 0 and took < 5
    rec = _action(answer_server, "record")
    assert len(rec) == 1, node.log()[-2000:]
    files = list(node.workdir.glob(f"data-{node.sip_port}/recordings/*.wav"))
    assert len(files) == 1
    raw = files[0].read_bytes()
    assert int.from_bytes(raw[40:44], "little") == len(raw) - 44  # closed, header true
    assert abs((len(raw) - 44) / 32000 - int(rec[0].params["RecordingDurationMs"]) / 1000) < 0.1


def test_record_element_records_the_caller_alone_until_the_finish_key(answer_server,
                                                                       node_factory, uas):
    """``<Record>`` outside a conference (voicemail): after the beep the caller's voice goes
    to an mp3 until it presses ``#`` (an RFC 2833 event from baresip); the action gets the
    file, which holds the caller's tone and nothing of the beep."""
    act = answer_server.route("/rec", "<Response><Speak>thanks</Speak></Response>")
    cb = answer_server.route("/reccb", "ok", content_type="text/plain")
    url = answer_server.route("/answer", f'<Response><Record action="{act}" callbackUrl="{cb}" '
                                         'maxLength="20" timeout="15"/></Response>')
    node = node_factory(url)
    alice = uas("alice", tone_hz=A)
    alice.dial(node.uri("voicemail"), seconds=30)
    assert alice.wait_for("Call established", 10), alice.output()[-2000:]
    time.sleep(3.5)
    pressed = time.monotonic()
    alice.command("/sndcode #")
    assert wait_until(lambda: answer_server.requests_to("/rec"), 5), node.log()[-3000:]
    lag = answer_server.requests_to("/rec")[0].at - pressed
    alice.stop()
    p = answer_server.requests_to("/rec")[0].params
    assert p["Digits"] == "#" and p["RecordUrl"].endswith(".mp3"), p
    ms = int(p["RecordingDurationMs"])
    assert 2500 <= ms <= 4500, p
    got = httpx.get(p["RecordUrl"], timeout=10)
    assert got.status_code == 200
    pcm = decode_audio(got.content)
    assert abs(len(pcm) / 16000 - ms / 1000) < 0.5, (len(pcm), ms)
    (tone,) = _over_noise(pcm[8000:-8000], [A])
    assert tone >= 30.0, tone
    assert wait_until(lambda: answer_server.requests_to("/reccb"), 5)
    assert answer_server.requests_to("/reccb")[0].params["RecordingID"] == p["RecordingID"]
    print(f"FIGURE <Record>: {ms} ms recorded until '#', the caller's tone {tone:.0f} dB over "
          f"the rest; action {lag * 1000:.0f} ms after the key")
