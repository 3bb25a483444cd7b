/* engine: see engine.h. */
#include "engine.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <pjmedia.h>
#include <pjsua-lib/pjsua.h>

#define TICK_NS (MIX_FRAME_MS * 1000000LL)
#define LATE_NS (10 * 1000000LL)
#define RESYNC_NS (100 * 1000000LL)

/* Counters the ticks write and the stats functions read from other threads without any lock:
 * relaxed atomics (each has a single writer at a time; readers want a value, not an order). */
#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define BUMP(x, d) STORE(x, (x) + (d))  /* single writer: no read-modify-write needed */

typedef struct eng_player {
    const int16_t *pcm;
    int n;
    int pos;
    int loops;                  /* plays left after this one; < 0 = forever */
    int active;
} eng_player;

struct eng_leg {
    mix_leg m;                  /* first: a mix_leg* is an eng_leg* */
    eng_player player;
    pjmedia_stream *stream;
    pjmedia_port *port;         /* what the clock drives: the stream's port, or a converter */
    pjmedia_port *mono;         /* channel converter over the stream port, if needed */
    pjmedia_port *resampler;    /* rate converter to 16 kHz, if needed */
    pj_pool_t *pool;
    pjmedia_port *placeholder;
    eng_room *room;
    pj_timestamp ts;
    uint64_t rx_audio, rx_empty, tx, errors;
    uint64_t energy;            /* m.energy and m.talking as of the last tick, for stats */
    int talking;
    uint64_t id;
    dtmf_detector dtmf;
};

struct eng_room {
    mix_room m;
    pthread_mutex_t lock;
    int clock;
    uint64_t id;
    floor_state floor;
    eng_tap *tap;
    uint64_t ticks, tick_ns_total, tick_ns_max;
    int rate, nlegs;            /* m.rate and m.nlegs, for stats (set under lock, read without) */
};

typedef struct eng_clock {
    pthread_t thread;
    pthread_mutex_t lock;
    eng_room *rooms[ENG_MAX_ROOMS_PER_CLOCK];
    int nrooms;
    volatile int running;
    uint64_t ticks, late, resyncs;
    uint64_t room_ticks, room_tick_ns, room_tick_hist[ENG_TICK_BUCKETS];
    int64_t last_tick_ns;       /* heartbeat: monotonic time the last tick completed */
    pj_thread_desc desc;
} eng_clock;

const uint64_t eng_tick_bucket_ns[ENG_TICK_BUCKETS - 1] = {
    1000, 2000, 5000, 10000, 20000, 50000, 100000, 200000, 500000, 1000000, 5000000};

static void tick_observe(eng_clock *c, uint64_t dt)
{
    int i = 0;
    while (i < ENG_TICK_BUCKETS - 1 && dt > eng_tick_bucket_ns[i])
        i++;
    BUMP(c->room_tick_hist[i], 1);
    BUMP(c->room_ticks, 1);
    BUMP(c->room_tick_ns, dt);
}

static eng_clock g_clocks[ENG_MAX_CLOCKS];
static int g_nclocks;  /* written under g_lock, read atomically anywhere */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t g_next_id;  /* guarded by g_lock */

/* Events from the ticks: a ring the control plane drains every few milliseconds. */
static pthread_mutex_t g_ev_lock = PTHREAD_MUTEX_INITIALIZER;
static eng_event g_events[ENG_EVENT_QUEUE];
static int g_ev_head, g_ev_count;
static uint64_t g_ev_dropped;

static uint64_t new_id(void)
{
    pthread_mutex_lock(&g_lock);
    uint64_t id = ++g_next_id;
    pthread_mutex_unlock(&g_lock);
    return id;
}

