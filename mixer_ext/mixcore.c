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

/* d = acc - own (int32, no saturation), own may be NULL. */
static void n_minus_one(int32_t *d, const int32_t *acc, const int16_t *own, int n)
{
    if (!own) {
        memcpy(d, acc, (size_t)n * sizeof(int32_t));
        return;
    }
#ifdef __SSE2__
    for (int i = 0; i < n; i += 8) {
        __m128i a0 = _mm_loadu_si128((const __m128i *)(acc + i));
        __m128i a1 = _mm_loadu_si128((const __m128i *)(acc + i + 4));
        __m128i v = _mm_loadu_si128((const __m128i *)(own + i));
        a0 = _mm_sub_epi32(a0, _mm_srai_epi32(_mm_unpacklo_epi16(v, v), 16));
        a1 = _mm_sub_epi32(a1, _mm_srai_epi32(_mm_unpackhi_epi16(v, v), 16));
        _mm_storeu_si128((__m128i *)(d + i), a0);
        _mm_storeu_si128((__m128i *)(d + i + 4), a1);
    }
#else
    for (int i = 0; i < n; i++)
        d[i] = acc[i] - own[i];
#endif
}

/* out = d, where every sample fits int16. */
static void pack16(int16_t *out, const int32_t *d, int n)
{
#ifdef __SSE2__
    for (int i = 0; i < n; i += 8) {
        __m128i a0 = _mm_loadu_si128((const __m128i *)(d + i));
        __m128i a1 = _mm_loadu_si128((const __m128i *)(d + i + 4));
        _mm_storeu_si128((__m128i *)(out + i), _mm_packs_epi32(a0, a1));
    }
#else
    for (int i = 0; i < n; i++)
        out[i] = (int16_t)d[i];
#endif
}

/* out = acc - own packed to int16 (own may be NULL): 1 when every sample is within
 * +-LIM_THRESH_I (then out is the frame, bit-exact), 0 when the limiter must see it. */
#define LIM_THRESH_I 29204       /* MIX_LIMIT_DBFS (-1 dBFS) as a peak */
static int n_minus_one_fits(int16_t *out, const int32_t *acc, const int16_t *own, int n)
{
#ifdef __SSE2__
    __m128i hi = _mm_set1_epi16(-32768), lo = _mm_set1_epi16(32767);
    for (int i = 0; i < n; i += 8) {
        __m128i a0 = _mm_loadu_si128((const __m128i *)(acc + i));
        __m128i a1 = _mm_loadu_si128((const __m128i *)(acc + i + 4));
        if (own) {
            __m128i v = _mm_loadu_si128((const __m128i *)(own + i));
            a0 = _mm_sub_epi32(a0, _mm_srai_epi32(_mm_unpacklo_epi16(v, v), 16));
            a1 = _mm_sub_epi32(a1, _mm_srai_epi32(_mm_unpackhi_epi16(v, v), 16));
        }
        __m128i p = _mm_packs_epi32(a0, a1);  /* saturated: an overflow reads as full scale */
        hi = _mm_max_epi16(hi, p);
        lo = _mm_min_epi16(lo, p);
        _mm_storeu_si128((__m128i *)(out + i), p);
    }
    int16_t h[8], l[8];
    _mm_storeu_si128((__m128i *)h, hi);
    _mm_storeu_si128((__m128i *)l, lo);
    for (int k = 0; k < 8; k++)
        if (h[k] > LIM_THRESH_I || l[k] < -LIM_THRESH_I)
            return 0;
    return 1;
#else
    int ok = 1;
    for (int i = 0; i < n; i++) {
        int32_t v = acc[i] - (own ? own[i] : 0);
        ok &= v <= LIM_THRESH_I && v >= -LIM_THRESH_I;
        out[i] = sat16(v);
    }
    return ok;
#endif
}

/* --- soft limiter ---------------------------------------------------------------------------- */

