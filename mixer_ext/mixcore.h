/* mixcore: the per-room N-1 mixer maths, in plain C (no pjlib, no Python).
 *
 * A room mixes its legs once per 20 ms frame: every leg's input is brought to the room rate,
 * scaled by its gain and summed into an int32 accumulator; each listening leg then gets the sum
 * minus its own contribution (N-1), saturated to int16 and brought back to its own rate.
 * Nothing here allocates: every buffer lives in the structs, sized for the largest frame.
 */
#ifndef SIPCONF_MIXCORE_H
#define SIPCONF_MIXCORE_H

#include <stdint.h>

#define MIX_MAX_LEGS 32          /* 20 callers plus room sounds (enter/exit/wait) */
#define MIX_FRAME_MS 20
#define MIX_MAX_RATE 16000
#define MIX_MAX_SPF (MIX_MAX_RATE * MIX_FRAME_MS / 1000)
#define MIX_GAIN_UNITY 4096      /* gains are Q12: 4096 = 1.0 */

#define MIX_HB_TAPS 12           /* non-zero odd taps per side of the half-band filter */
#define MIX_UP_HIST 23
#define MIX_DOWN_HIST 46

/* Per-leg flags. */
#define MIX_LEG_MUTED   0x1      /* contributes nothing */
#define MIX_LEG_DEAF    0x2      /* hears nothing (gets silence), e.g. a member still waiting */
#define MIX_LEG_SOURCE  0x4      /* a room sound: contributes, never listens */

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
    /* internal */
    int contributing;
    int32_t contrib[MIX_MAX_SPF];        /* room-rate contribution of this frame */
    int16_t up_in[MIX_UP_HIST + MIX_MAX_SPF];      /* in: 8k -> 16k history + frame */
    int16_t down_in[MIX_DOWN_HIST + MIX_MAX_SPF];  /* in: 16k -> 8k */
    int16_t up_out[MIX_UP_HIST + MIX_MAX_SPF];     /* out: 8k -> 16k */
    int16_t down_out[MIX_DOWN_HIST + MIX_MAX_SPF]; /* out: 16k -> 8k */
    uint64_t energy;             /* sum of squares of the last contribution (talker energy) */
    mix_input_hook on_input;     /* e.g. in-band DTMF detection */
    void *on_input_user;
    void *user;                  /* owner's pointer (the stream driver) */
};

struct mix_room {
    int rate;                    /* 8000, or 16000 when any leg is wideband */
    int spf;
    int nlegs;
    mix_leg *legs[MIX_MAX_LEGS];
    int32_t acc[MIX_MAX_SPF];
    int16_t scratch[MIX_MAX_SPF];
    int16_t mix[MIX_MAX_SPF];    /* the full mix of this frame (for the recording tap) */
    mix_tap_hook tap;
    void *tap_user;
    uint64_t frames;
};

void mix_leg_init(mix_leg *leg, int rate);
void mix_room_init(mix_room *room);
/* 0 on success, -1 if the room is full or the leg is already in it. */
int mix_room_add(mix_room *room, mix_leg *leg);
/* 0 on success, -1 if the leg is not in the room. */
int mix_room_remove(mix_room *room, mix_leg *leg);
/* One 20 ms frame: reads every leg's in[] (where has_audio), writes every leg's out[]. */
void mix_room_tick(mix_room *room);

/* The half-band 2x resamplers, exposed for tests. hist is MIX_UP_HIST / MIX_DOWN_HIST + n. */
void mix_upsample2(int16_t *hist, const int16_t *in, int n, int16_t *out);
void mix_downsample2(int16_t *hist, const int16_t *in, int n, int16_t *out);

#endif
