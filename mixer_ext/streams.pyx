# cython: language_level=3
"""Live media: pjmedia streams mixed per room by C clock threads (see engine.h).

Every function here must be called from the node's SIP thread, the one thread that owns pjsua2
(registered with pjlib); the clock threads run on their own, without the GIL.

Rule: every call into C that can take a mutex is made ``with nogil`` (a clock thread holds its
room's mutex for a whole tick; waiting for it with the GIL held would let anything that thread
waits on stall Python too). Stats and the heartbeat take no lock at all.
"""
from libc.stdint cimport int16_t, uint64_t, uintptr_t
import numpy as np
from mixer_ext._engine cimport *

_ATTACH_ERRORS = {
    ENG_ERR_NO_PORT: "stream has no port",
    ENG_ERR_CONVERT: "could not convert the stream to 16 kHz mono",
    ENG_ERR_FRAME: "stream frame is not 20 ms",
    ENG_ERR_NO_MEMORY: "out of memory",
}


class StreamError(RuntimeError):
    """A stream the mixer cannot drive."""


def start(int clocks=1):
    """Start the clock threads (after pjsua's libInit)."""
    with nogil:
        rc = eng_start(clocks)
    if rc != 0:
        raise RuntimeError("could not start mixer clock threads")


def stop():
    """Stop and join the clock threads (before libDestroy; rooms must be gone)."""
    with nogil:
        eng_stop()


DIGIT = ENG_EV_DIGIT
FLOOR = ENG_EV_FLOOR
TALK = ENG_EV_TALK

# Leg flags for ``set_flags`` (mixcore.h), so the node needs no other module for them.
from mixer_ext._mixcore cimport (MIX_LEG_MUTED, MIX_LEG_DEAF, MIX_LEG_PRIVATE, MIX_LEG_GATE,
                                 MIX_LEG_AGC)
MUTED = MIX_LEG_MUTED
DEAF = MIX_LEG_DEAF
PRIVATE = MIX_LEG_PRIVATE
GATE = MIX_LEG_GATE  # denoised, then heard only while it speaks
AGC = MIX_LEG_AGC  # its voice brought to a common level


def poll_events() -> list:
    """What the ticks detected since the last call: ``(DIGIT, leg_id, digit, 0)`` and
    ``(FLOOR, leg_id, "", room_id)`` tuples, oldest first."""
    cdef eng_event buf[64]
    cdef uint64_t dropped = 0
    cdef int n
    out = []
    while True:
        with nogil:
            n = eng_poll_events(buf, 64, &dropped)  # the ticks push under the same lock
        for i in range(n):
            out.append((buf[i].type, buf[i].leg_id,
                        chr(buf[i].digit) if buf[i].digit else "", buf[i].room_id))
        if n < 64:
            return out


def clock_stats() -> dict:
    cdef eng_clock_stats st
    with nogil:
        eng_clock_get_stats(&st)
    return {"clocks": st.nclocks, "rooms": st.nrooms, "ticks": st.ticks, "late": st.late,
            "resyncs": st.resyncs, "room_ticks": st.room_ticks,
            "room_tick_s": st.room_tick_ns / 1e9,
            "room_tick_hist": [st.room_tick_hist[i] for i in range(ENG_TICK_BUCKETS)],
            "room_tick_buckets_s": [eng_tick_bucket_ns[i] / 1e9
                                    for i in range(ENG_TICK_BUCKETS - 1)]}


def clock_stall_seconds() -> float:
    """Seconds since the least recent completed tick over the running clocks (0.0 when none
    runs): grows without bound if a clock thread is stuck. Lock-free; callable from any thread."""
    cdef int64_t ns
    with nogil:
        ns = eng_clock_stall_ns()
    return ns / 1e9


