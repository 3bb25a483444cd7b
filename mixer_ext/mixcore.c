/* mixcore: see mixcore.h. */
#include "mixcore.h"

#include <math.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Half-band low-pass (47 taps, Kaiser beta 5): flat to 3.4 kHz, -54 dB from 4.6 kHz at a
 * 16 kHz rate. The centre tap is 0.5 and every other even tap is zero, so each output costs 12
 * multiply-adds per side. Q16 values of the odd taps h[1], h[3], ... h[23]; they sum to 0.5,
 * so the DC gain is exactly 1. */
static const float HB[MIX_HB_TAPS] = {
    20780.f / 65536, -6695.f / 65536, 3751.f / 65536, -2413.f / 65536, 1627.f / 65536,
    -1106.f / 65536, 742.f / 65536,   -482.f / 65536, 298.f / 65536,   -170.f / 65536,
    85.f / 65536,    -33.f / 65536,
};

static inline int16_t sat16(int64_t v)
{
    if (v > 32767) return 32767;
    if (v < -32768) return -32768;
    return (int16_t)v;
}

/* --- resampling ---------------------------------------------------------------------------- */

void mix_up2(float *hist, const float *in, int n, float *out)
{
    /* x[t] = hist[t + 23]. Output pair m is delayed 12 input samples:
     * y[2m] = x[m-12], y[2m+1] = 2 * sum_j h_j (x[m-12-j] + x[m-11+j]). */
    float odd[MIX_MAX_SPF];
    memcpy(hist + MIX_UP_HIST, in, (size_t)n * sizeof(float));
    for (int m = 0; m < n; m++)
        odd[m] = 0.f;
    for (int j = 0; j < MIX_HB_TAPS; j++) {
        const float c = 2.f * HB[j];
        const float *a = hist + 11 - j;
        const float *b = hist + 12 + j;
        for (int m = 0; m < n; m++)
            odd[m] += c * (a[m] + b[m]);
    }
    for (int m = 0; m < n; m++) {
        out[2 * m] = hist[m + 11];
        out[2 * m + 1] = odd[m];
    }
    memmove(hist, hist + n, MIX_UP_HIST * sizeof(float));
}

void mix_down2(float *hist, const float *in, int n, float *out)
{
    /* v[t] = hist[t + 46]; y[m] = 0.5 v[c] + sum_j h_j (v[c-2j-1] + v[c+2j+1]) with centre
     * c = 2m - 22. Split into even and odd phases so the inner loops run over contiguous data. */
    float ev[(MIX_DOWN_HIST + MIX_MAX_SPF) / 2];
    float od[(MIX_DOWN_HIST + MIX_MAX_SPF) / 2];
    memcpy(hist + MIX_DOWN_HIST, in, (size_t)n * sizeof(float));
    const int half = (MIX_DOWN_HIST + n) / 2;
    for (int k = 0; k < half; k++) {
        ev[k] = hist[2 * k];
        od[k] = hist[2 * k + 1];
    }
    const int outn = n / 2;
    for (int m = 0; m < outn; m++)
        out[m] = 0.5f * ev[m + 12];
    for (int j = 0; j < MIX_HB_TAPS; j++) {
        const float c = HB[j];
        const float *a = od + 11 - j;
        const float *b = od + 12 + j;
        for (int m = 0; m < outn; m++)
            out[m] += c * (a[m] + b[m]);
    }
    memmove(hist, hist + n, MIX_DOWN_HIST * sizeof(float));
}

/* --- vector helpers (n is always a multiple of 8) ------------------------------------------- */

static void acc_add(int32_t *acc, const int16_t *x, int n)
{
#ifdef __SSE2__
    for (int i = 0; i < n; i += 8) {
        __m128i v = _mm_loadu_si128((const __m128i *)(x + i));
        __m128i lo = _mm_srai_epi32(_mm_unpacklo_epi16(v, v), 16);
        __m128i hi = _mm_srai_epi32(_mm_unpackhi_epi16(v, v), 16);
        __m128i *a = (__m128i *)(acc + i);
        _mm_storeu_si128(a, _mm_add_epi32(_mm_loadu_si128(a), lo));
        _mm_storeu_si128(a + 1, _mm_add_epi32(_mm_loadu_si128(a + 1), hi));
    }
#else
    for (int i = 0; i < n; i++)
        acc[i] += x[i];
#endif
}

/* Sum of squares, computed on x/16 so that it vectorises in 32 bits; scaled back. */
static uint64_t energy16(const int16_t *x, int n)
{
#ifdef __SSE2__
    __m128i e = _mm_setzero_si128();
    for (int i = 0; i < n; i += 8) {
        __m128i v = _mm_srai_epi16(_mm_loadu_si128((const __m128i *)(x + i)), 4);
        e = _mm_add_epi32(e, _mm_madd_epi16(v, v));
    }
    int32_t lanes[4];
    _mm_storeu_si128((__m128i *)lanes, e);
    return ((uint64_t)lanes[0] + (uint64_t)lanes[1] + (uint64_t)lanes[2] + (uint64_t)lanes[3])
           << 8;
#else
    uint64_t e = 0;
    for (int i = 0; i < n; i++) {
        int32_t v = x[i] >> 4;
        e += (uint64_t)(v * v);
    }
    return e << 8;
#endif
}

