"""Recording files without a node: writers, header repair, retention, HTTP ranges."""

from __future__ import annotations

import os
import time

import miniaudio
import numpy as np
import pytest

from sipconf.http.server import parse_range
from sipconf.media import recording


def _tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16000)) / 16000
    return (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)


@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_writer_output_decodes_to_what_was_written(fmt, tmp_path):
    rec = recording.Recording.create(tmp_path, fmt)
    for _ in range(10):
        rec.write(_tone(0.25))
    rec.close()
    assert rec.duration_ms == 2500 and rec.ended_ms - rec.started_ms == 2500
    assert rec.path.name == f"{rec.recording_id}.{fmt}" and len(rec.recording_id) == 22
    snd = miniaudio.decode_file(str(rec.path), nchannels=1, sample_rate=16000)
    assert abs(snd.num_frames / 16000 - 2.5) < 0.1
    if fmt == "wav":
        assert recording.wav_duration(rec.path) == 2.5


def test_repair_fixes_a_stale_wav_header(tmp_path):
    rec = recording.Recording.create(tmp_path, "wav")
    rec.write(_tone(1.0))
    rec._f.flush()
    # a crash: more audio on disk than the header says
    rec._f.write(_tone(1.5).astype("<i2").tobytes())
    rec._f.flush()
    assert recording.wav_duration(rec.path) < 1.1
    assert recording.repair(tmp_path) == [rec.path]
    assert recording.wav_duration(rec.path) == 2.5
    assert recording.repair(tmp_path) == []  # nothing left to fix


def test_retention_deletes_only_old_recordings(tmp_path):
    old = tmp_path / "a.mp3"
    new = tmp_path / "b.wav"
    other = tmp_path / "notes.txt"
    for p in (old, new, other):
        p.write_bytes(b"x")
    past = time.time() - 3 * 86400
    os.utime(old, (past, past))
    os.utime(other, (past, past))
    assert recording.expire(tmp_path, 2) == 1
    assert not old.exists() and new.exists() and other.exists()
    assert recording.expire(tmp_path, 0) == 0


def test_range_header_forms():
    assert parse_range("bytes=0-99", 1000) == (0, 99)
    assert parse_range("bytes=900-", 1000) == (900, 999)
    assert parse_range("bytes=-100", 1000) == (900, 999)
    assert parse_range("bytes=-5000", 1000) == (0, 999)
    assert parse_range("bytes=990-5000", 1000) == (990, 999)
    assert parse_range("bytes=0-0,5-9", 1000) == (0, 0)
    for bad in ("bytes=1000-", "bytes=5-2", "bytes=-0", "items=0-1", "bytes=-", ""):
        assert parse_range(bad, 1000) is None, bad


def test_a_recording_that_got_no_audio_closes_cleanly(tmp_path):
    """Stopped (or its room ended) before the first samples arrived: an empty, valid file."""
    for fmt in ("mp3", "wav"):
        rec = recording.Recording.create(tmp_path, fmt)
        rec.close()
        assert rec.duration_ms == 0 and rec.path.exists()
