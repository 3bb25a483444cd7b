/* mixcore: the per-room N-1 mixer maths, in plain C (no pjlib, no Python).
 *
 * A room mixes its legs once per 20 ms frame. Narrowband (8 kHz) and wideband (16 kHz) legs are
 * summed into two int32 accumulators, each at its own rate; when both kinds are present, each
 * accumulator is resampled once (half-band 2x filter) and added to the other. Every listener
 * then hears the total at its own rate minus its own contribution (N-1), brought to int16 by a
 * soft limiter (gain reduction with a ~300 ms release and a soft knee, never hard clipping).
 * So resampling costs two filter runs per room tick however many legs there are, and a leg's
 * own voice is removed exactly, in its own domain.
 * Who hears whom beyond that: a private leg (a coach) is left out of the totals, and each
 * listener that names it in its hears[] gets its voice added (converted 8 <-> 16 kHz when the
 * rates differ); everyone else, and the recording, never hear it.
 * Nothing here allocates: every buffer lives in the structs, sized for the largest frame.
 */
#ifndef SIPCONF_MIXCORE_H
#define SIPCONF_MIXCORE_H

#include <stdint.h>

#define MIX_MAX_LEGS 32          /* 20 callers plus room sounds (enter/exit/wait) */
#define MIX_FRAME_MS 20
#define MIX_NB_SPF 160           /* 20 ms at 8 kHz */
#define MIX_WB_SPF 320           /* 20 ms at 16 kHz */
#define MIX_MAX_SPF MIX_WB_SPF
#define MIX_GAIN_UNITY 4096      /* gains are Q12: 4096 = 1.0 */

#define MIX_HB_TAPS 12           /* non-zero odd taps per side of the half-band filter */
#define MIX_UP_HIST 23           /* input history the 8k -> 16k filter keeps */
#define MIX_DOWN_HIST 46         /* input history the 16k -> 8k filter keeps */

/* Per-leg flags. */
#define MIX_LEG_MUTED   0x1      /* contributes nothing */
#define MIX_LEG_DEAF    0x2      /* hears nothing (gets silence), e.g. a member still waiting */
#define MIX_LEG_SOURCE  0x4      /* a room sound: contributes, never listens */
#define MIX_LEG_PRIVATE 0x8      /* heard only by the legs naming it in hears[] (a coach) */
#define MIX_LEG_GATE    0x10     /* contributes only while it speaks: an energy gate that opens
                                    on a frame over MIX_GATE_OPEN_DBFS at once and closes, with
                                    a one-frame fade, MIX_GATE_HANGOVER frames after the last */
#define MIX_LEG_AGC     0x20     /* automatic level: its voice is brought towards
                                    MIX_AGC_TARGET_DBFS (-12..+12 dB, adapting on speech only) */
#define MIX_GATE_OPEN_DBFS (-42)
#define MIX_AGC_TARGET_DBFS (-22)  /* active speech level the AGC aims at */
#define MIX_LIMIT_DBFS (-1)      /* what a listener hears is soft-limited under this peak */
#define MIX_GATE_HANGOVER 15     /* 300 ms: the ends of words and short pauses pass */
#define MIX_MAX_HEARS 4          /* private legs one listener may hear */

typedef struct mix_leg mix_leg;
typedef struct mix_room mix_room;

/* Hooks later features attach to the tick (NULL = off). They run inside the tick, on the
 * clock thread: they must not block or allocate. */
typedef void (*mix_input_hook)(void *user, mix_leg *leg, const int16_t *pcm, int n, int rate);
typedef void (*mix_tap_hook)(void *user, const int16_t *mix, int n, int rate);