static void push_event(int type, char digit, uint64_t leg_id, uint64_t room_id)
{
    pthread_mutex_lock(&g_ev_lock);
    if (g_ev_count == ENG_EVENT_QUEUE) {
        g_ev_dropped++;
    } else {
        eng_event *e = &g_events[(g_ev_head + g_ev_count++) % ENG_EVENT_QUEUE];
        e->type = type;
        e->digit = digit;
        e->leg_id = leg_id;
        e->room_id = room_id;
    }
    pthread_mutex_unlock(&g_ev_lock);
}

int eng_poll_events(eng_event *out, int max, uint64_t *dropped)
{
    pthread_mutex_lock(&g_ev_lock);
    int n = g_ev_count < max ? g_ev_count : max;
    for (int i = 0; i < n; i++)
        out[i] = g_events[(g_ev_head + i) % ENG_EVENT_QUEUE];
    g_ev_head = (g_ev_head + n) % ENG_EVENT_QUEUE;
    g_ev_count -= n;
    if (dropped) {
        *dropped = g_ev_dropped;
        g_ev_dropped = 0;
    }
    pthread_mutex_unlock(&g_ev_lock);
    return n;
}

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
static void tap_hook(void *user, const int16_t *mix, int n, int rate)
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
        r->m.tap = tap_hook;
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

/* The tick's input hook on call legs: in-band DTMF. */
static void detect_input(void *user, mix_leg *m, const int16_t *pcm, int n, int rate)
{
    (void)rate;
    eng_leg *leg = (eng_leg *)user;
    char digit = dtmf_feed(&leg->dtmf, pcm, n);
    if (digit)
        push_event(ENG_EV_DIGIT, digit, leg->id, 0);
    (void)m;
}

static void release_converters(eng_leg *leg)
{
    /* Outermost first; neither destroys the port below it (DONT_DESTROY_DN). */
    if (leg->resampler) {
        pjmedia_port_destroy(leg->resampler);
        leg->resampler = NULL;
    }
    if (leg->mono) {
        pjmedia_port_destroy(leg->mono);
        leg->mono = NULL;
    }
}

static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Next n samples of the clip into dst (silence past its end); 0 once it is finished. */
static int player_fill(eng_player *p, int16_t *dst, int n, int add)
{
    if (!p->active || !p->pcm || p->n <= 0)
        return 0;
    int i = 0;
    while (i < n) {
        if (p->pos >= p->n) {
            if (p->loops == 0) {
                STORE(p->active, 0);  /* eng_leg_playing reads it without the lock */
                break;
            }
            if (p->loops > 0)
                p->loops--;
            p->pos = 0;
        }
        int take = p->n - p->pos;
        if (take > n - i)
            take = n - i;
        if (add) {
            for (int k = 0; k < take; k++) {
                int32_t v = (int32_t)dst[i + k] + p->pcm[p->pos + k];
                dst[i + k] = (int16_t)(v > 32767 ? 32767 : (v < -32768 ? -32768 : v));
            }
        } else {
            memcpy(dst + i, p->pcm + p->pos, (size_t)take * sizeof(int16_t));
        }
        i += take;
        p->pos += take;
    }
    if (!add && i < n)
        memset(dst + i, 0, (size_t)(n - i) * sizeof(int16_t));
    return i > 0;
}

