/* clock.c: the clock threads. Each ticks every room it serves (rooms_tick) every 20 ms, each
 * room on its own schedule (absolute deadlines on CLOCK_MONOTONIC; rooms.c aligns a room's to
 * its talker's packets); it keeps its counters (ticks, late starts,
 * resyncs, a histogram of room-tick times) and a heartbeat, the time its last tick completed.
 * Also the clock registry: rooms are placed on the clock serving the fewest, and the
 * process-unique ids of legs and rooms are drawn here, under the registry lock.
 *
 * Locking: g_lock guards g_clocks/g_nclocks changes and g_next_id; a clock's lock guards its
 * room list and is held by its thread for the whole tick (so g_lock > clock lock > room lock).
 * g_nclocks is published with a release store; eng_clock_get_stats and eng_clock_stall_ns take
 * no lock (acquire load of g_nclocks, relaxed loads of the counters).
 */
#include "engine_int.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <pjlib.h>

#define TICK_NS ENG_TICK_NS
#define LATE_NS (10 * 1000000LL)
#define RESYNC_NS (100 * 1000000LL)
#define DUE_SLACK_NS (200 * 1000LL)  /* a room due this soon ticks now */

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

static eng_clock g_clocks[ENG_MAX_CLOCKS];
static int g_nclocks;  /* written under g_lock, read atomically anywhere */
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t g_next_id;  /* guarded by g_lock */

uint64_t clock_new_id(void)
{
    pthread_mutex_lock(&g_lock);
    uint64_t id = ++g_next_id;
    pthread_mutex_unlock(&g_lock);
    return id;
}

static void clock_tick_observe(eng_clock *c, uint64_t dt)
{
    int i = 0;
    while (i < ENG_TICK_BUCKETS - 1 && dt > eng_tick_bucket_ns[i])
        i++;
    BUMP(c->room_tick_hist[i], 1);
    BUMP(c->room_ticks, 1);
    BUMP(c->room_tick_ns, dt);
}

static void clock_sleep_until(int64_t t)
{
    struct timespec ts = { (time_t)(t / 1000000000LL), (long)(t % 1000000000LL) };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

/* Each room ticks on its own schedule (r->next_ns, 20 ms apart; a new room joins the clock's
 * period boundaries, alignment moves it, rooms.c); the thread sleeps until the earliest one
 * due, ticks every room due, and counts the clock's own 20 ms periods (ticks, late, resyncs). */
static void *clock_main(void *arg)
{
    eng_clock *c = (eng_clock *)arg;
    pj_thread_t *self = NULL;
    char name[16];
    snprintf(name, sizeof(name), "mixclk%d", (int)(c - g_clocks));
    memset(c->desc, 0, sizeof(c->desc));
    pj_thread_register(name, c->desc, &self);

    int64_t base = now_ns() + TICK_NS;  /* the clock's next period boundary */
    while (c->running) {
        int64_t due = base;
        pthread_mutex_lock(&c->lock);
        for (int i = 0; i < c->nrooms; i++) {
            eng_room *r = c->rooms[i];
            if (r->next_ns == 0)
                r->next_ns = base;
            if (r->next_ns < due)
                due = r->next_ns;
        }
        pthread_mutex_unlock(&c->lock);
        clock_sleep_until(due);
        int64_t start = now_ns();
        pthread_mutex_lock(&c->lock);
        if (start >= base) {
            if (start - base > LATE_NS)
                BUMP(c->late, 1);
            BUMP(c->ticks, 1);
            base += TICK_NS;
            if (start - base > RESYNC_NS) {
                /* Far behind (the machine was stalled): skip ahead instead of bursting. */
                base = start + TICK_NS;
                BUMP(c->resyncs, 1);
            }
        }
        for (int i = 0; i < c->nrooms; i++) {
            eng_room *r = c->rooms[i];
            if (r->next_ns > now_ns() + DUE_SLACK_NS)
                continue;
            clock_tick_observe(c, rooms_tick(r));  /* may move r->next_ns (alignment) */
            r->next_ns += TICK_NS;
            int64_t now = now_ns();
            if (now - r->next_ns > RESYNC_NS)
                r->next_ns = now + TICK_NS;
        }
        pthread_mutex_unlock(&c->lock);
        STORE(c->last_tick_ns, now_ns());  /* the heartbeat eng_clock_stall_ns reads */
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

int clock_add_room(eng_room *r)
{
    pthread_mutex_lock(&g_lock);
    if (g_nclocks == 0) {
        pthread_mutex_unlock(&g_lock);
        return -1;
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
        return -1;
    }
    r->clock = best;
    c->rooms[c->nrooms] = r;
    STORE(c->nrooms, c->nrooms + 1);  /* eng_clock_get_stats reads it without a lock */
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&g_lock);
    return 0;
}

void clock_remove_room(eng_room *r)
{
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
}

/* The stats readers take no lock at all: a clock's lock is held by its thread for the whole
 * tick, and g_lock by a thread that may be waiting for a clock lock. Each counter is read
 * atomically; a snapshot may mix values from two ticks, which stats can live with. */
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
