# C-level interface of the mixer maths (mixcore.h), shared by mixer.pyx and streams.pyx.
from libc.stdint cimport int16_t, int32_t, uint64_t

cdef extern from "mixcore.h" nogil:
    enum:
        MIX_MAX_LEGS
        MIX_FRAME_MS
        MIX_MAX_RATE
        MIX_MAX_SPF
        MIX_NB_SPF
        MIX_WB_SPF
        MIX_GAIN_UNITY
        MIX_UP_HIST
        MIX_DOWN_HIST
        MIX_LEG_MUTED
        MIX_LEG_DEAF
        MIX_LEG_SOURCE
        MIX_LEG_PRIVATE
        MIX_LEG_GATE
        MIX_LEG_AGC

    ctypedef struct mix_leg:
        int rate
        int spf
        int flags
        int gain_in
        int gain_out
        int has_audio
        int16_t in_ "in"[MIX_MAX_SPF]
        int16_t out[MIX_MAX_SPF]
        uint64_t energy
        float talk_score
        int talking
        int speaking
        float agc_gain
        float lim_gain
        void *user

    ctypedef struct mix_room:
        int rate
        int spf
        int nlegs
        uint64_t frames

    void mix_leg_init(mix_leg *leg, int rate)
    int mix_room_relate(mix_room *room, mix_leg *listener, mix_leg *src, int hear)
    void mix_room_init(mix_room *room)
    int mix_room_add(mix_room *room, mix_leg *leg)
    int mix_room_remove(mix_room *room, mix_leg *leg)
    void mix_room_tick(mix_room *room)
    void mix_up2(float *hist, const float *inp, int n, float *out)
    void mix_down2(float *hist, const float *inp, int n, float *out)


cdef extern from "dtmf.h" nogil:
    ctypedef struct dtmf_detector:
        int rate
    void dtmf_init(dtmf_detector *d, int rate)
    char dtmf_feed(dtmf_detector *d, const int16_t *pcm, int n)
    int c_dtmf_tone "dtmf_tone"(char digit, int rate, int16_t *out, int n, int amplitude)


cdef extern from "floor.h" nogil:
    ctypedef struct floor_state:
        mix_leg *holder
    void floor_init(floor_state *f)
    int floor_update(floor_state *f, mix_room *room)
    void floor_forget(floor_state *f, mix_leg *leg)