#define LIM_THRESH ((float)LIM_THRESH_I)
#define LIM_RELEASE 0.25f        /* per frame: 70 ms time constant, unity again within ~300 ms */

static inline int16_t soft16(float v)
{
    float a = fabsf(v);
    if (a <= LIM_THRESH)
        return (int16_t)lrintf(v);
    const float span = 32767.f - LIM_THRESH;  /* the knee: bent towards full scale, never over */
    const float z = (a - LIM_THRESH) / span;  /* z / (1 + z): slope 1 at the knee, like tanh */
    float y = LIM_THRESH + span * z / (1.f + z);
    return (int16_t)lrintf(v < 0 ? -y : y);
}

/* d (a listener's mix, int32) to int16 out: a frame that fits under the threshold, with the
 * limiter idle, is packed as it is (bit-exact); a louder one gets the gain that brings its
 * peak to the threshold (reached a quarter into the frame, so a new peak is caught at once),
 * which recovers within ~300 ms; what the ramp still lets over the threshold is bent by a soft
 * knee. Many talkers at once sound quieter, not distorted (hard clipping's harmonics). */
static void limit(int16_t *out, const int32_t *d, int n, float *gstate)
{
    int32_t peak = 0;
    for (int i = 0; i < n; i++) {
        int32_t a = d[i] < 0 ? -d[i] : d[i];
        peak = a > peak ? a : peak;
    }
    const float g0 = *gstate;
    if (peak <= (int32_t)LIM_THRESH && g0 >= 1.f) {
        pack16(out, d, n);
        return;
    }
    const float need = peak > (int32_t)LIM_THRESH ? LIM_THRESH / (float)peak : 1.f;
    float g1 = need < g0 ? need : g0 + (1.f - g0) * LIM_RELEASE;
    if (g1 > need)
        g1 = need;
    if (g1 > 0.995f && need >= 1.f)
        g1 = 1.f;
    const int ramp = n / 4;
    for (int i = 0; i < n; i++) {
        float g = i < ramp ? g0 + (g1 - g0) * (float)(i + 1) / (float)ramp : g1;
        out[i] = soft16((float)d[i] * g);
    }
    *gstate = g1;
}

/* --- automatic level ------------------------------------------------------------------------- */

#define AGC_VOICE_DBFS (-40.f)   /* frames louder than this adapt the level (speech, not noise) */
#define AGC_MAX_DB 12.f
#define AGC_UP_DB 0.15f          /* per frame: 7.5 dB/s up, so a pause is not filled with noise */
#define AGC_DOWN_DB 1.0f         /* per frame: 50 dB/s down, a shout is tamed in ~200 ms */

/* MIX_LEG_AGC on a frame x with energy e: track the leg's speech level (fast up, slow down,
 * speech frames only), steer the gain towards the target, and write x times a gain ramped
 * from the last frame's to this one's into scaled[]. Between words the gain holds. */
static const int16_t *agc(mix_leg *leg, const int16_t *x, int n, uint64_t e)
{
    const float g0 = leg->agc_gain;
    const float ms = (float)e / (float)n;
    const float level = 10.f * log10f(ms / (32768.f * 32768.f) + 1e-12f);
    float g1 = g0;
    if (level > AGC_VOICE_DBFS) {
        if (leg->agc_level == 0.f)
            leg->agc_level = level;  /* the first word sets the level */
        else
            leg->agc_level += (level > leg->agc_level ? 0.3f : 0.03f) * (level - leg->agc_level);
        float want = (float)MIX_AGC_TARGET_DBFS - leg->agc_level;
        want = want > AGC_MAX_DB ? AGC_MAX_DB : want < -AGC_MAX_DB ? -AGC_MAX_DB : want;
        float now = 20.f * log10f(g0);
        now += want > now ? fminf(AGC_UP_DB, want - now) : -fminf(AGC_DOWN_DB, now - want);
        g1 = powf(10.f, now / 20.f);
    }
    leg->agc_gain = g1;
    if (g0 == 1.f && g1 == 1.f)
        return x;
    for (int i = 0; i < n; i++) {
        float g = g0 + (g1 - g0) * (float)(i + 1) / (float)n;
        float v = (float)x[i] * g;
        leg->scaled[i] = (int16_t)(v > 32767.f ? 32767 : v < -32768.f ? -32768 : lrintf(v));
    }
    return leg->scaled;
}

