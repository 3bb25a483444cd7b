/* mixcore: see mixcore.h. */
#include "mixcore.h"

#include <string.h>

/* Half-band low-pass (47 taps, Kaiser beta 5, Q16): flat to 3.4 kHz, -54 dB from 4.6 kHz at a
 * 16 kHz rate. The centre tap is 0.5 and every even tap but the centre is zero, so each output
 * costs 12 multiply-adds per side. The odd taps sum to 0.5: DC gain is exactly 1. */
static const int32_t HB[MIX_HB_TAPS] = {
    20780, -6695, 3751, -2413, 1627, -1106, 742, -482, 298, -170, 85, -33,
};

static inline int16_t sat16(int64_t v)
{
    if (v > 32767) return 32767;
    if (v < -32768) return -32768;
    return (int16_t)v;
}

void mix_upsample2(int16_t *hist, const int16_t *in, int n, int16_t *out)
{
    /* hist[0..22] holds the previous 23 input samples; x[t] = hist[t + 23]. Output frame m
     * is delayed 12 input samples: y[2m] = x[m-12], y[2m+1] interpolates x[m-12], x[m-11]. */
    memcpy(hist + MIX_UP_HIST, in, (size_t)n * sizeof(int16_t));
    for (int m = 0; m < n; m++) {
        const int16_t *e = hist + m;
        int64_t acc = 0;
        for (int j = 0; j < MIX_HB_TAPS; j++)
            acc += (int64_t)HB[j] * ((int32_t)e[11 - j] + (int32_t)e[12 + j]);
        out[2 * m] = e[11];
        out[2 * m + 1] = sat16((acc + (1 << 14)) >> 15);
    }
    memmove(hist, hist + n, MIX_UP_HIST * sizeof(int16_t));
}

void mix_downsample2(int16_t *hist, const int16_t *in, int n, int16_t *out)
{
    /* n input samples at 2R -> n/2 outputs at R; v[t] = hist[t + 46], centre at 2m - 22. */
    memcpy(hist + MIX_DOWN_HIST, in, (size_t)n * sizeof(int16_t));
    for (int m = 0; m < n / 2; m++) {
        const int16_t *e = hist + 2 * m + MIX_DOWN_HIST - 22;
        int64_t acc = (int64_t)32768 * e[0];
        for (int j = 0; j < MIX_HB_TAPS; j++)
            acc += (int64_t)HB[j] * ((int32_t)e[-2 * j - 1] + (int32_t)e[2 * j + 1]);
        out[m] = sat16((acc + (1 << 15)) >> 16);
    }
    memmove(hist, hist + n, MIX_DOWN_HIST * sizeof(int16_t));
}

void mix_leg_init(mix_leg *leg, int rate)
{
    memset(leg, 0, sizeof(*leg));
    leg->rate = rate;
    leg->spf = rate * MIX_FRAME_MS / 1000;
    leg->gain_in = MIX_GAIN_UNITY;
    leg->gain_out = MIX_GAIN_UNITY;
}

void mix_room_init(mix_room *room)
{
    memset(room, 0, sizeof(*room));
    room->rate = 8000;
    room->spf = 8000 * MIX_FRAME_MS / 1000;
}

static void room_rate_update(mix_room *room)
{
    int rate = 8000;
    for (int i = 0; i < room->nlegs; i++)
        if (room->legs[i]->rate > rate)
            rate = room->legs[i]->rate;
    room->rate = rate;
    room->spf = rate * MIX_FRAME_MS / 1000;
}

int mix_room_add(mix_room *room, mix_leg *leg)
{
    if (room->nlegs >= MIX_MAX_LEGS)
        return -1;
    for (int i = 0; i < room->nlegs; i++)
        if (room->legs[i] == leg)
            return -1;
    /* A fresh member starts with clean filter history. */
    memset(leg->up_in, 0, sizeof(leg->up_in));
    memset(leg->down_in, 0, sizeof(leg->down_in));
    memset(leg->up_out, 0, sizeof(leg->up_out));
    memset(leg->down_out, 0, sizeof(leg->down_out));
    room->legs[room->nlegs++] = leg;
    room_rate_update(room);
    return 0;
}