struct mix_leg {
    int rate;                    /* 8000 or 16000 */
    int spf;                     /* samples per 20 ms frame at rate */
    int flags;
    int gain_in;                 /* Q12, applied to what the leg contributes */
    int gain_out;                /* Q12, applied to what the leg hears */
    int has_audio;               /* set by the driver: in[] holds this frame's audio */
    int16_t in[MIX_MAX_SPF];     /* leg-rate input, filled by the driver before the tick */
    int16_t out[MIX_MAX_SPF];    /* leg-rate output, filled by the tick */
    uint64_t energy;             /* sum of squares of the last contribution (talker energy) */
    float talk_score;            /* smoothed speaking level, dB (floor.c) */
    int talking;                 /* talk_score crossed the floor's thresholds (floor.c) */
    int speaking;                /* talk events: on with talking, off after a quiet spell */
    mix_leg *hears[MIX_MAX_HEARS]; /* private legs of this room this leg hears */
    int nhears;
    int quiet_frames;            /* frames below the off threshold while speaking */
    int gate_hold;               /* MIX_LEG_GATE: frames left before the gate closes */
    int gate_open;
    float agc_gain;              /* MIX_LEG_AGC: the gain now (linear) */
    float agc_level;             /* MIX_LEG_AGC: its speech level (dBFS), tracked on speech */
    float lim_gain;              /* the soft limiter's gain on what it hears (1: idle) */
    mix_input_hook on_input;     /* e.g. in-band DTMF detection */
    void *on_input_user;
    void *user;                  /* owner's pointer (the stream driver) */
    /* internal */
    const int16_t *contrib;      /* this frame's contribution: in[] or scaled[], NULL if none */
    int16_t scaled[MIX_MAX_SPF]; /* in[] times gain_in, when the gain is not unity */
};

struct mix_room {
    int rate;                    /* 8000, or 16000 when any leg is wideband (the full mix's) */
    int spf;
    int nlegs;
    int nb_legs, wb_legs;
    mix_leg *legs[MIX_MAX_LEGS];
    int32_t acc_nb[MIX_NB_SPF];  /* narrowband sum, then the narrowband total */
    int32_t acc_wb[MIX_WB_SPF];  /* wideband sum, then the wideband total */
    float up_hist[MIX_UP_HIST + MIX_NB_SPF];
    float down_hist[MIX_DOWN_HIST + MIX_WB_SPF];
    float fbuf_in[MIX_WB_SPF];
    float fbuf_out[MIX_WB_SPF];
    int16_t mix[MIX_MAX_SPF];    /* the full mix of this frame (for the recording tap) */
    float lim_gain;              /* the soft limiter's gain on the full mix */
    mix_tap_hook tap;
    void *tap_user;
    uint64_t frames;
    int16_t full[2][MIX_MAX_SPF]; /* mix_room_full: the whole mix at 8k [0] and 16k [1] */
    float full_lim[2];
    uint64_t full_at[2];         /* the frame each was made for, plus one (0: never) */
};

void mix_leg_init(mix_leg *leg, int rate);
void mix_room_init(mix_room *room);
/* 0 on success, -1 if the room is full, the leg is already in it, or its rate is not 8/16k. */
int mix_room_add(mix_room *room, mix_leg *leg);
/* 0 on success, -1 if the leg is not in the room. */
int mix_room_remove(mix_room *room, mix_leg *leg);
/* Listener hears the private leg src (hear 1) or no longer (0). Both must be in the room;
 * 0 on success, -1 otherwise (or when listener already hears MIX_MAX_HEARS legs). A leg
 * leaving the room leaves every relation it is part of. */
int mix_room_relate(mix_room *room, mix_leg *listener, mix_leg *src, int hear);
/* One 20 ms frame: reads every leg's in[] (where has_audio), writes every leg's out[]. */
void mix_room_tick(mix_room *room);
/* After a tick: the whole mix at `rate` (8000 or 16000), what a member contributing nothing
 * hears (no gains, relations or sounds of its own), soft-limited; made once a tick. */
const int16_t *mix_room_full(mix_room *room, int rate);

/* The half-band 2x resamplers on float buffers. hist holds MIX_UP_HIST / MIX_DOWN_HIST
 * samples of history (+ room for n), kept between calls; n is the number of input samples. */
void mix_up2(float *hist, const float *in, int n, float *out);
void mix_down2(float *hist, const float *in, int n, float *out);

#endif