static uint64_t room_tick(eng_room *r)
{
    int64_t t0 = now_ns();
    pthread_mutex_lock(&r->lock);
    mix_room *m = &r->m;
    for (int i = 0; i < m->nlegs; i++) {
        eng_leg *leg = (eng_leg *)m->legs[i];
        if (!leg->port) {
            /* a room sound: its player is its voice */
            leg->m.has_audio = player_fill(&leg->player, leg->m.in, leg->m.spf, 0);
            continue;
        }
        pjmedia_frame f;
        memset(&f, 0, sizeof(f));
        f.type = PJMEDIA_FRAME_TYPE_AUDIO;
        f.buf = leg->m.in;
        f.size = (pj_size_t)leg->m.spf * 2;
        leg->m.has_audio = 0;
        if (pjmedia_port_get_frame(leg->port, &f) != PJ_SUCCESS) {
            BUMP(leg->errors, 1);
        } else if (f.type == PJMEDIA_FRAME_TYPE_AUDIO && f.size > 0) {
            if (f.size < (pj_size_t)leg->m.spf * 2)
                memset((char *)leg->m.in + f.size, 0, leg->m.spf * 2 - f.size);
            leg->m.has_audio = 1;
            BUMP(leg->rx_audio, 1);
        } else {
            BUMP(leg->rx_empty, 1);
        }
    }
    mix_room_tick(m);
    if (floor_update(&r->floor, m))
        push_event(ENG_EV_FLOOR, 0, ((eng_leg *)r->floor.holder)->id, r->id);
    for (int i = 0; i < m->nlegs; i++) {
        eng_leg *leg = (eng_leg *)m->legs[i];
        STORE(leg->energy, leg->m.energy);
        STORE(leg->talking, leg->m.talking);
        if ((leg->m.flags & MIX_LEG_SOURCE) || !leg->port)
            continue;
        player_fill(&leg->player, leg->m.out, leg->m.spf, 1);  /* private sound, if any */
        pjmedia_frame f;
        memset(&f, 0, sizeof(f));
        f.type = PJMEDIA_FRAME_TYPE_AUDIO;
        f.buf = leg->m.out;
        f.size = (pj_size_t)leg->m.spf * 2;
        f.timestamp = leg->ts;
        if (pjmedia_port_put_frame(leg->port, &f) != PJ_SUCCESS)
            BUMP(leg->errors, 1);
        else
            BUMP(leg->tx, 1);
        leg->ts.u64 += (pj_uint64_t)leg->m.spf;
    }
    pthread_mutex_unlock(&r->lock);
    uint64_t dt = (uint64_t)(now_ns() - t0);
    BUMP(r->ticks, 1);
    BUMP(r->tick_ns_total, dt);
    if (dt > r->tick_ns_max)
        STORE(r->tick_ns_max, dt);
    return dt;
}

static void *clock_main(void *arg)
{
    eng_clock *c = (eng_clock *)arg;
    pj_thread_t *self = NULL;
    char name[16];
    snprintf(name, sizeof(name), "mixclk%d", (int)(c - g_clocks));
    memset(c->desc, 0, sizeof(c->desc));
    pj_thread_register(name, c->desc, &self);

    int64_t next = now_ns();
    while (c->running) {
        next += TICK_NS;
        struct timespec ts = { (time_t)(next / 1000000000LL), (long)(next % 1000000000LL) };
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
            ;
        int64_t start = now_ns();
        if (start - next > LATE_NS)
            BUMP(c->late, 1);
        pthread_mutex_lock(&c->lock);
        for (int i = 0; i < c->nrooms; i++)
            tick_observe(c, room_tick(c->rooms[i]));
        BUMP(c->ticks, 1);
        pthread_mutex_unlock(&c->lock);
        int64_t done = now_ns();
        STORE(c->last_tick_ns, done);  /* the heartbeat eng_clock_stall_ns reads */
        if (done - next > RESYNC_NS) {
            /* Far behind (the machine was stalled): skip ahead instead of bursting. */
            next = done;
            BUMP(c->resyncs, 1);
        }
    }
    return NULL;
}

