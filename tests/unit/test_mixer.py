"""Mixer maths (mixer_ext.mixer, the C code the live engine runs): N-1, soft limiting, muted
legs, gains, 20 legs, mixed rates, and the half-band resamplers."""

import numpy as np
import pytest

from mixer_ext import mixer


def tone(freq, n, rate, amp=8000, phase=0.0):
    t = (np.arange(n) + phase) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def const(v, n):
    return np.full(n, v, dtype=np.int16)


def test_n_minus_one():
    room = mixer.Room()
    legs = [room.add_leg(8000) for _ in range(3)]
    for leg, v in zip(legs, (100, 200, 400), strict=True):
        room.put(leg, const(v, 160))
    room.tick()
    assert list(room.get(legs[0])[:3]) == [600] * 3
    assert list(room.get(legs[1])[:3]) == [500] * 3
    assert list(room.get(legs[2])[:3]) == [300] * 3
    assert room.rate == 8000


def test_an_overloaded_mix_is_limited_under_full_scale_not_clipped():
    """Three members at 30000 sum to 90000 for the fourth: the soft limiter brings it to -1 dBFS
    (29204) within the frame (its first quarter bent by the knee, never past full scale), and
    holds there while the overload lasts, either sign."""
    room = mixer.Room()
    legs = [room.add_leg(8000) for _ in range(4)]
    for leg in legs:
        room.put(leg, const(30000, 160))
    room.tick()
    first = room.get(legs[0])
    assert (first[40:] == 29204).all() and first.max() <= 32767
    for leg in legs:
        room.put(leg, const(-30000, 160))
    room.tick()
    assert (room.get(legs[0])[40:] == -29204).all()


def _spurs_db(x: np.ndarray, rate: int, tones: tuple[float, ...]) -> float:
    """Energy outside the tones' bins, dB relative to the tones' own."""
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    near = np.zeros(len(spec), bool)
    for f in tones:
        near |= np.abs(freqs - f) < 15
    return 10 * np.log10(spec[~near].sum() / spec[near].sum())


def test_many_loud_talkers_are_heard_quieter_not_distorted():
    """Two members at -3 dBFS each (peaks add to +3 dBFS): hard int16 clipping of their sum puts
    harmonics and intermodulation 19 dB under the tones; the limiter keeps them 91 dB under
    (asserted: 35)."""
    room = mixer.Room()
    a, b, listener = (room.add_leg(8000) for _ in range(3))
    n = 160 * 100
    ta, tb = tone(440, n, 8000, amp=23000), tone(1000, n, 8000, amp=23000)
    out = []
    for i in range(100):
        room.put(a, ta[i * 160:(i + 1) * 160])
        room.put(b, tb[i * 160:(i + 1) * 160])
        room.tick()
        out.append(room.get(listener))
    heard = np.concatenate(out)[8000:]  # after the first second
    clipped = np.clip(ta.astype(np.int32) + tb, -32768, 32767)[8000:]
    assert _spurs_db(clipped, 8000, (440, 1000)) > -25  # what the mixer used to do
    assert _spurs_db(heard, 8000, (440, 1000)) < -35
    assert np.abs(heard).max() <= 29204


def test_the_limiter_lets_go_after_the_overload():
    """After an overload the gain returns to unity within ~300 ms: a quiet talker is then heard
    sample for sample again."""
    room = mixer.Room()
    a, b, listener = (room.add_leg(8000) for _ in range(3))
    room.put(a, const(30000, 160))
    room.put(b, const(30000, 160))
    room.tick()
    quiet = tone(440, 160 * 30, 8000, amp=3000)
    for i in range(30):
        room.put(a, quiet[i * 160:(i + 1) * 160])
        room.put(b, const(0, 160))
        room.tick()
    assert np.array_equal(room.get(listener), quiet[-160:])


def test_muted_legs_contribute_nothing_but_hear():
    room = mixer.Room()
    a = room.add_leg(8000)
    b = room.add_leg(8000, flags=mixer.MUTED)
    c = room.add_leg(8000)
    room.put(a, const(100, 160))
    room.put(b, const(1000, 160))
    room.put(c, const(10, 160))
    room.tick()
    assert room.get(a)[0] == 10
    assert room.get(c)[0] == 100
    assert room.get(b)[0] == 110  # hears everyone
    assert room.energy(b) == 0


def test_deaf_and_source_legs():
    room = mixer.Room()
    a = room.add_leg(8000, flags=mixer.DEAF)
    s = room.add_leg(8000, flags=mixer.SOURCE)
    b = room.add_leg(8000)
    room.put(a, const(100, 160))
    room.put(s, const(7, 160))
    room.tick()
    assert room.get(a)[0] == 0  # hears nothing
    assert room.get(b)[0] == 107  # hears the member and the sound