cdef class _Leg:
    """A mixer leg: something the clock reads and, for calls, writes."""
    cdef eng_leg *leg
    cdef object _clip  # keeps the playing clip's memory alive

    def free(self):
        """Leave the room and release the leg."""
        if self.leg != NULL:
            with nogil:
                eng_leg_free(self.leg)
            self.leg = NULL
        self._clip = None

    def __dealloc__(self):
        cdef eng_leg *leg = self.leg
        if leg != NULL:
            self.leg = NULL
            with nogil:
                eng_leg_free(leg)  # takes the room's lock

    cdef eng_leg *_get(self) except NULL:
        if self.leg == NULL:
            raise ValueError("leg was freed")
        return self.leg

    @property
    def rate(self) -> int:
        return eng_leg_rate(self._get())

    @property
    def id(self) -> int:
        """Names this leg in ``poll_events``."""
        return eng_leg_id(self._get())

    def set_flags(self, int flags):
        cdef eng_leg *leg = self._get()
        with nogil:
            eng_leg_set_flags(leg, flags)

    def set_gain(self, int gain_in, int gain_out):
        cdef eng_leg *leg = self._get()
        with nogil:
            eng_leg_set_gain(leg, gain_in, gain_out)

    def relate(self, _Leg src, bint hear=True) -> bool:
        """This leg hears the private leg ``src`` (or no longer); False unless both are in
        one room."""
        cdef eng_leg *leg = self._get()
        cdef eng_leg *other = src._get()
        cdef int rc
        with nogil:
            rc = eng_leg_relate(leg, other, hear)
        return rc == 0

    def own_encoder(self, int ms):
        """Encode this leg's own frames (no shared payload) for the next ``ms``: digits are
        being sent on its stream, which only its own encoding sends."""
        eng_leg_own_encoder(self._get(), ms)

    def leave(self):
        cdef eng_leg *leg = self._get()
        with nogil:
            eng_leg_leave(leg)

    def play(self, const int16_t[::1] pcm not None, int loops=1):
        """Play a clip at this leg's rate: ``loops`` times, or forever when < 1."""
        cdef eng_leg *leg = self._get()
        cdef int n = pcm.shape[0]
        cdef int lp = loops if loops >= 1 else -1
        # The old clip stays referenced until the C player no longer points into it: dropping it
        # first would let a tick read freed memory.
        old = self._clip
        self._clip = pcm
        if n == 0:
            with nogil:
                eng_leg_stop(leg)
        else:
            with nogil:
                eng_leg_play(leg, &pcm[0], n, lp)
        del old

    def stop(self):
        cdef eng_leg *leg = self._get()
        with nogil:
            eng_leg_stop(leg)
        self._clip = None

    @property
    def playing(self) -> bool:
        return bool(eng_leg_playing(self._get()))

    def stats(self) -> dict:
        cdef eng_leg_stats st
        cdef eng_leg *leg = self._get()
        with nogil:
            eng_leg_get_stats(leg, &st)
        return {"id": eng_leg_id(leg), "rate": st.rate, "rx_audio": st.rx_audio,
                "rx_empty": st.rx_empty, "catchups": st.catchups,
                "in_place": st.in_place,
                "playout_s": st.playout_us / 1e6 if st.playout_us >= 0 else None,
                "target_s": st.target_us / 1e6 if st.target_us >= 0 else None,
                "delay_steps": st.delay_steps,
                "tx": st.tx, "shared": st.shared, "errors": st.errors, "energy": st.energy,
                "talking": bool(st.talking),
                "fec_pct": st.fec_pct if st.fec_pct >= 0 else None,
                "fec_frames": st.fec_frames}


cdef class Leg(_Leg):
    """One call's audio stream, driven by the mixer once it is in a room."""
    cdef readonly object placeholder

    def __cinit__(self, uintptr_t stream):
        cdef void *ph = NULL
        cdef int err = 0
        with nogil:
            self.leg = eng_leg_attach(<void *>stream, &ph, &err)
        if self.leg == NULL:
            raise StreamError(_ATTACH_ERRORS.get(err, f"error {err}"))
        self.placeholder = <uintptr_t>ph


cdef class Source(_Leg):
    """A room sound: its clip is mixed into the room like a member's voice."""

    def __cinit__(self, int rate=16000):
        with nogil:
            self.leg = eng_source_create(rate)  # its id comes from under the engine's lock
        if self.leg == NULL:
            raise ValueError(f"unsupported source rate {rate}")


cdef class Agent(_Leg):
    """A room member with no call (an AI agent): its Pipe is its voice and its ears."""

    def __cinit__(self, int rate=16000):
        with nogil:
            self.leg = eng_agent_create(rate)
        if self.leg == NULL:
            raise ValueError(f"unsupported agent rate {rate}")


IN, OUT = ENG_PIPE_IN, ENG_PIPE_OUT