int eng_start(int n)
{
    if (n < 1)
        n = 1;
    if (n > ENG_MAX_CLOCKS)
        n = ENG_MAX_CLOCKS;
    pthread_mutex_lock(&g_lock);
    if (g_nclocks > 0) {
        pthread_mutex_unlock(&g_lock);
        return 0;
    }
    for (int i = 0; i < n; i++) {
        eng_clock *c = &g_clocks[i];
        memset(c, 0, sizeof(*c));
        pthread_mutex_init(&c->lock, NULL);
        c->last_tick_ns = now_ns();  /* a clock that never ticks ages from its start */
        c->running = 1;
        if (pthread_create(&c->thread, NULL, clock_main, c) != 0) {
            c->running = 0;
            __atomic_store_n(&g_nclocks, i, __ATOMIC_RELEASE);
            pthread_mutex_unlock(&g_lock);
            return -1;
        }
        /* release: a lock-free reader that sees this count sees the clock's fields set */
        __atomic_store_n(&g_nclocks, i + 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&g_lock);
    return 0;
}

void eng_stop(void)
{
    pthread_mutex_lock(&g_lock);
    for (int i = 0; i < g_nclocks; i++)
        g_clocks[i].running = 0;
    for (int i = 0; i < g_nclocks; i++)
        pthread_join(g_clocks[i].thread, NULL);
    __atomic_store_n(&g_nclocks, 0, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&g_lock);
}

eng_leg *eng_leg_attach(void *stream, void **placeholder, int *err)
{
    pjmedia_port *sport = NULL;
    *err = 0;
    if (pjmedia_stream_get_port((pjmedia_stream *)stream, &sport) != PJ_SUCCESS || !sport) {
        *err = -1;
        return NULL;
    }
    eng_leg *leg = (eng_leg *)calloc(1, sizeof(eng_leg));
    if (!leg) {
        *err = -4;
        return NULL;
    }
    leg->pool = pjsua_pool_create("mixleg", 2048, 2048);
    if (!leg->pool) {
        free(leg);
        *err = -4;
        return NULL;
    }
    /* The mixer takes 8 or 16 kHz mono. A stream at another rate or channel count (Opus
     * negotiated at 48 kHz stereo, say) is wrapped in pjmedia's channel and rate converters,
     * so only such legs pay for conversion. */
    pjmedia_port *port = sport;
    if (PJMEDIA_PIA_CCNT(&port->info) != 1) {
        pjmedia_port *mono = NULL;
        if (pjmedia_stereo_port_create(leg->pool, port, 1, PJMEDIA_STEREO_DONT_DESTROY_DN,
                                       &mono) != PJ_SUCCESS) {
            *err = -2;
            goto fail;
        }
        port = leg->mono = mono;
    }
    unsigned rate = PJMEDIA_PIA_SRATE(&port->info);
    if (rate != 8000 && rate != 16000) {
        pjmedia_port *rs = NULL;
        if (pjmedia_resample_port_create(leg->pool, port, 16000,
                                         PJMEDIA_RESAMPLE_DONT_DESTROY_DN, &rs) != PJ_SUCCESS) {
            *err = -2;
            goto fail;
        }
        port = leg->resampler = rs;
        rate = 16000;
    }
    unsigned spf = PJMEDIA_PIA_SPF(&port->info);
    if (spf != rate * MIX_FRAME_MS / 1000) {
        *err = -3;
        goto fail;
    }
    mix_leg_init(&leg->m, (int)rate);
    leg->m.user = leg;
    leg->id = new_id();
    dtmf_init(&leg->dtmf, (int)rate);
    leg->m.on_input = detect_input;
    leg->m.on_input_user = leg;
    leg->stream = (pjmedia_stream *)stream;
    leg->port = port;
    if (pjmedia_null_port_create(leg->pool, rate, 1, spf, 16, &leg->placeholder) != PJ_SUCCESS) {
        *err = -4;
        goto fail;
    }
    *placeholder = leg->placeholder;
    return leg;

fail:
    release_converters(leg);
    pj_pool_release(leg->pool);
    free(leg);
    return NULL;
}

eng_leg *eng_source_create(int rate)
{
    if (rate != 8000 && rate != 16000)
        return NULL;
    eng_leg *leg = (eng_leg *)calloc(1, sizeof(eng_leg));
    if (!leg)
        return NULL;
    mix_leg_init(&leg->m, rate);
    leg->m.flags = MIX_LEG_SOURCE;
    leg->m.user = leg;
    leg->id = new_id();
    return leg;
}

void eng_leg_play(eng_leg *leg, const int16_t *pcm, int n, int loops)
{
    eng_room *r = leg->room;
    if (r) pthread_mutex_lock(&r->lock);
    leg->player.pcm = pcm;
    leg->player.n = n;
    leg->player.pos = 0;
    leg->player.loops = loops < 0 ? -1 : (loops > 0 ? loops - 1 : 0);
    STORE(leg->player.active, n > 0);
    if (r) pthread_mutex_unlock(&r->lock);
}

void eng_leg_stop(eng_leg *leg)
{
    eng_room *r = leg->room;
    if (r) pthread_mutex_lock(&r->lock);
    STORE(leg->player.active, 0);
    leg->player.pcm = NULL;
    if (r) pthread_mutex_unlock(&r->lock);
}

int eng_leg_playing(eng_leg *leg)
{
    return LOAD(leg->player.active);
}

int eng_leg_rate(eng_leg *leg)
{
    return leg->m.rate;
}

uint64_t eng_leg_id(eng_leg *leg)
{
    return leg->id;
}

uint64_t eng_room_id(eng_room *room)
{
    return room->id;
}

void eng_leg_free(eng_leg *leg)
{
    if (!leg)
        return;
    eng_leg_leave(leg);
    release_converters(leg);
    leg->player.active = 0;
    /* The bridge took a reference on the placeholder's group lock and dropped it when the
     * port was removed, before the stream was destroyed; only our pool is left to release. */
    if (leg->pool)
        pj_pool_release(leg->pool);
    free(leg);
}

void eng_leg_set_flags(eng_leg *leg, int flags)
{
    eng_room *r = leg->room;
    if (r) pthread_mutex_lock(&r->lock);
    leg->m.flags = flags;
    if (r) pthread_mutex_unlock(&r->lock);
}

void eng_leg_set_gain(eng_leg *leg, int gain_in, int gain_out)
{
    eng_room *r = leg->room;
    if (r) pthread_mutex_lock(&r->lock);
    leg->m.gain_in = gain_in;
    leg->m.gain_out = gain_out;
    if (r) pthread_mutex_unlock(&r->lock);
}

void eng_leg_get_stats(eng_leg *leg, eng_leg_stats *st)
{
    /* No lock: the tick publishes these with relaxed stores (a stats reader never waits for a
     * clock thread, whatever that thread is blocked on). */
    st->rate = leg->m.rate;
    st->rx_audio = LOAD(leg->rx_audio);
    st->rx_empty = LOAD(leg->rx_empty);
    st->tx = LOAD(leg->tx);
    st->errors = LOAD(leg->errors);
    st->energy = LOAD(leg->energy);
    st->talking = LOAD(leg->talking);
}

eng_room *eng_room_create(void)
{
    eng_room *r = (eng_room *)calloc(1, sizeof(eng_room));
    if (!r)
        return NULL;
    mix_room_init(&r->m);
    floor_init(&r->floor);
    r->rate = r->m.rate;
    r->id = new_id();
    pthread_mutex_init(&r->lock, NULL);
    pthread_mutex_lock(&g_lock);
    if (g_nclocks == 0) {
        pthread_mutex_unlock(&g_lock);
        pthread_mutex_destroy(&r->lock);
        free(r);
        return NULL;
    }
    /* The clock serving the fewest rooms takes it. */
    int best = 0;
    for (int i = 1; i < g_nclocks; i++)
        if (g_clocks[i].nrooms < g_clocks[best].nrooms)
            best = i;
    eng_clock *c = &g_clocks[best];
    pthread_mutex_lock(&c->lock);
    if (c->nrooms >= ENG_MAX_ROOMS_PER_CLOCK) {
        pthread_mutex_unlock(&c->lock);
        pthread_mutex_unlock(&g_lock);
        pthread_mutex_destroy(&r->lock);
        free(r);
        return NULL;
    }
    r->clock = best;
    c->rooms[c->nrooms] = r;
    STORE(c->nrooms, c->nrooms + 1);  /* eng_clock_get_stats reads it without a lock */
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&g_lock);
    return r;
}

