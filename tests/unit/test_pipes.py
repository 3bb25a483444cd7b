"""The pipes a stream or an agent uses to cross the mixer clock (mixer_ext/pipes.c), without a
clock: what is written waits, clear drops it, a ring past its size drops its oldest (counted),
and a pipe belongs to one leg at a time of its own rate."""

from __future__ import annotations

import numpy as np
import pytest

streams = pytest.importorskip("mixer_ext.streams")


def test_down_audio_waits_until_played_and_clear_drops_it():
    pipe = streams.Pipe(16000, streams.OUT)
    pipe.write(np.arange(1000, dtype=np.int16))
    assert pipe.stats() == {"played": 0, "pending": 1000, "dropped_up": 0, "dropped_down": 0}
    assert pipe.clear() == 1000
    assert pipe.stats()["pending"] == 0


def test_a_full_down_ring_drops_its_oldest_samples():
    pipe = streams.Pipe(8000, streams.IN, 1, 1)  # one second each way
    pipe.write(np.ones(6000, dtype=np.int16))
    pipe.write(np.full(5000, 2, dtype=np.int16))
    st = pipe.stats()
    assert st["pending"] == 8000 and st["dropped_down"] == 3000


def test_nothing_goes_up_without_a_tick_and_tracks_not_asked_for_are_empty():
    pipe = streams.Pipe(8000, streams.IN)
    assert len(pipe.read(streams.IN)) == 0 and len(pipe.read(streams.OUT)) == 0


def test_one_pipe_per_leg_and_rates_must_match():
    agent = streams.Agent(16000)
    pipe = streams.Pipe(16000, streams.OUT)
    pipe.attach(agent)
    with pytest.raises(ValueError):
        streams.Pipe(16000, streams.OUT).attach(agent)  # the leg has one
    with pytest.raises(ValueError):
        streams.Pipe(8000, streams.OUT).attach(streams.Agent(16000))  # another rate
    agent.free()  # the leg goes first: the pipe is let go, not left dangling
    pipe.write(np.zeros(10, dtype=np.int16))
    pipe.detach()
    with pytest.raises(ValueError):
        streams.Agent(44100)
