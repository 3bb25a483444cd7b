# cython: language_level=3, boundscheck=False, wraparound=False
"""The N-1 room mixer, without any SIP: for tests, benchmarks and offline mixing.

The live node drives the same C code from `streams` (one tick per room every 20 ms on C clock
threads); this module lets Python feed frames in and read frames out, so the maths can be
tested and measured on its own.
"""
from libc.stdint cimport int16_t
from libc.string cimport memcpy
from libc.stdlib cimport calloc, free
cimport cython
from mixer_ext._mixcore cimport *

import numpy as np

MAX_LEGS = MIX_MAX_LEGS
FRAME_MS = MIX_FRAME_MS
GAIN_UNITY = MIX_GAIN_UNITY
MUTED = MIX_LEG_MUTED
DEAF = MIX_LEG_DEAF
SOURCE = MIX_LEG_SOURCE


cdef class Room:
    """A room of legs; ``tick()`` mixes one 20 ms frame."""
    cdef mix_room *room
    cdef mix_leg **legs
    cdef int nalloc

    def __cinit__(self):
        self.room = <mix_room *>calloc(1, sizeof(mix_room))
        self.legs = <mix_leg **>calloc(MIX_MAX_LEGS, sizeof(mix_leg *))
        if self.room == NULL or self.legs == NULL:
            raise MemoryError()
        mix_room_init(self.room)
        self.nalloc = 0

    def __dealloc__(self):
        if self.legs != NULL:
            for i in range(MIX_MAX_LEGS):
                free(self.legs[i])
            free(self.legs)
        free(self.room)

    @property
    def rate(self):
        return self.room.rate

    @property
    def nlegs(self):
        return self.room.nlegs

    def add_leg(self, int rate=8000, int flags=0, int gain_in=MIX_GAIN_UNITY,
                int gain_out=MIX_GAIN_UNITY) -> int:
        """Add a leg at ``rate`` (8000 or 16000); returns its index."""
        if rate not in (8000, 16000):
            raise ValueError(f"unsupported leg rate {rate}")
        cdef int idx = -1
        for i in range(MIX_MAX_LEGS):
            if self.legs[i] == NULL:
                idx = i
                break
        if idx < 0:
            raise ValueError("room is full")
        cdef mix_leg *leg = <mix_leg *>calloc(1, sizeof(mix_leg))
        if leg == NULL:
            raise MemoryError()
        mix_leg_init(leg, rate)
        leg.flags = flags
        leg.gain_in = gain_in
        leg.gain_out = gain_out
        if mix_room_add(self.room, leg) != 0:
            free(leg)
            raise ValueError("room is full")
        self.legs[idx] = leg
        return idx

    cdef mix_leg *_leg(self, int idx) except NULL:
        if idx < 0 or idx >= MIX_MAX_LEGS or self.legs[idx] == NULL:
            raise IndexError(f"no leg {idx}")
        return self.legs[idx]

    def remove_leg(self, int idx):
        cdef mix_leg *leg = self._leg(idx)
        mix_room_remove(self.room, leg)
        free(leg)
        self.legs[idx] = NULL

    def set_flags(self, int idx, int flags):
        self._leg(idx).flags = flags

    def set_gain(self, int idx, int gain_in=MIX_GAIN_UNITY, int gain_out=MIX_GAIN_UNITY):
        cdef mix_leg *leg = self._leg(idx)
        leg.gain_in = gain_in
        leg.gain_out = gain_out

    def spf(self, int idx) -> int:
        return self._leg(idx).spf

    def put(self, int idx, const int16_t[::1] pcm):
        """Give a leg its next input frame (``spf`` samples at the leg's rate)."""
        cdef mix_leg *leg = self._leg(idx)
        if pcm.shape[0] != leg.spf:
            raise ValueError(f"leg {idx} takes {leg.spf} samples, got {pcm.shape[0]}")
        memcpy(leg.in_, &pcm[0], leg.spf * sizeof(int16_t))
        leg.has_audio = 1

    def get(self, int idx):
        """What a leg hears from the last tick, as an int16 array at the leg's rate."""
        cdef mix_leg *leg = self._leg(idx)
        out = np.empty(leg.spf, dtype=np.int16)
        cdef int16_t[::1] view = out
        memcpy(&view[0], leg.out, leg.spf * sizeof(int16_t))
        return out

    def energy(self, int idx) -> int:
        return self._leg(idx).energy

    def tick(self):
        """Mix one frame; legs that got no ``put`` since the last tick count as silent."""
        with nogil:
            mix_room_tick(self.room)
            for i in range(MIX_MAX_LEGS):
                if self.legs[i] != NULL:
                    self.legs[i].has_audio = 0

    def tick_n(self, int n):
        """Mix ``n`` frames with the inputs left as they are (for benchmarks)."""
        with nogil:
            for _ in range(n):
                mix_room_tick(self.room)


def upsample2(const float[::1] pcm, float[::1] hist):
    """8k -> 16k with the mixer's half-band filter; ``hist`` (>= UP_HIST + len floats) carries
    the filter history between calls."""
    cdef int n = pcm.shape[0]
    if n > MIX_NB_SPF or hist.shape[0] < MIX_UP_HIST + n:
        raise ValueError("frame too long or history too short")
    out = np.empty(2 * n, dtype=np.float32)
    cdef float[::1] ov = out
    mix_up2(&hist[0], &pcm[0], n, &ov[0])
    return out


def downsample2(const float[::1] pcm, float[::1] hist):
    """16k -> 8k with the mixer's half-band filter (``hist`` >= DOWN_HIST + len floats)."""
    cdef int n = pcm.shape[0]
    if n > MIX_WB_SPF or hist.shape[0] < MIX_DOWN_HIST + n:
        raise ValueError("frame too long or history too short")
    out = np.empty(n // 2, dtype=np.float32)
    cdef float[::1] ov = out
    mix_down2(&hist[0], &pcm[0], n, &ov[0])
    return out