void eng_room_destroy(eng_room *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&g_lock);
    eng_clock *c = &g_clocks[r->clock];
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < c->nrooms; i++) {
        if (c->rooms[i] == r) {
            c->rooms[i] = c->rooms[c->nrooms - 1];
            STORE(c->nrooms, c->nrooms - 1);
            break;
        }
    }
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&g_lock);
    /* No clock can reach the room now; a tap still on it is let go. */
    pthread_mutex_lock(&g_tap_lock);
    if (r->tap)
        r->tap->room = NULL;
    pthread_mutex_unlock(&g_tap_lock);
    for (int i = 0; i < r->m.nlegs; i++)
        ((eng_leg *)r->m.legs[i])->room = NULL;
    pthread_mutex_destroy(&r->lock);
    free(r);
}

int eng_room_add(eng_room *r, eng_leg *leg)
{
    if (leg->room == r)
        return 0;
    eng_leg_leave(leg);
    pthread_mutex_lock(&r->lock);
    int rc = mix_room_add(&r->m, &leg->m);
    if (rc == 0)
        leg->room = r;
    STORE(r->rate, r->m.rate);
    STORE(r->nlegs, r->m.nlegs);
    pthread_mutex_unlock(&r->lock);
    return rc;
}

void eng_leg_leave(eng_leg *leg)
{
    eng_room *r = leg->room;
    if (!r)
        return;
    pthread_mutex_lock(&r->lock);
    mix_room_remove(&r->m, &leg->m);
    floor_forget(&r->floor, &leg->m);
    leg->room = NULL;
    STORE(r->rate, r->m.rate);
    STORE(r->nlegs, r->m.nlegs);
    pthread_mutex_unlock(&r->lock);
}

