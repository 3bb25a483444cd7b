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
from mixer_ext._transit cimport *

import numpy as np

MAX_LEGS = MIX_MAX_LEGS
FRAME_MS = MIX_FRAME_MS
GAIN_UNITY = MIX_GAIN_UNITY
MUTED = MIX_LEG_MUTED
DEAF = MIX_LEG_DEAF
SOURCE = MIX_LEG_SOURCE
PRIVATE = MIX_LEG_PRIVATE
GATE = MIX_LEG_GATE
AGC = MIX_LEG_AGC


cdef class Room:
    """A room of legs; ``tick()`` mixes one 20 ms frame and updates who holds the floor."""
    cdef mix_room *room
    cdef mix_leg **legs
    cdef int nalloc
    cdef floor_state floor

    def __cinit__(self):
        self.room = <mix_room *>calloc(1, sizeof(mix_room))
        self.legs = <mix_leg **>calloc(MIX_MAX_LEGS, sizeof(mix_leg *))
        if self.room == NULL or self.legs == NULL:
            raise MemoryError()
        mix_room_init(self.room)
        floor_init(&self.floor)
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
        floor_forget(&self.floor, leg)
        free(leg)
        self.legs[idx] = NULL

    def set_flags(self, int idx, int flags):
        self._leg(idx).flags = flags

    def relate(self, int listener, int src, bint hear=True):
        """``listener`` hears the private leg ``src`` (or no longer)."""
        if mix_room_relate(self.room, self._leg(listener), self._leg(src), hear) != 0:
            raise ValueError("cannot relate these legs")

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
            floor_update(&self.floor, self.room)
            for i in range(MIX_MAX_LEGS):
                if self.legs[i] != NULL:
                    self.legs[i].has_audio = 0

    @property
    def floor_holder(self):
        """Index of the leg holding the floor, or None."""
        for i in range(MIX_MAX_LEGS):
            if self.legs[i] != NULL and self.legs[i] == self.floor.holder:
                return i
        return None

    def talking(self, int idx) -> bool:
        return bool(self._leg(idx).talking)

    def speaking(self, int idx) -> bool:
        """What talk events report (on with talking, off after 100 ms quiet)."""
        return bool(self._leg(idx).speaking)

    def tick_n(self, int n):
        """Mix ``n`` frames with the inputs left as they are (for benchmarks); like the live
        tick, each frame also updates the floor."""
        with nogil:
            for _ in range(n):
                mix_room_tick(self.room)
                floor_update(&self.floor, self.room)


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


def detect_dtmf(const int16_t[::1] pcm, int rate=8000) -> str:
    """Run the in-band DTMF detector the ticks use over ``pcm`` (20 ms frames); the digits."""
    cdef dtmf_detector d
    cdef int spf = rate // 50
    cdef int i
    cdef char c
    if rate not in (8000, 16000):
        raise ValueError(f"unsupported rate {rate}")
    dtmf_init(&d, rate)
    out = []
    for i in range(0, pcm.shape[0] - spf + 1, spf):
        c = dtmf_feed(&d, &pcm[i], spf)
        if c:
            out.append(chr(c))
    return "".join(out)


def dtmf_tone(str digit, int rate=8000, int ms=100, int amplitude=6000):
    """The tone pair of a DTMF digit (what an in-band relay sends), int16 at ``rate``."""
    cdef int n = rate * ms // 1000
    out = np.zeros(n, dtype=np.int16)
    cdef int16_t[::1] v = out
    if len(digit) != 1 or n <= 0 or not c_dtmf_tone(ord(digit), rate, &v[0], n, amplitude):
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return out


cdef class Transit:
    """How late a stream's RTP packets come (transit.h), fed by hand: ``feed(packet, now_ns)``
    for each packet, ``view()`` the snapshot the jitter buffer's playout point follows."""
    cdef transit *t

    def __cinit__(self, unsigned pt=0, unsigned rate=8000):
        self.t = <transit *>calloc(1, sizeof(transit))
        if self.t == NULL:
            raise MemoryError()
        transit_configure(self.t, pt, rate)

    def __dealloc__(self):
        free(self.t)

    def configure(self, unsigned pt, unsigned rate):
        transit_configure(self.t, pt, rate)

    def feed(self, const unsigned char[::1] packet, long long now_ns):
        transit_on_rtp(self.t, &packet[0] if packet.shape[0] else NULL, packet.shape[0], now_ns)

    def view(self):
        """None until 50 packets; else newest_ns, newest_us (its lateness), newest_ts, target_us
        (the quantile's), packet_us, count, steps (delay steps started again from)."""
        cdef transit_view v
        if not transit_read(self.t, &v):
            return None
        return {"newest_ns": v.newest_ns, "newest_us": v.newest_us, "target_us": v.target_us,
                "packet_us": v.packet_us, "count": v.count, "newest_ts": v.newest_ts,
                "steps": v.steps}

    def earliest_ns(self, unsigned ts):
        """When the packet with RTP timestamp ``ts`` could come at the earliest; None until 50
        packets."""
        cdef transit_view v
        if not transit_read(self.t, &v):
            return None
        return transit_earliest_ns(&v, ts)

    @staticmethod
    def set_pct(unsigned pct):
        """Node-wide (as --jb-wait-pct): the share of packets waited for."""
        transit_set_pct(pct)

    @staticmethod
    def pct():
        return transit_pct()
