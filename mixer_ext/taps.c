/* taps.c: recording taps. A tap is the room's tap hook (mix_room.tap): each tick hands it the
 * full mix, which it upsamples to 16 kHz when the room is at 8 kHz (the mixer's half-band
 * filter) and copies into a ring; the recorder drains the ring from another thread. A full ring
 * drops samples (counted). A tap made with tracks also keeps one ring per member (slot): each
 * leg's own contribution, at 16 kHz, fed every tick with the mix so all are aligned.
 *
 * Locking: g_tap_lock guards the tap <-> room link (t->room, r->tap) and is taken before the
 * room's lock (attach, detach) or alone (taps_room_gone, once no clock reaches the room). A
 * tap's own lock guards its ring; the hook takes it under the room lock, the reader alone. The
 * upsampler state is touched only by the tick (under the room lock) and by attach (ditto).
 */
#include "engine_int.h"
#include "ring.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Per-member tracks (eng_tap_create_tracks): one ring per slot, each fed every tick in step
 * with the mix (the member's contribution, or silence), so every track is aligned to the mix.
 * A slot belongs to the first leg seen in it for the tap's life (0: free, silence). */
typedef struct tap_track {
    uint64_t leg_id;
    int16_t *buf;
    int head, count;
    float up_hist[MIX_UP_HIST + MIX_NB_SPF];
} tap_track;

struct eng_tap {
    pthread_mutex_t lock;
    int16_t *buf;
    int cap, head, count;
    uint64_t dropped;
    tap_track *tracks;                         /* ntracks slots, or NULL */
    int ntracks;
    uint64_t untracked;                        /* leg-ticks with no free slot */
    eng_room *room;                            /* guarded by g_tap_lock */
    float up_hist[MIX_UP_HIST + MIX_NB_SPF];   /* only the tick touches these */
    float fin[MIX_NB_SPF], fout[MIX_WB_SPF];
    int16_t wb[MIX_WB_SPF];
};

static pthread_mutex_t g_tap_lock = PTHREAD_MUTEX_INITIALIZER;

/* Under the room lock and the tap's lock: each slot's 16 kHz frame for this tick. */
static void tracks_push(eng_tap *t, eng_room *r, int n16)
{
    int fed[ENG_MAX_TRACKS] = {0};
    float fin[MIX_NB_SPF], fout[MIX_WB_SPF];
    int16_t wb[MIX_WB_SPF];
    for (int i = 0; i < r->m.nlegs; i++) {
        mix_leg *ml = r->m.legs[i];
        if (ml->flags & (MIX_LEG_SOURCE | MIX_LEG_PRIVATE))
            continue;
        uint64_t id = ((eng_leg *)ml->user)->id;
        int s = -1;
        for (int k = 0; k < t->ntracks && s < 0; k++)
            if (t->tracks[k].leg_id == id)
                s = k;
        for (int k = 0; k < t->ntracks && s < 0; k++)
            if (t->tracks[k].leg_id == 0) {
                s = k;
                t->tracks[k].leg_id = id;
            }
        if (s < 0) {
            t->untracked++;
            continue;
        }
        tap_track *tr = &t->tracks[s];
        const int16_t *x = ml->contrib;  /* NULL: muted or silent this tick */
        if (x && ml->rate == 8000) {
            for (int j = 0; j < ml->spf; j++)
                fin[j] = (float)x[j];
            mix_up2(tr->up_hist, fin, ml->spf, fout);
            for (int j = 0; j < 2 * ml->spf; j++) {
                long v = lrintf(fout[j]);
                wb[j] = (int16_t)(v > 32767 ? 32767 : (v < -32768 ? -32768 : v));
            }
            x = wb;
        }
        ring_put(tr->buf, t->cap, tr->head, &tr->count, x, n16, &t->dropped);
        fed[s] = 1;
    }
    for (int k = 0; k < t->ntracks; k++)
        if (!fed[k])
            ring_put(t->tracks[k].buf, t->cap, t->tracks[k].head, &t->tracks[k].count, NULL,
                     n16, &t->dropped);
}

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
    ring_put(t->buf, t->cap, t->head, &t->count, x, n, &t->dropped);
    if (t->tracks && t->room)
        tracks_push(t, t->room, n);
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

eng_tap *eng_tap_create_tracks(int seconds, int ntracks)
{
    if (ntracks < 1 || ntracks > ENG_MAX_TRACKS)
        return NULL;
    eng_tap *t = eng_tap_create(seconds);
    if (!t)
        return NULL;
    t->tracks = (tap_track *)calloc((size_t)ntracks, sizeof(tap_track));
    if (!t->tracks) {
        eng_tap_free(t);
        return NULL;
    }
    t->ntracks = ntracks;
    for (int k = 0; k < ntracks; k++) {
        t->tracks[k].buf = (int16_t *)malloc((size_t)t->cap * sizeof(int16_t));
        if (!t->tracks[k].buf) {
            eng_tap_free(t);
            return NULL;
        }
    }
    return t;
}

int eng_tap_read_track(eng_tap *t, int slot, int16_t *out, int max, uint64_t *leg_id)
{
    *leg_id = 0;
    if (!t->tracks || slot < 0 || slot >= t->ntracks)
        return 0;
    pthread_mutex_lock(&t->lock);
    tap_track *tr = &t->tracks[slot];
    int n = ring_take(tr->buf, t->cap, &tr->head, &tr->count, out, max);
    *leg_id = tr->leg_id;
    pthread_mutex_unlock(&t->lock);
    return n;
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
    int n = ring_take(t->buf, t->cap, &t->head, &t->count, out, max);
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
    if (t->tracks) {
        for (int k = 0; k < t->ntracks; k++)
            free(t->tracks[k].buf);
        free(t->tracks);
    }
    free(t->buf);
    free(t);
}
