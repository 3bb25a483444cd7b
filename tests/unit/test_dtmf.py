"""Digits: the sans-I/O collector (dedup, digitsMatch, gaps) and the mixer's in-band detector
(tones at both mixer rates, in noise, and no false digits on real speech)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from mixer_ext.mixer import detect_dtmf, dtmf_tone

from sipconf.core.digits import DigitCollector


def test_suffix_match_and_reset_after_a_match():
    c = DigitCollector(("123", "23", "#"))
    got = [c.feed(d, "rfc2833", t * 0.3) for t, d in enumerate("9123")]
    assert [p.matched for p in got] == [None, None, None, "123"]  # longest pattern wins
    assert c.feed("3", "rfc2833", 2.0).matched is None  # "1233" does not match again
    assert c.feed("#", "rfc2833", 2.2).matched == "#"


def test_a_gap_over_1_5_s_starts_afresh():
    c = DigitCollector(("12",))
    c.feed("1", "info", 0.0)
    assert c.feed("2", "info", 1.6).matched is None
    c.feed("1", "info", 2.0)
    assert c.feed("2", "info", 3.4).matched == "12"


def test_same_digit_from_two_sources_counts_once():
    c = DigitCollector(("55",))
    assert c.feed("5", "rfc2833", 0.0) is not None
    assert c.feed("5", "inband", 0.06) is None  # the phone sent both: one key press
    assert c.feed("5", "rfc2833", 0.4).matched == "55"  # a real second press
    assert c.feed("x", "info", 1.0) is None


def _keyed(digits: str, rate: int, ms: int = 100, amp: int = 6000, gap_ms: int = 100):
    gap = np.zeros(rate * gap_ms // 1000, np.int16)
    return np.concatenate([np.concatenate([dtmf_tone(d, rate, ms, amp), gap]) for d in digits])


@pytest.mark.parametrize("rate", [8000, 16000])
def test_detector_finds_every_key_at_both_rates(rate):
    keys = "0123456789*#ABCD"
    assert detect_dtmf(_keyed(keys, rate), rate) == keys
    assert detect_dtmf(_keyed("77", rate, ms=60, amp=1000, gap_ms=60), rate) == "77"  # short, quiet
    assert detect_dtmf(_keyed("5", rate, ms=20), rate) == ""  # under 40 ms: not a key press


def test_detector_in_noise_and_after_g711():
    rng = np.random.default_rng(7)
    sig = _keyed("159#", 8000, amp=3000).astype(float)
    noisy = np.clip(sig + rng.normal(0, 600, len(sig)), -32768, 32767).astype(np.int16)
    assert detect_dtmf(noisy, 8000) == "159#"
    # mu-law round trip, as a PCMU leg decodes it
    mu = 255.0
    s = sig / 32768.0
    enc = np.sign(s) * np.log1p(mu * np.abs(s)) / np.log1p(mu)
    q = np.round(enc * 127) / 127
    dec = np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu
    assert detect_dtmf((dec * 32767).astype(np.int16), 8000) == "159#"


def test_no_false_digits_on_speech(tmp_path):
    """espeak-ng speech (two voices, three levels, both rates): zero digits."""
    texts = [
        ("en", "One two three four five six seven eight nine zero. Press the pound key, "
               "or star to cancel. The quick brown fox jumps over the lazy dog."),
        ("en+f3", "Welcome to the weekly meeting. Hmmm. Aaaah. Ooooh. Eeeee. We will discuss "
                  "the budget, the roadmap and the hiring plan."),
    ]
    total_s, found = 0.0, ""
    for i, (voice, text) in enumerate(texts):
        wav = tmp_path / f"s{i}.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True,
                       timeout=60)
        for rate in (8000, 16000):
            raw = subprocess.run(["sox", str(wav), "-r", str(rate), "-c", "1", "-b", "16",
                                  "-t", "raw", "-"], check=True, capture_output=True,
                                 timeout=60).stdout
            pcm = np.frombuffer(raw, np.int16).astype(float)
            for gain in (0.5, 1.0, 3.0):
                y = np.clip(pcm * gain, -32768, 32767).astype(np.int16)
                found += detect_dtmf(y, rate)
                total_s += len(y) / rate
    print(f"FIGURE in-band DTMF on speech: false_digits={len(found)} over {total_s:.0f} s")
    assert found == ""