/* out = sat16(acc - own), own may be NULL. */
static void n_minus_one(int16_t *out, const int32_t *acc, const int16_t *own, int n)
{
#ifdef __SSE2__
    for (int i = 0; i < n; i += 8) {
        __m128i a0 = _mm_loadu_si128((const __m128i *)(acc + i));
        __m128i a1 = _mm_loadu_si128((const __m128i *)(acc + i + 4));
        if (own) {
            __m128i v = _mm_loadu_si128((const __m128i *)(own + i));
            a0 = _mm_sub_epi32(a0, _mm_srai_epi32(_mm_unpacklo_epi16(v, v), 16));
            a1 = _mm_sub_epi32(a1, _mm_srai_epi32(_mm_unpackhi_epi16(v, v), 16));
        }
        _mm_storeu_si128((__m128i *)(out + i), _mm_packs_epi32(a0, a1));
    }
#else
    for (int i = 0; i < n; i++)
        out[i] = sat16((int64_t)acc[i] - (own ? own[i] : 0));
#endif
}

/* --- room ------------------------------------------------------------------------------------ */

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
    room->spf = MIX_NB_SPF;
}

static void room_counts_update(mix_room *room)
{
    int nb = 0, wb = 0;
    for (int i = 0; i < room->nlegs; i++) {
        if (room->legs[i]->rate == 16000)
            wb++;
        else
            nb++;
    }
    if ((nb > 0 && room->nb_legs == 0) || (wb > 0 && room->wb_legs == 0)) {
        /* A rate appears: the cross filters start from silence. */
        memset(room->up_hist, 0, sizeof(room->up_hist));
        memset(room->down_hist, 0, sizeof(room->down_hist));
    }
    room->nb_legs = nb;
    room->wb_legs = wb;
    room->rate = wb ? 16000 : 8000;
    room->spf = wb ? MIX_WB_SPF : MIX_NB_SPF;
}

int mix_room_add(mix_room *room, mix_leg *leg)
{
    if (room->nlegs >= MIX_MAX_LEGS || (leg->rate != 8000 && leg->rate != 16000))
        return -1;
    for (int i = 0; i < room->nlegs; i++)
        if (room->legs[i] == leg)
            return -1;
    room->legs[room->nlegs++] = leg;
    room_counts_update(room);
    return 0;
}

static int in_room(mix_room *room, mix_leg *leg)
{
    for (int i = 0; i < room->nlegs; i++)
        if (room->legs[i] == leg)
            return 1;
    return 0;
}

static void unhear(mix_leg *listener, mix_leg *src)
{
    for (int i = 0; i < listener->nhears; i++) {
        if (listener->hears[i] == src) {
            listener->hears[i] = listener->hears[--listener->nhears];
            listener->hears[listener->nhears] = 0;
            return;
        }
    }
}

int mix_room_relate(mix_room *room, mix_leg *listener, mix_leg *src, int hear)
{
    if (listener == src || !in_room(room, listener) || !in_room(room, src))
        return -1;
    unhear(listener, src);
    if (!hear)
        return 0;
    if (listener->nhears >= MIX_MAX_HEARS)
        return -1;
    listener->hears[listener->nhears++] = src;
    return 0;
}

int mix_room_remove(mix_room *room, mix_leg *leg)
{
    for (int i = 0; i < room->nlegs; i++) {
        if (room->legs[i] == leg) {
            for (int j = 0; j < room->nlegs; j++)  /* no one hears it here any more */
                unhear(room->legs[j], leg);
            memset(leg->hears, 0, sizeof(leg->hears));
            leg->nhears = 0;
            room->legs[i] = room->legs[--room->nlegs];
            room->legs[room->nlegs] = 0;
            room_counts_update(room);
            return 0;
        }
    }
    return -1;
}

static void to_float(float *dst, const int32_t *src, int n)
{
    for (int i = 0; i < n; i++)
        dst[i] = (float)src[i];
}

static void add_rounded(int32_t *dst, const float *src, int n)
{
    for (int i = 0; i < n; i++)
        dst[i] += (int32_t)lrintf(src[i]);
}

/* out[n] += a private leg's voice of ns samples: the same rate, or 8 <-> 16 kHz by linear
 * interpolation / pair averages (a whisper's quality, not the room's half-band filters). */
static void add_voice(int16_t *out, int n, const int16_t *v, int ns)
{
    if (ns == n) {
        for (int i = 0; i < n; i++)
            out[i] = sat16((int64_t)out[i] + v[i]);
    } else if (ns * 2 == n) {
        for (int i = 0; i < ns; i++) {
            int32_t next = i + 1 < ns ? v[i + 1] : v[i];
            out[2 * i] = sat16((int64_t)out[2 * i] + v[i]);
            out[2 * i + 1] = sat16((int64_t)out[2 * i + 1] + ((v[i] + next) >> 1));
        }
    } else if (n * 2 == ns) {
        for (int i = 0; i < n; i++)
            out[i] = sat16((int64_t)out[i] + ((v[2 * i] + v[2 * i + 1]) >> 1));
    }
}