int mix_room_remove(mix_room *room, mix_leg *leg)
{
    for (int i = 0; i < room->nlegs; i++) {
        if (room->legs[i] == leg) {
            room->legs[i] = room->legs[--room->nlegs];
            room->legs[room->nlegs] = 0;
            room_rate_update(room);
            return 0;
        }
    }
    return -1;
}

/* Bring the leg's input to the room rate in room->scratch. */
static const int16_t *input_at_room_rate(mix_room *room, mix_leg *leg)
{
    if (leg->rate == room->rate)
        return leg->in;
    if (leg->rate * 2 == room->rate) {
        mix_upsample2(leg->up_in, leg->in, leg->spf, room->scratch);
        return room->scratch;
    }
    mix_downsample2(leg->down_in, leg->in, leg->spf, room->scratch);
    return room->scratch;
}

/* Bring a room-rate frame (in room->scratch) to the leg's rate in leg->out. */
static void output_at_leg_rate(mix_room *room, mix_leg *leg)
{
    if (leg->rate == room->rate)
        memcpy(leg->out, room->scratch, (size_t)room->spf * sizeof(int16_t));
    else if (leg->rate * 2 == room->rate)
        mix_downsample2(leg->down_out, room->scratch, room->spf, leg->out);
    else
        mix_upsample2(leg->up_out, room->scratch, room->spf, leg->out);
}

void mix_room_tick(mix_room *room)
{
    const int n = room->spf;
    int32_t *acc = room->acc;
    memset(acc, 0, (size_t)n * sizeof(int32_t));

    /* 1. every leg's contribution, at the room rate */
    for (int l = 0; l < room->nlegs; l++) {
        mix_leg *leg = room->legs[l];
        leg->contributing = 0;
        leg->energy = 0;
        if (!leg->has_audio)
            memset(leg->in, 0, (size_t)leg->spf * sizeof(int16_t));
        if (leg->on_input)
            leg->on_input(leg->on_input_user, leg, leg->in, leg->spf, leg->rate);
        /* Resample even when muted or silent, so the filter history stays continuous. */
        const int16_t *x = input_at_room_rate(room, leg);
        if (!leg->has_audio || (leg->flags & MIX_LEG_MUTED) || leg->gain_in == 0)
            continue;
        const int32_t g = leg->gain_in;
        int32_t *c = leg->contrib;
        uint64_t e = 0;
        if (g == MIX_GAIN_UNITY) {
            for (int i = 0; i < n; i++) {
                c[i] = x[i];
                acc[i] += x[i];
                e += (uint64_t)((int64_t)x[i] * x[i]);
            }
        } else {
            for (int i = 0; i < n; i++) {
                int32_t v = (x[i] * g) >> 12;
                c[i] = v;
                acc[i] += v;
                e += (uint64_t)((int64_t)v * v);
            }
        }
        leg->energy = e;
        leg->contributing = 1;
    }

    /* 2. the full mix, for the recording tap */
    if (room->tap) {
        for (int i = 0; i < n; i++)
            room->mix[i] = sat16(acc[i]);
        room->tap(room->tap_user, room->mix, n, room->rate);
    }

    /* 3. every listener hears the sum less its own contribution */
    for (int l = 0; l < room->nlegs; l++) {
        mix_leg *leg = room->legs[l];
        if (leg->flags & MIX_LEG_SOURCE)
            continue;
        int16_t *s = room->scratch;
        if (leg->flags & MIX_LEG_DEAF) {
            memset(s, 0, (size_t)n * sizeof(int16_t));
        } else {
            const int32_t g = leg->gain_out;
            const int32_t *c = leg->contrib;
            const int own = leg->contributing;
            if (g == MIX_GAIN_UNITY) {
                if (own)
                    for (int i = 0; i < n; i++) s[i] = sat16(acc[i] - c[i]);
                else
                    for (int i = 0; i < n; i++) s[i] = sat16(acc[i]);
            } else {
                for (int i = 0; i < n; i++) {
                    int64_t v = acc[i] - (own ? c[i] : 0);
                    s[i] = sat16((v * g) >> 12);
                }
            }
        }
        output_at_leg_rate(room, leg);
    }
    room->frames++;
}