/* The stats readers take no lock at all: the room and clock locks are held by a clock thread
 * for its whole tick, and g_lock by a thread that may be waiting for a clock lock. Each counter
 * is read atomically; a snapshot may mix values from two ticks, which stats can live with. */
void eng_room_get_stats(eng_room *r, eng_room_stats *st)
{
    st->rate = LOAD(r->rate);
    st->nlegs = LOAD(r->nlegs);
    st->ticks = LOAD(r->ticks);
    st->tick_ns_total = LOAD(r->tick_ns_total);
    st->tick_ns_max = LOAD(r->tick_ns_max);
}

void eng_clock_get_stats(eng_clock_stats *st)
{
    memset(st, 0, sizeof(*st));
    int n = __atomic_load_n(&g_nclocks, __ATOMIC_ACQUIRE);
    st->nclocks = n;
    for (int i = 0; i < n; i++) {
        eng_clock *c = &g_clocks[i];
        st->nrooms += LOAD(c->nrooms);
        st->ticks += LOAD(c->ticks);
        st->late += LOAD(c->late);
        st->resyncs += LOAD(c->resyncs);
        st->room_ticks += LOAD(c->room_ticks);
        st->room_tick_ns += LOAD(c->room_tick_ns);
        for (int b = 0; b < ENG_TICK_BUCKETS; b++)
            st->room_tick_hist[b] += LOAD(c->room_tick_hist[b]);
    }
}

int64_t eng_clock_stall_ns(void)
{
    int n = __atomic_load_n(&g_nclocks, __ATOMIC_ACQUIRE);
    if (n == 0)
        return 0;
    int64_t now = now_ns(), worst = 0;
    for (int i = 0; i < n; i++) {
        int64_t age = now - LOAD(g_clocks[i].last_tick_ns);
        if (age > worst)
            worst = age;
    }
    return worst;
}