/* (32768 * 10^(MIX_GATE_OPEN_DBFS / 20))^2: a frame's mean power at the gate's threshold */
#define GATE_OPEN_POWER 67751ULL

/* MIX_LEG_GATE: the frame to contribute (x; on the frame the gate closes, x faded out into
 * scaled[]), or NULL while the gate is closed. */
static const int16_t *gate(mix_leg *leg, const int16_t *x, int n, uint64_t e)
{
    if (e >= (uint64_t)n * GATE_OPEN_POWER) {
        leg->gate_hold = MIX_GATE_HANGOVER;
        leg->gate_open = 1;
        return x;
    }
    if (leg->gate_hold > 0) {
        leg->gate_hold--;
        return x;
    }
    if (!leg->gate_open)
        return NULL;
    leg->gate_open = 0;
    for (int i = 0; i < n; i++)
        leg->scaled[i] = (int16_t)((int32_t)x[i] * (n - i) / n);
    return leg->scaled;
}

void mix_room_tick(mix_room *room)
{
    memset(room->acc_nb, 0, sizeof(room->acc_nb));
    memset(room->acc_wb, 0, sizeof(room->acc_wb));

    /* 1. every leg's contribution, summed at its own rate */
    for (int l = 0; l < room->nlegs; l++) {
        mix_leg *leg = room->legs[l];
        const int n = leg->spf;
        leg->contrib = 0;
        leg->energy = 0;
        if (!leg->has_audio) {
            if (leg->on_input) {
                memset(leg->in, 0, (size_t)n * sizeof(int16_t));
                leg->on_input(leg->on_input_user, leg, leg->in, n, leg->rate);
            }
            continue;
        }
        if (leg->on_input)
            leg->on_input(leg->on_input_user, leg, leg->in, n, leg->rate);
        if ((leg->flags & MIX_LEG_MUTED) || leg->gain_in == 0)
            continue;
        const int16_t *x = leg->in;
        if (leg->gain_in != MIX_GAIN_UNITY) {
            const int32_t g = leg->gain_in;
            for (int i = 0; i < n; i++)
                leg->scaled[i] = sat16(((int32_t)leg->in[i] * g) >> 12);
            x = leg->scaled;
        }
        const uint64_t e = energy16(x, n);
        leg->energy = e;  /* the talker detection hears the leg, gated or not */
        if ((leg->flags & MIX_LEG_GATE) && !(x = gate(leg, x, n, e)))
            continue;
        if (!(leg->flags & MIX_LEG_PRIVATE))
            acc_add(leg->rate == 16000 ? room->acc_wb : room->acc_nb, x, n);
        leg->contrib = x;
    }

    /* 2. each rate's total gets the other rate's sum, resampled once */
    if (room->nb_legs && room->wb_legs) {
        int32_t nb_sum[MIX_NB_SPF];
        memcpy(nb_sum, room->acc_nb, sizeof(nb_sum));
        to_float(room->fbuf_in, room->acc_wb, MIX_WB_SPF);
        mix_down2(room->down_hist, room->fbuf_in, MIX_WB_SPF, room->fbuf_out);
        add_rounded(room->acc_nb, room->fbuf_out, MIX_NB_SPF);
        to_float(room->fbuf_in, nb_sum, MIX_NB_SPF);
        mix_up2(room->up_hist, room->fbuf_in, MIX_NB_SPF, room->fbuf_out);
        add_rounded(room->acc_wb, room->fbuf_out, MIX_WB_SPF);
    }

    /* 3. the full mix, for the recording tap */
    if (room->tap) {
        const int32_t *total = room->wb_legs ? room->acc_wb : room->acc_nb;
        n_minus_one(room->mix, total, 0, room->spf);
        room->tap(room->tap_user, room->mix, room->spf, room->rate);
    }

    /* 4. every listener hears its rate's total less its own contribution */
    for (int l = 0; l < room->nlegs; l++) {
        mix_leg *leg = room->legs[l];
        if (leg->flags & MIX_LEG_SOURCE)
            continue;
        const int n = leg->spf;
        if (leg->flags & MIX_LEG_DEAF) {
            memset(leg->out, 0, (size_t)n * sizeof(int16_t));
            continue;
        }
        const int32_t *total = leg->rate == 16000 ? room->acc_wb : room->acc_nb;
        n_minus_one(leg->out, total, (leg->flags & MIX_LEG_PRIVATE) ? 0 : leg->contrib, n);
        for (int h = 0; h < leg->nhears; h++)
            if (leg->hears[h]->contrib)
                add_voice(leg->out, n, leg->hears[h]->contrib, leg->hears[h]->spf);
        if (leg->gain_out != MIX_GAIN_UNITY) {
            const int32_t g = leg->gain_out;
            for (int i = 0; i < n; i++)
                leg->out[i] = sat16(((int32_t)leg->out[i] * g) >> 12);
        }
    }
    room->frames++;
}