/* --- room ------------------------------------------------------------------------------------ */

void mix_leg_init(mix_leg *leg, int rate)
{
    memset(leg, 0, sizeof(*leg));
    leg->rate = rate;
    leg->spf = rate * MIX_FRAME_MS / 1000;
    leg->gain_in = MIX_GAIN_UNITY;
    leg->gain_out = MIX_GAIN_UNITY;
    leg->agc_gain = 1.f;
    leg->lim_gain = 1.f;
}

void mix_room_init(mix_room *room)
{
    memset(room, 0, sizeof(*room));
    room->rate = 8000;
    room->spf = MIX_NB_SPF;
    room->lim_gain = 1.f;
    room->full_lim[0] = room->full_lim[1] = 1.f;
}

const int16_t *mix_room_full(mix_room *room, int rate)
{
    const int w = rate == 16000;
    const int n = w ? MIX_WB_SPF : MIX_NB_SPF;
    const int32_t *total = w ? room->acc_wb : room->acc_nb;
    if (room->full_at[w] != room->frames + 1) {
        if (room->full_lim[w] < 1.f || !n_minus_one_fits(room->full[w], total, 0, n)) {
            int32_t d[MIX_MAX_SPF];
            n_minus_one(d, total, 0, n);
            limit(room->full[w], d, n, &room->full_lim[w]);
        }
        room->full_at[w] = room->frames + 1;
    }
    return room->full[w];
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

/* d[n] += a private leg's voice of ns samples: the same rate, or 8 <-> 16 kHz by linear
 * interpolation / pair averages (a whisper's quality, not the room's half-band filters). */
static void add_voice(int32_t *d, int n, const int16_t *v, int ns)
{
    if (ns == n) {
        for (int i = 0; i < n; i++)
            d[i] += v[i];
    } else if (ns * 2 == n) {
        for (int i = 0; i < ns; i++) {
            int32_t next = i + 1 < ns ? v[i + 1] : v[i];
            d[2 * i] += v[i];
            d[2 * i + 1] += (v[i] + next) >> 1;
        }
    } else if (n * 2 == ns) {
        for (int i = 0; i < n; i++)
            d[i] += (v[2 * i] + v[2 * i + 1]) >> 1;
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
        if (leg->flags & MIX_LEG_AGC)
            x = agc(leg, x, n, e);
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
        if (room->lim_gain < 1.f || !n_minus_one_fits(room->mix, total, 0, room->spf)) {
            int32_t d[MIX_MAX_SPF];
            n_minus_one(d, total, 0, room->spf);
            limit(room->mix, d, room->spf, &room->lim_gain);
        }
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
        const int16_t *own = (leg->flags & MIX_LEG_PRIVATE) ? 0 : leg->contrib;
        if (!leg->nhears && leg->gain_out == MIX_GAIN_UNITY && leg->lim_gain >= 1.f
                && n_minus_one_fits(leg->out, total, own, n))
            continue;  /* the common case: N-1 as it is */
        int32_t d[MIX_MAX_SPF];
        n_minus_one(d, total, own, n);
        for (int h = 0; h < leg->nhears; h++)
            if (leg->hears[h]->contrib)
                add_voice(d, n, leg->hears[h]->contrib, leg->hears[h]->spf);
        if (leg->gain_out != MIX_GAIN_UNITY) {
            const int64_t g = leg->gain_out;
            for (int i = 0; i < n; i++)
                d[i] = (int32_t)(((int64_t)d[i] * g) >> 12);
        }
        limit(leg->out, d, n, &leg->lim_gain);
    }
    room->frames++;
}