cdef class Pipe:
    """A leg's audio to and from another thread, at the leg's rate (pipes.c): ``read(IN)``
    what a call's caller said, ``read(OUT)`` what it (or an agent) heard; ``write`` audio the
    mixer plays at real time (to that caller alone, or as the agent's voice); ``clear`` drops
    what has not played. Attach/detach on the SIP thread; the rest from any thread."""
    cdef eng_pipe *pipe
    cdef readonly int rate

    def __cinit__(self, int rate, int want, int seconds_up=5, int seconds_down=60):
        self.rate = rate
        self.pipe = eng_pipe_create(rate, want, seconds_up, seconds_down)
        if self.pipe == NULL:
            raise MemoryError()

    def __dealloc__(self):
        cdef eng_pipe *p = self.pipe
        if p != NULL:
            self.pipe = NULL
            with nogil:
                eng_pipe_free(p)  # detaches: takes the leg's room lock

    def attach(self, _Leg leg):
        cdef eng_leg *l = leg._get()
        cdef int rc
        with nogil:
            rc = eng_pipe_attach(self.pipe, l)
        if rc != 0:
            raise ValueError("the leg has a pipe already, or another rate")

    def detach(self):
        with nogil:
            eng_pipe_detach(self.pipe)

    def read(self, int track, int max_samples=16000 * 5):
        out = np.empty(max_samples, dtype=np.int16)
        cdef int16_t[::1] v = out
        cdef int n
        with nogil:
            n = eng_pipe_read(self.pipe, track, &v[0], max_samples)
        return out[:n]

    def write(self, const int16_t[::1] pcm not None):
        cdef int n = pcm.shape[0]
        if n:
            with nogil:
                eng_pipe_write(self.pipe, &pcm[0], n)

    def clear(self) -> int:
        cdef int n
        with nogil:
            n = eng_pipe_clear(self.pipe)
        return n

    def stats(self) -> dict:
        cdef eng_pipe_stats st
        with nogil:
            eng_pipe_get_stats(self.pipe, &st)
        return {"played": st.played, "pending": st.pending, "dropped_up": st.dropped_up,
                "dropped_down": st.dropped_down}


