"""The in-band relay's DTMF tones (sipconf.media.tones), made in Python: the same samples as the
mixer's C generator, and accepted by the mixer's own detector at both leg rates."""

import numpy as np
import pytest

from mixer_ext import mixer
from sipconf.media import tones

KEYS = "0123456789*#ABCD"


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_same_samples_as_the_c_generator(rate):
    for d in KEYS:
        for ms, amp in ((100, 6000), (60, 1000)):
            ours = tones.dtmf_tone(d, rate, ms, amp)
            theirs = mixer.dtmf_tone(d, rate, ms, amp)
            assert ours.dtype == np.int16 and ours.shape == theirs.shape
            assert np.abs(ours.astype(np.int32) - theirs).max() <= 1


@pytest.mark.parametrize("rate", [8000, 16000])
def test_the_mixer_detector_hears_the_relay(rate):
    pcm = tones.relay_tones(KEYS, rate)
    assert pcm.dtype == np.int16
    per_digit = rate * (tones.TONE_MS + tones.GAP_MS) // 1000
    assert len(pcm) == len(KEYS) * per_digit
    assert mixer.detect_dtmf(pcm, rate) == KEYS
    assert mixer.detect_dtmf(tones.relay_tones("55", rate), rate) == "55"  # the gap separates


def test_not_a_digit():
    for bad in ("", "E", "a", "12", " "):
        with pytest.raises(ValueError):
            tones.dtmf_tone(bad, 8000)
    with pytest.raises(ValueError):
        tones.dtmf_tone("1", 8000, 0)
