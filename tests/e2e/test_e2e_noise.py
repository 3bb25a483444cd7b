"""What listeners hear with noise suppression (issue 18, the mechanisms): a member with steady
background noise (-45 dBFS) is denoised and gated, and the listener measures its noise fall by
20 dB or more; a talker's speech, denoised and gated too, reaches the listener within 1 dB of
its level without. Automatic level (AGC): a quiet and a loud talker end up close together at
the listener. Real phones (baresip), levels measured on what the listener recorded."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest
from support.audio import read_wav, write_wav
from support.waiting import wait_until

pytestmark = pytest.mark.e2e
TOKEN = "noise-token"


def _speech_loop(path, seconds: float = 90.0) -> float:
    """espeak-ng speech at 8 kHz, one sentence then 0.5 s of silence, looped; its period."""
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-w", str(raw), "The quarterly numbers look good, thank you "
                    "all for joining the call today."], check=True, timeout=60)
    subprocess.run(["sox", str(raw), "-r", "8000", "-c", "1", str(path.with_suffix(".8k.wav"))],
                   check=True, timeout=60)
    pcm, rate = read_wav(path.with_suffix(".8k.wav"))
    one = np.concatenate([pcm, np.zeros(4000, dtype=pcm.dtype)])
    write_wav(path, np.tile(one, int(seconds * rate / len(one)) + 1).astype(np.int16), rate)
    return len(one) / rate


def _level(pcm: np.ndarray, rate: int, t0: float, t1: float) -> float:
    x = pcm[int(t0 * rate):int(t1 * rate)].astype(np.float64) / 32768
    return 10 * np.log10(np.mean(x ** 2) + 1e-12)  # dBFS


def test_noise_suppression_quiets_an_idle_member_and_keeps_speech(answer_server, node_factory,
                                                                   uas, tmp_path):
    url = answer_server.conference("/answer", "noisy")
    node = node_factory(url, extra=["--api-token", TOKEN])
    api = node.api(TOKEN)
    noise = tmp_path / "noise.wav"
    write_wav(noise, np.random.default_rng(7).normal(0, 184, 8000 * 90).astype(np.int16), 8000)
    speech = tmp_path / "speech.wav"
    period = _speech_loop(speech)
    listener = uas("listener", tone_hz=0.0).dial(node.uri("noisy"), 60)
    assert listener.wait_for("Call established", 10)
    t_up = time.monotonic()
    talker = uas("talker", mic_wav=speech)
    noisy = uas("noisy", mic_wav=noise)
    for ua in (talker, noisy):
        ua.dial(node.uri("noisy"), 60)
        assert ua.wait_for("Call established", 10)
    assert wait_until(lambda: len(node.members(TOKEN, "noisy")) == 3, 5)
    ids = {m["from"].split("@")[0][4:]: m["member_id"] for m in node.members(TOKEN, "noisy")}
    assert api.post(f"/v1/rooms/noisy/members/{ids['talker']}/mute").status_code == 200

    def at() -> float:  # seconds into the listener's recording
        return time.monotonic() - t_up

    time.sleep(3.0)
    a = (at() - 2.0, at())  # the noisy member as it is
    assert api.post(f"/v1/rooms/noisy/members/{ids['noisy']}/denoise").status_code == 200
    time.sleep(3.5)
    b = (at() - 2.0, at())  # denoised and gated
    assert api.post(f"/v1/rooms/noisy/members/{ids['talker']}/unmute").status_code == 200
    time.sleep(0.5)
    c0 = at()
    time.sleep(2 * period + 0.3)
    c = (c0, c0 + 2 * period)  # the talker as it is: two whole sentences
    assert api.post(f"/v1/rooms/noisy/members/{ids['talker']}/denoise").status_code == 200
    time.sleep(1.0)
    d0 = at()
    time.sleep(2 * period + 0.3)
    d = (d0, d0 + 2 * period)  # the talker denoised and gated
    members = {m["member_id"]: m for m in node.members(TOKEN, "noisy")}
    assert members[ids["noisy"]]["denoise"] and members[ids["talker"]]["denoise"]
    for ua in (listener, talker, noisy):
        ua.stop()
    pcm, rate = read_wav(listener.heard())
    noise_on, noise_off = _level(pcm, rate, *a), _level(pcm, rate, *b)
    speech_on, speech_off = _level(pcm, rate, *c), _level(pcm, rate, *d)
    print(f"FIGURE noise suppression: idle member's noise {noise_on:.1f} dBFS -> "
          f"{noise_off:.1f} dBFS at the listener ({noise_on - noise_off:.1f} dB); speech "
          f"{speech_on:.2f} -> {speech_off:.2f} dBFS ({speech_off - speech_on:+.2f} dB)")
    assert noise_on - noise_off >= 20, (noise_on, noise_off)
    assert abs(speech_off - speech_on) <= 1.0, (speech_on, speech_off)


def _active(pcm: np.ndarray, rate: int, t0: float, t1: float) -> float:
    """Active speech level, dBFS: the mean power of the 20 ms frames over -50 dBFS."""
    x = pcm[int(t0 * rate):int(t1 * rate)].astype(np.float64) / 32768
    frames = x[:len(x) // 160 * 160].reshape(-1, 160)
    power = np.mean(frames ** 2, axis=1)
    loud = power[power > 1e-5]
    return 10 * np.log10(np.mean(loud)) if len(loud) else -120.0


def _scaled(src, dst, dbfs: float) -> None:
    pcm, rate = read_wav(src)
    x = pcm.astype(np.float64)
    write_wav(dst, np.clip(x * 10 ** ((dbfs - _active(pcm, rate, 0, 1e9)) / 20), -32768,
                           32767).astype(np.int16), rate)


def test_automatic_level_evens_out_a_quiet_and_a_loud_talker(answer_server, node_factory, uas,
                                                            tmp_path):
    """--agc: a talker at -34 dBFS and one at -10 dBFS (24 dB apart, speech) reach the
    listener within 6 dB of each other; the quiet one's level set back as it comes (.../unagc)
    is what it sends."""
    url = answer_server.conference("/answer", "levels")
    node = node_factory(url, extra=["--api-token", TOKEN, "--agc"])
    api = node.api(TOKEN)
    period = _speech_loop(tmp_path / "speech.wav")
    _scaled(tmp_path / "speech.wav", tmp_path / "quiet.wav", -34)
    _scaled(tmp_path / "speech.wav", tmp_path / "loud.wav", -10)
    listener = uas("listener", tone_hz=0.0).dial(node.uri("levels"), 60)
    assert listener.wait_for("Call established", 10)
    t_up = time.monotonic()
    quiet, loud = uas("quiet", mic_wav=tmp_path / "quiet.wav"), uas("loud",
                                                                    mic_wav=tmp_path / "loud.wav")
    for ua in (quiet, loud):
        ua.dial(node.uri("levels"), 60)
        assert ua.wait_for("Call established", 10)
    assert wait_until(lambda: len(node.members(TOKEN, "levels")) == 3, 5)
    ids = {m["from"].split("@")[0][4:]: m["member_id"] for m in node.members(TOKEN, "levels")}
    member = "/v1/rooms/levels/members/"
    assert api.post(member + ids["loud"] + "/mute").status_code == 200

    def at() -> float:
        return time.monotonic() - t_up

    def span() -> tuple[float, float]:
        t0 = at()
        time.sleep(2 * period + 0.3)
        return t0, t0 + 2 * period

    time.sleep(period + 1.0)  # the quiet one's level found
    q_agc = span()
    assert api.post(member + ids["quiet"] + "/unagc").status_code == 200
    time.sleep(0.3)
    q_raw = span()
    assert all(m["agc"] == (m["member_id"] != ids["quiet"])
               for m in node.members(TOKEN, "levels"))
    media = {m["member_id"]: m["media"] for m in node.members(TOKEN, "levels")}
    assert media[ids["quiet"]]["packets"] > 100 and media[ids["quiet"]]["lost"] == 0, media
    assert media[ids["quiet"]]["concealed"] == 0 and media[ids["quiet"]]["jb_delay_ms"] < 200
    assert api.post(member + ids["quiet"] + "/mute").status_code == 200
    assert api.post(member + ids["loud"] + "/unmute").status_code == 200
    time.sleep(1.0)
    l_agc = span()
    for ua in (listener, quiet, loud):
        ua.stop()
    pcm, rate = read_wav(listener.heard())
    qa, qr, la = (_active(pcm, rate, *s) for s in (q_agc, q_raw, l_agc))
    print(f"FIGURE agc: quiet talker (-34 dBFS) heard at {qr:.1f} dBFS as it is, {qa:.1f} with "
          f"agc; loud talker (-10 dBFS) {la:.1f} with agc: {abs(la - qa):.1f} dB apart "
          f"(24 without)")
    assert abs(qr - (-34)) <= 2, qr
    assert abs(la - qa) <= 6, (qa, la)
    assert qa - qr >= 6, (qa, qr)