cdef class MixRoom:
    """A room on one of the clock threads."""
    cdef eng_room *room

    def __cinit__(self):
        with nogil:
            self.room = eng_room_create()
        if self.room == NULL:
            raise RuntimeError("mixer clock not started or full")

    def destroy(self):
        if self.room != NULL:
            with nogil:
                eng_room_destroy(self.room)
            self.room = NULL

    def __dealloc__(self):
        cdef eng_room *room = self.room
        if room != NULL:
            self.room = NULL
            with nogil:
                eng_room_destroy(room)

    @property
    def id(self) -> int:
        """Names this room in ``poll_events``."""
        if self.room == NULL:
            raise ValueError("room was destroyed")
        return eng_room_id(self.room)

    def add(self, _Leg leg):
        cdef eng_leg *l = leg._get()
        if self.room == NULL:
            raise ValueError("room was destroyed")
        with nogil:
            rc = eng_room_add(self.room, l)
        if rc != 0:
            raise ValueError("room is full")

    def stats(self) -> dict:
        cdef eng_room_stats st
        if self.room == NULL:
            raise ValueError("room was destroyed")
        with nogil:
            eng_room_get_stats(self.room, &st)
        return {"rate": st.rate, "legs": st.nlegs, "ticks": st.ticks,
                "tick_ns_avg": (st.tick_ns_total // st.ticks) if st.ticks else 0,
                "tick_ns_max": st.tick_ns_max, "phase_moves": st.phase_moves}


cdef class Tap:
    """A recording tap on a room: its full mix at 16 kHz, buffered for ``seconds``; with
    ``tracks``, also that many per-member tracks aligned to it (``read_tracks``).
    Attach and detach on the SIP thread (which owns rooms); ``read`` from any thread."""
    cdef eng_tap *tap
    cdef readonly int tracks

    def __cinit__(self, int seconds=10, int tracks=0):
        self.tracks = tracks
        if tracks:
            self.tap = eng_tap_create_tracks(seconds, tracks)
        else:
            self.tap = eng_tap_create(seconds)
        if self.tap == NULL:
            raise MemoryError()

    def __dealloc__(self):
        cdef eng_tap *tap = self.tap
        if tap != NULL:
            self.tap = NULL
            with nogil:
                eng_tap_free(tap)  # detaches: takes the room's lock

    def attach(self, MixRoom room):
        cdef int rc = -1
        if room.room != NULL:
            with nogil:
                rc = eng_tap_attach(self.tap, room.room)
        if rc != 0:
            raise ValueError("room is gone or already tapped")

    def detach(self):
        with nogil:
            eng_tap_detach(self.tap)

    def read(self, int max_samples=16000 * 10):
        """What the room mixed since the last read (int16, 16 kHz mono)."""
        out = np.empty(max_samples, dtype=np.int16)
        cdef int16_t[::1] v = out
        cdef int n
        with nogil:
            n = eng_tap_read(self.tap, &v[0], max_samples)
        return out[:n]

    def read_tracks(self, int max_samples=16000 * 10) -> list:
        """Each track's samples since the last read: [(leg id or 0, int16 array)] per slot,
        every array as long as what ``read`` gave for the same ticks (give or take a tick)."""
        out = []
        cdef int16_t[::1] v
        cdef int n, slot
        cdef uint64_t leg_id
        for slot in range(self.tracks):
            arr = np.empty(max_samples, dtype=np.int16)
            v = arr
            with nogil:
                n = eng_tap_read_track(self.tap, slot, &v[0], max_samples, &leg_id)
            out.append((leg_id, arr[:n]))
        return out

    @property
    def dropped(self) -> int:
        cdef uint64_t d
        with nogil:
            d = eng_tap_dropped(self.tap)  # under the lock the tick's tap hook takes
        return d


# Strict media (rtpguard.h): each call's media transport wrapped in a guard that takes RTP and
# RTCP only from the call's source.
from mixer_ext._rtpguard cimport *


def catchup_settings(int after_ms):
    """Node-wide: a leg whose jitter buffer kept a whole frame back on every read for
    ``after_ms`` reads on to the newer frame (0: never)."""
    eng_set_catchup(after_ms // 20)


def playout_settings(int wait_pct, int delay_max_ms):
    """Node-wide: each leg's jitter buffer waits for ``wait_pct`` % of its packets (by their
    measured lateness), adding at most ``delay_max_ms`` for them."""
    eng_set_playout(wait_pct, delay_max_ms)


def tick_align_settings(bint on):
    """Node-wide: a room's tick follows its talker's packets (rooms.c)."""
    eng_set_tick_align(on)


def shared_encoding_settings(bint on):
    """Node-wide: call legs hearing the same frame share one encode (share.c)."""
    eng_set_shared_encoding(on)


OPUS_APPLICATIONS = {"voip": 2048, "audio": 2049, "lowdelay": 2051}  # opus_defines.h


def opus_settings(str application, bint direct=True):
    """Node-wide, before calls: the Opus encoders' application (``OPUS_APPLICATIONS``), and
    whether decoders decode each packet at once (else pjmedia's way: a frame held)."""
    sipconf_opus_set_application(OPUS_APPLICATIONS[application])
    fec_set_decoding(direct)


def rtpguard_settings(double relatch_seconds, unsigned learn_packets=3):
    """Node-wide: a latched source is replaced only after ``relatch_seconds`` of its silence
    (by one with its SSRC); a source the SDP did not name is learned after ``learn_packets``
    packets in sequence."""
    rtpguard_configure(<unsigned>(relatch_seconds * 1000), learn_packets)


def rtpguard_wrap_transport(uintptr_t base, bint close_member) -> int:
    """The guard wrapped around the pjmedia transport at ``base`` (pjsua2's
    OnCreateMediaTransportParam.mediaTp), or ``base`` itself when out of memory."""
    cdef pjmedia_transport *tp
    with nogil:
        tp = rtpguard_wrap(<pjmedia_transport *>base, close_member)
    return <uintptr_t>tp if tp != NULL else base


def rtpguard_counts() -> dict:
    """Node-wide: packets dropped (foreign RTP, RTCP), sources learned and relatched."""
    return {"foreign_rtp": rtpguard_count(RTPGUARD_FOREIGN_RTP),
            "foreign_rtcp": rtpguard_count(RTPGUARD_FOREIGN_RTCP),
            "learned": rtpguard_count(RTPGUARD_LEARNED),
            "relatched": rtpguard_count(RTPGUARD_RELATCHED)}