def test_gains():
    room = mixer.Room()
    a = room.add_leg(8000, gain_in=mixer.GAIN_UNITY // 2)
    b = room.add_leg(8000, gain_out=mixer.GAIN_UNITY * 2)
    room.put(a, const(1000, 160))
    room.put(b, const(0, 160))
    room.tick()
    assert room.get(b)[0] == 1000  # 1000 * 0.5 in, * 2 out


def test_silent_legs_count_as_zero():
    room = mixer.Room()
    a, b = room.add_leg(8000), room.add_leg(8000)
    room.put(a, const(50, 160))
    room.tick()
    assert room.get(b)[0] == 50 and room.get(a)[0] == 0
    room.tick()  # nobody put anything: silence
    assert room.get(b)[0] == 0


def test_twenty_legs():
    room = mixer.Room()
    legs = [room.add_leg(8000) for _ in range(20)]
    for i, leg in enumerate(legs):
        room.put(leg, const(i + 1, 160))
    room.tick()
    total = sum(range(1, 21))
    for i, leg in enumerate(legs):
        assert room.get(leg)[0] == total - (i + 1)


def test_room_limit():
    room = mixer.Room()
    for _ in range(mixer.MAX_LEGS):
        room.add_leg(8000)
    with pytest.raises(ValueError):
        room.add_leg(8000)


def _tone_level(pcm, rate, freq):
    spec = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    f = np.fft.rfftfreq(len(pcm), 1 / rate)
    return 20 * np.log10(spec[np.abs(f - freq) < 30].max() + 1e-9)


def test_mixed_rates_wideband_room():
    """A 16 kHz leg makes the room mix at 16 kHz; 8 kHz legs are resampled both ways."""
    room = mixer.Room()
    nb = room.add_leg(8000)
    wb = room.add_leg(16000)
    assert room.rate == 16000
    assert room.spf(nb) == 160 and room.spf(wb) == 320
    heard_nb, heard_wb = [], []
    for k in range(50):  # one second
        room.put(nb, tone(1000, 160, 8000, phase=k * 160))
        room.put(wb, tone(3000, 320, 16000, phase=k * 320))
        room.tick()
        heard_nb.append(room.get(nb))
        heard_wb.append(room.get(wb))
    hn = np.concatenate(heard_nb)[800:].astype(float)
    hw = np.concatenate(heard_wb)[1600:].astype(float)
    # The wideband member hears the 1 kHz tone at full level and nothing of its own.
    assert abs(np.sqrt(np.mean(hw ** 2)) - 8000 / np.sqrt(2)) < 200
    assert _tone_level(hw, 16000, 1000) - _tone_level(hw, 16000, 3000) > 60
    # The narrowband member hears the 3 kHz tone (passband) and no image/alias of it.
    assert abs(np.sqrt(np.mean(hn ** 2)) - 8000 / np.sqrt(2)) < 300
    assert _tone_level(hn, 8000, 3000) - _tone_level(hn, 8000, 1000) > 60
    # Removing the wideband leg brings the room back to 8 kHz.
    room.remove_leg(wb)
    assert room.rate == 8000


def test_wideband_content_above_4k_does_not_alias_into_narrowband():
    room = mixer.Room()
    nb = room.add_leg(8000)
    wb = room.add_leg(16000)
    out = []
    for k in range(50):
        room.put(wb, tone(6000, 320, 16000, phase=k * 320))
        room.tick()
        out.append(room.get(nb))
    heard = np.concatenate(out)[800:].astype(float)
    # 6 kHz would alias to 2 kHz at 8 kHz; the half-band filter removes it (>= 50 dB down).
    assert 20 * np.log10(np.sqrt(np.mean(heard ** 2)) / (8000 / np.sqrt(2)) + 1e-12) < -50


def test_resampler_round_trip_keeps_speech_band():
    up_hist = np.zeros(23 + 160, dtype=np.float32)
    down_hist = np.zeros(46 + 320, dtype=np.float32)
    outs = []
    for k in range(25):
        x = tone(440, 160, 8000, phase=k * 160).astype(np.float32)
        outs.append(mixer.downsample2(mixer.upsample2(x, up_hist), down_hist))
    y = np.concatenate(outs)[400:]
    ref = tone(440, 4000, 8000).astype(float)[400:]
    assert abs(np.sqrt(np.mean(y ** 2)) - np.sqrt(np.mean(ref ** 2))) < 50


def _tone_frame(hz: float, amp: float, n: int, rate: int, start: int) -> np.ndarray:
    t = (np.arange(n) + start) / rate
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def _talk(room, script):
    """script: list of (frames, {leg: amplitude}); returns the floor holder after each frame."""
    holders = []
    pos = 0
    for frames, amps in script:
        for _ in range(frames):
            for leg, amp in amps.items():
                room.put(leg, _tone_frame(300 + 200 * leg, amp, 160, 8000, pos))
            room.tick()
            holders.append(room.floor_holder)
            pos += 160
    return holders


def test_floor_follows_the_sustained_talker():
    room = mixer.Room()
    a, b, c = room.add_leg(), room.add_leg(), room.add_leg()
    h = _talk(room, [(50, {a: 3000}), (50, {b: 3000}), (25, {})])
    assert h[4] is None and h[20] == a  # takes a free floor within ~100-400 ms
    assert h[99] == b  # a went quiet: b takes it
    assert h[-1] == b  # silence keeps the last talker
    assert c not in h


def test_floor_resists_a_cough_and_ignores_muted_members():
    room = mixer.Room()
    a, b = room.add_leg(), room.add_leg()
    m = room.add_leg(flags=mixer.MUTED)
    # a talks; b coughs louder for 200 ms; a muted member shouts throughout
    h = _talk(room, [(30, {a: 2000, m: 20000}), (10, {a: 2000, b: 20000, m: 20000}),
                     (30, {a: 2000, m: 20000})])
    assert set(h[20:]) == {a}
    # b talks 6 dB+ louder for longer than 500 ms while a keeps talking: b takes it
    h = _talk(room, [(40, {a: 1000, b: 8000})])
    assert h[-1] == b
    assert not room.talking(m)
    room.remove_leg(b)
    assert room.floor_holder is None


def test_speaking_ends_100_ms_into_a_pause_over_a_noise_floor_and_never_flaps_on_it():
    """Talk events: the floor's smoothed score decays slowly into a noise floor just under its
    off threshold; speaking ends after five quiet frames instead, and noise alone (about
    -52 dBFS, a hair under the off threshold) never starts it."""
    rng = np.random.default_rng(3)
    room = mixer.Room()
    a, _b = room.add_leg(), room.add_leg()
    states = []
    for frame in range(150):
        noise = rng.normal(0, 30, 160)
        tone = _tone_frame(440, 9000, 160, 8000, frame * 160) if 25 <= frame < 75 else 0
        room.put(a, np.clip(noise + tone, -32768, 32767).astype(np.int16))
        room.tick()
        states.append(room.speaking(a))
    on = [i for i in range(1, 150) if states[i] and not states[i - 1]]
    off = [i for i in range(1, 150) if not states[i] and states[i - 1]]
    assert on == [on[0]] and 25 <= on[0] <= 28, on  # within 60 ms of the onset, once
    assert off == [80] or off == [79], off  # 100 ms into the pause, once
    assert not any(states[:25]) and not any(states[85:])


def test_a_private_leg_is_heard_only_by_the_legs_that_relate_to_it():
    """A coach: left out of the totals; the coached leg hears it, nobody else; the coach hears
    the whole room; relations end when either leaves."""
    room = mixer.Room()
    a, b = room.add_leg(8000), room.add_leg(8000)
    coach = room.add_leg(8000, flags=mixer.PRIVATE)
    room.relate(b, coach)
    for leg, v in ((a, 100), (b, 200), (coach, 1000)):
        room.put(leg, const(v, 160))
    room.tick()
    assert room.get(a)[0] == 200  # not the coach
    assert room.get(b)[0] == 1100  # a and the coach
    assert room.get(coach)[0] == 300  # the whole room
    assert room.floor_holder != coach
    room.relate(b, coach, False)
    for leg, v in ((a, 100), (b, 200), (coach, 1000)):
        room.put(leg, const(v, 160))
    room.tick()
    assert room.get(b)[0] == 100
    with pytest.raises(ValueError):
        room.relate(b, b)
    room.relate(b, coach)
    room.remove_leg(coach)  # b's relation goes with it: nothing dangles
    room.put(a, const(100, 160))
    room.tick()
    assert room.get(b)[0] == 100


def test_a_narrowband_coach_whispers_to_a_wideband_member():
    room = mixer.Room()
    wb = room.add_leg(16000)
    other = room.add_leg(16000)
    coach = room.add_leg(8000, flags=mixer.PRIVATE)
    room.relate(wb, coach)
    heard, heard_other = [], []
    for k in range(50):
        room.put(coach, tone(1000, 160, 8000, phase=k * 160))
        room.put(wb, const(0, 320))
        room.put(other, const(0, 320))
        room.tick()
        heard.append(room.get(wb))
        heard_other.append(room.get(other))
    h = np.concatenate(heard)[1600:].astype(float)
    assert abs(np.sqrt(np.mean(h ** 2)) - 8000 / np.sqrt(2)) < 400
    # linear interpolation: the 7 kHz image ~28 dB down (a whisper's quality, not the room's)
    assert _tone_level(h, 16000, 1000) - _tone_level(h, 16000, 7000) > 25
    assert not np.concatenate(heard_other).any()


def _db(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-9)


def test_a_gated_member_adds_nothing_while_idle_and_speaks_unchanged():
    """MIX_LEG_GATE: idle noise (-45 dBFS) never reaches the listener; a talker (-20 dBFS)
    passes sample for sample from its first frame, stays open 300 ms into a pause, then fades
    out over one frame."""
    room = mixer.Room()
    listener = room.add_leg(8000)
    noisy = room.add_leg(8000, flags=mixer.GATE)
    rng = np.random.default_rng(1)
    heard = []
    for _ in range(50):  # 1 s of noise only
        room.put(noisy, (rng.normal(0, 184, 160)).astype(np.int16))
        room.tick()
        heard.append(room.get(listener))
    assert max(np.abs(h).max() for h in heard) == 0  # gated: nothing at all
    speech = tone(440, 160 * 25, 8000, amp=4000)  # -21 dBFS, 0.5 s
    out = []
    for i in range(25):
        room.put(noisy, speech[i * 160:(i + 1) * 160])
        room.tick()
        out.append(room.get(listener))
    assert np.array_equal(np.concatenate(out), speech)  # first frame on, not clipped
    pause = []
    for _ in range(20):  # noise again: open for the hang-over, then a fade, then nothing
        room.put(noisy, (rng.normal(0, 184, 160)).astype(np.int16))
        room.tick()
        pause.append(room.get(listener))
    levels = [_db(p) for p in pause]
    assert all(lv > 30 for lv in levels[:15]) and levels[16] < -80, levels
    fade = pause[15]
    assert abs(int(fade[-1])) <= 10 and np.abs(fade).max() > 0  # faded to zero in the frame


def test_the_gate_still_lets_the_talker_detection_hear_the_member():
    room = mixer.Room()
    room.add_leg(8000)
    gated = room.add_leg(8000, flags=mixer.GATE)
    room.put(gated, const(50, 160))
    room.tick()
    assert room.energy(gated) > 0  # measured, though not mixed


def _rms_dbfs(x: np.ndarray) -> float:
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / 32768 ** 2 + 1e-12)


