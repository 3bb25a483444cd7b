/* taps.c: recording taps. A tap is the room's tap hook (mix_room.tap): each tick hands it the
 * full mix, which it upsamples to 16 kHz when the room is at 8 kHz (the mixer's half-band
 * filter) and copies into a ring; the recorder drains the ring from another thread. A full ring
 * drops samples (counted).
 *
 * Locking: g_tap_lock guards the tap <-> room link (t->room, r->tap) and is taken before the
 * room's lock (attach, detach) or alone (taps_room_gone, once no clock reaches the room). A
 * tap's own lock guards its ring; the hook takes it under the room lock, the reader alone. The
 * upsampler state is touched only by the tick (under the room lock) and by attach (ditto).
 */
#include "engine_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct eng_tap {
    pthread_mutex_t lock;
    int16_t *buf;
    int cap, head, count;
    uint64_t dropped;
    eng_room *room;                            /* guarded by g_tap_lock */
    float up_hist[MIX_UP_HIST + MIX_NB_SPF];   /* only the tick touches these */
    float fin[MIX_NB_SPF], fout[MIX_WB_SPF];
    int16_t wb[MIX_WB_SPF];
};

static pthread_mutex_t g_tap_lock = PTHREAD_MUTEX_INITIALIZER;

/* The tick's tap hook (under the room lock): the full mix, at 16 kHz, into the ring. */
static void taps_hook(void *user, const int16_t *mix, int n, int rate)
{
    eng_tap *t = (eng_tap *)user;
    const int16_t *x = mix;
    if (rate == 8000) {
        for (int i = 0; i < n; i++)
            t->fin[i] = (float)mix[i];
        mix_up2(t->up_hist, t->fin, n, t->fout);
        for (int i = 0; i < 2 * n; i++) {
            long v = lrintf(t->fout[i]);
            t->wb[i] = (int16_t)(v > 32767 ? 32767 : (v < -32768 ? -32768 : v));
        }
        x = t->wb;
        n *= 2;
    }
    pthread_mutex_lock(&t->lock);
    for (int i = 0; i < n; i++) {
        if (t->count == t->cap) {
            t->dropped++;
            continue;
        }
        t->buf[(t->head + t->count++) % t->cap] = x[i];
    }
    pthread_mutex_unlock(&t->lock);
}

eng_tap *eng_tap_create(int seconds)
{
    eng_tap *t = (eng_tap *)calloc(1, sizeof(eng_tap));
    if (!t)
        return NULL;
    t->cap = (seconds > 0 ? seconds : 10) * 16000;
    t->buf = (int16_t *)malloc((size_t)t->cap * sizeof(int16_t));
    if (!t->buf) {
        free(t);
        return NULL;
    }
    pthread_mutex_init(&t->lock, NULL);
    return t;
}

int eng_tap_attach(eng_tap *t, eng_room *r)
{
    int rc = -1;
    pthread_mutex_lock(&g_tap_lock);
    pthread_mutex_lock(&r->lock);
    if (!r->tap && !t->room) {
        memset(t->up_hist, 0, sizeof(t->up_hist));
        r->tap = t;
        r->m.tap = taps_hook;
        r->m.tap_user = t;
        t->room = r;
        rc = 0;
    }
    pthread_mutex_unlock(&r->lock);
    pthread_mutex_unlock(&g_tap_lock);
    return rc;
}

void eng_tap_detach(eng_tap *t)
{
    pthread_mutex_lock(&g_tap_lock);
    eng_room *r = t->room;
    if (r) {
        pthread_mutex_lock(&r->lock);
        r->tap = NULL;
        r->m.tap = NULL;
        r->m.tap_user = NULL;
        pthread_mutex_unlock(&r->lock);
        t->room = NULL;
    }
    pthread_mutex_unlock(&g_tap_lock);
}

void taps_room_gone(eng_room *r)
{
    pthread_mutex_lock(&g_tap_lock);
    if (r->tap)
        r->tap->room = NULL;
    pthread_mutex_unlock(&g_tap_lock);
}

int eng_tap_read(eng_tap *t, int16_t *out, int max)
{
    pthread_mutex_lock(&t->lock);
    int n = t->count < max ? t->count : max;
    for (int i = 0; i < n; i++)
        out[i] = t->buf[(t->head + i) % t->cap];
    t->head = (t->head + n) % t->cap;
    t->count -= n;
    pthread_mutex_unlock(&t->lock);
    return n;
}

uint64_t eng_tap_dropped(eng_tap *t)
{
    pthread_mutex_lock(&t->lock);
    uint64_t d = t->dropped;
    pthread_mutex_unlock(&t->lock);
    return d;
}

void eng_tap_free(eng_tap *t)
{
    if (!t)
        return;
    eng_tap_detach(t);
    pthread_mutex_destroy(&t->lock);
    free(t->buf);
    free(t);
}
