# C-level interface of the stream driver (engine.h; clock.c, rooms.c, legs.c, taps.c,
# events.c), cimported by streams.pyx.
from libc.stdint cimport int16_t, int64_t, uint64_t

cdef extern from "engine.h" nogil:
    ctypedef struct eng_leg:
        pass
    ctypedef struct eng_room:
        pass
    ctypedef struct eng_tap:
        pass
    ctypedef struct eng_pipe:
        pass
    enum:
        ENG_PIPE_IN
        ENG_PIPE_OUT
    ctypedef struct eng_pipe_stats:
        uint64_t played
        uint64_t pending
        uint64_t dropped_up
        uint64_t dropped_down
    enum:
        ENG_EV_DIGIT
        ENG_EV_FLOOR
        ENG_EV_TALK
    # why eng_leg_attach refused a stream (*err)
    enum:
        ENG_ERR_NO_PORT
        ENG_ERR_CONVERT
        ENG_ERR_FRAME
        ENG_ERR_NO_MEMORY
    ctypedef struct eng_event:
        int type
        char digit
        uint64_t leg_id
        uint64_t room_id
    ctypedef struct eng_leg_stats:
        int rate
        uint64_t rx_audio
        uint64_t rx_empty
        uint64_t catchups
        uint64_t in_place
        int64_t playout_us
        uint64_t delay_steps
        int64_t target_us
        uint64_t tx
        uint64_t shared
        uint64_t errors
        uint64_t energy
        int talking
        int fec_pct
        unsigned fec_frames
    ctypedef struct eng_room_stats:
        int rate
        int nlegs
        uint64_t ticks
        uint64_t tick_ns_total
        uint64_t tick_ns_max
        uint64_t phase_moves
    enum: ENG_TICK_BUCKETS
    const uint64_t eng_tick_bucket_ns[]
    ctypedef struct eng_clock_stats:
        int nclocks
        int nrooms
        uint64_t ticks
        uint64_t late
        uint64_t resyncs
        uint64_t room_ticks
        uint64_t room_tick_ns
        uint64_t room_tick_hist[ENG_TICK_BUCKETS]

    int eng_start(int n)
    void eng_stop()
    eng_leg *eng_leg_attach(void *stream, void **placeholder, int *err)
    void eng_leg_free(eng_leg *leg)
    void eng_leg_set_flags(eng_leg *leg, int flags)
    void eng_leg_set_gain(eng_leg *leg, int gain_in, int gain_out)
    int eng_leg_relate(eng_leg *listener, eng_leg *src, int hear)
    void eng_leg_get_stats(eng_leg *leg, eng_leg_stats *st)
    void eng_set_catchup(int ticks)
    void eng_set_playout(int wait_pct, int delay_max_ms)
    void eng_set_shared_encoding(int on)
    void eng_set_tick_align(int on)
    void eng_leg_own_encoder(eng_leg *leg, int ms)
    void sipconf_opus_set_application(int app)
    void fec_set_decoding(int direct)
    eng_leg *eng_source_create(int rate)
    void eng_leg_play(eng_leg *leg, const int16_t *pcm, int n, int loops)
    void eng_leg_stop(eng_leg *leg)
    int eng_leg_playing(eng_leg *leg)
    int eng_leg_rate(eng_leg *leg)
    eng_room *eng_room_create()
    void eng_room_destroy(eng_room *room)
    int eng_room_add(eng_room *room, eng_leg *leg)
    void eng_leg_leave(eng_leg *leg)
    void eng_room_get_stats(eng_room *room, eng_room_stats *st)
    void eng_clock_get_stats(eng_clock_stats *st)
    int64_t eng_clock_stall_ns()
    uint64_t eng_leg_id(eng_leg *leg)
    uint64_t eng_room_id(eng_room *room)
    int eng_poll_events(eng_event *out, int max, uint64_t *dropped)
    eng_tap *eng_tap_create(int seconds)
    int eng_tap_attach(eng_tap *tap, eng_room *room)
    void eng_tap_detach(eng_tap *tap)
    int eng_tap_read(eng_tap *tap, int16_t *out, int max)
    uint64_t eng_tap_dropped(eng_tap *tap)
    eng_tap *eng_tap_create_tracks(int seconds, int ntracks)
    int eng_tap_read_track(eng_tap *tap, int slot, int16_t *out, int max, uint64_t *leg_id)
    void eng_tap_free(eng_tap *tap)
    eng_pipe *eng_pipe_create(int rate, int want, int seconds_up, int seconds_down)
    int eng_pipe_attach(eng_pipe *p, eng_leg *leg)
    void eng_pipe_detach(eng_pipe *p)
    void eng_pipe_free(eng_pipe *p)
    int eng_pipe_read(eng_pipe *p, int track, int16_t *out, int max)
    void eng_pipe_write(eng_pipe *p, const int16_t *pcm, int n)
    int eng_pipe_clear(eng_pipe *p)
    void eng_pipe_get_stats(eng_pipe *p, eng_pipe_stats *st)
    eng_leg *eng_agent_create(int rate)