def _agc_run(amp: float, seconds: float, rng=None, noise: float = 0.0):
    room = mixer.Room()
    listener = room.add_leg(8000)
    talker = room.add_leg(8000, flags=mixer.AGC)
    n = 160 * int(seconds * 50)
    x = tone(300, n, 8000, amp=amp)
    if noise:
        x = rng.normal(0, noise, n).astype(np.int16)
    out = []
    for i in range(n // 160):
        room.put(talker, x[i * 160:(i + 1) * 160])
        room.tick()
        out.append(room.get(listener))
    return np.concatenate(out)


def test_automatic_level_brings_a_quiet_talker_up_and_a_loud_one_down():
    """MIX_LEG_AGC aims at -22 dBFS: a -34 dBFS talker is heard at -22 after 2 s (+12 dB, rising
    7.5 dB/s, no step), a -10 dBFS one at -22 within half a second."""
    quiet = _agc_run(925, 3.0)
    assert abs(_rms_dbfs(quiet[-8000:]) - (-22)) < 0.5
    steps = np.abs(np.diff(quiet.astype(np.int32)))
    assert steps.max() < 2 * 2 * np.pi * 300 / 8000 * np.abs(quiet).max()  # no click
    loud = _agc_run(14654, 1.0)
    assert abs(_rms_dbfs(loud[4000:]) - (-22)) < 0.5


def test_automatic_level_does_not_raise_noise():
    """A member who only sends background noise (-50 dBFS) is passed as it is: the gain adapts on
    speech only, so the pauses between words are not filled with amplified hiss."""
    heard = _agc_run(0, 3.0, rng=np.random.default_rng(3), noise=103)
    assert abs(_rms_dbfs(heard[-8000:]) - (-50)) < 0.5
