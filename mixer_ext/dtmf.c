/* dtmf: see dtmf.h. */
#include "dtmf.h"

#include <math.h>

static const float FREQS[8] = {697, 770, 852, 941, 1209, 1336, 1477, 1633};
static const char KEYS[4][4] = {
    {'1', '2', '3', 'A'},
    {'4', '5', '6', 'B'},
    {'7', '8', '9', 'C'},
    {'*', '0', '#', 'D'},
};

#define MIN_MEAN_SQUARE (250.0f * 250.0f)  /* about -42 dBFS per tone */
#define MIN_TONE_SHARE 0.80f               /* the two tones' share of the frame's energy */
#define MIN_GROUP_RATIO 6.3f               /* 8 dB over the next tone of the same group */
#define MAX_TWIST 6.3f                     /* 8 dB between the row and column tones */

void dtmf_init(dtmf_detector *d, int rate)
{
    d->rate = rate;
    for (int i = 0; i < 8; i++)
        d->coef[i] = 2.0f * cosf(2.0f * (float)M_PI * FREQS[i] / (float)rate);
    d->current = 0;
    d->hits = 0;
    d->misses = 0;
    d->reported = 0;
}

char dtmf_frame_digit(const dtmf_detector *d, const int16_t *pcm, int n)
{
    float s1[8] = {0}, s2[8] = {0};
    float energy = 0.0f;
    for (int i = 0; i < n; i++) {
        float x = (float)pcm[i];
        energy += x * x;
        for (int k = 0; k < 8; k++) {
            float s0 = x + d->coef[k] * s1[k] - s2[k];
            s2[k] = s1[k];
            s1[k] = s0;
        }
    }
    if (n <= 0 || energy / (float)n < MIN_MEAN_SQUARE)
        return 0;
    float p[8];
    for (int k = 0; k < 8; k++)
        p[k] = s1[k] * s1[k] + s2[k] * s2[k] - d->coef[k] * s1[k] * s2[k];
    int row = 0, col = 4;
    for (int k = 1; k < 4; k++)
        if (p[k] > p[row]) row = k;
    for (int k = 5; k < 8; k++)
        if (p[k] > p[col]) col = k;
    /* A pure tone of amplitude A gives p = (A n / 2)^2 and energy n A^2 / 2. */
    float share = 2.0f * (p[row] + p[col]) / ((float)n * energy);
    if (share < MIN_TONE_SHARE)
        return 0;
    if (p[row] > p[col] * MAX_TWIST || p[col] > p[row] * MAX_TWIST)
        return 0;
    for (int k = 0; k < 4; k++)
        if (k != row && p[k] * MIN_GROUP_RATIO > p[row]) return 0;
    for (int k = 4; k < 8; k++)
        if (k != col && p[k] * MIN_GROUP_RATIO > p[col]) return 0;
    return KEYS[row][col - 4];
}

char dtmf_feed(dtmf_detector *d, const int16_t *pcm, int n)
{
    char digit = dtmf_frame_digit(d, pcm, n);
    if (digit && digit == d->current)
        d->hits++;
    else
        d->hits = digit ? 1 : 0;
    d->current = digit;
    if (d->reported) {
        if (digit == d->reported) {
            d->misses = 0;
            return 0;
        }
        if (++d->misses < 2)
            return 0;
        d->reported = 0;
    }
    if (digit && d->hits >= 2) {
        d->reported = digit;
        d->misses = 0;
        return digit;
    }
    return 0;
}

int dtmf_tone(char digit, int rate, int16_t *out, int n, int amplitude)
{
    for (int r = 0; r < 4; r++) {
        for (int c = 0; c < 4; c++) {
            if (KEYS[r][c] != digit)
                continue;
            double wr = 2.0 * M_PI * FREQS[r] / rate, wc = 2.0 * M_PI * FREQS[c + 4] / rate;
            for (int i = 0; i < n; i++)
                out[i] = (int16_t)lrint(amplitude * (sin(wr * i) + sin(wc * i)));
            return 1;
        }
    }
    return 0;
}
