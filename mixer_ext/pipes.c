/* pipes.c: a leg's audio to and from another thread (a WebSocket stream, an AI agent).
 *
 * A pipe on a call leg (<Stream>) carries up what the caller says (ENG_PIPE_IN: its decoded
 * frame, silence when none) and what it hears (ENG_PIPE_OUT: its N-1 mix and private sounds),
 * and down audio for that caller alone, added to what it hears. An agent leg
 * (eng_agent_create) is a room member with no stream: its voice is its pipe's down ring and
 * what it hears goes up its pipe. The tick takes exactly one frame of down audio per 20 ms, so
 * whatever arrives in a burst plays at real time; eng_pipe_clear drops what has not played
 * yet (barge-in) and eng_pipe_played counts what has, for checkpoints. Up rings that the
 * reader does not drain in time drop their oldest samples; a down ring past its size drops its
 * oldest too (both counted).
 *
 * Locking: the pipe's lock guards its rings and counters; the tick takes it under the room
 * lock (a leaf), readers and writers alone (the Python side with the GIL released). The link
 * (leg->pipe, p->leg) is guarded by g_pipe_lock, taken before the leg's room lock (which the
 * tick reads leg->pipe under), so a pipe may be freed from any thread and a leg freed with its
 * pipe still attached leaves the pipe unlinked, not dangling.
 */
#include "engine_int.h"
#include "ring.h"

#include <stdlib.h>
#include <string.h>

struct eng_pipe {
    pthread_mutex_t lock;
    int rate, want;
    int cap_up, cap_down;
    int16_t *up[2];            /* [0] ENG_PIPE_IN, [1] ENG_PIPE_OUT */
    int up_head[2], up_count[2];
    int16_t *down;
    int down_head, down_count;
    uint64_t played, dropped_up, dropped_down;
    eng_leg *leg;
};

static pthread_mutex_t g_pipe_lock = PTHREAD_MUTEX_INITIALIZER;

eng_pipe *eng_pipe_create(int rate, int want, int seconds_up, int seconds_down)
{
    if ((rate != 8000 && rate != 16000) || seconds_up < 1 || seconds_down < 1)
        return NULL;
    eng_pipe *p = (eng_pipe *)calloc(1, sizeof(eng_pipe));
    if (!p)
        return NULL;
    pthread_mutex_init(&p->lock, NULL);
    p->rate = rate;
    p->want = want;
    p->cap_up = rate * seconds_up;
    p->cap_down = rate * seconds_down;
    p->down = (int16_t *)malloc((size_t)p->cap_down * sizeof(int16_t));
    for (int k = 0; k < 2; k++)
        if (want & (1 << k))
            p->up[k] = (int16_t *)malloc((size_t)p->cap_up * sizeof(int16_t));
    if (!p->down || ((want & ENG_PIPE_IN) && !p->up[0]) || ((want & ENG_PIPE_OUT) && !p->up[1])) {
        eng_pipe_free(p);
        return NULL;
    }
    return p;
}

static void pipes_set_leg(eng_leg *leg, eng_pipe *p)
{
    eng_room *r = leg->room;
    if (r) pthread_mutex_lock(&r->lock);
    leg->pipe = p;
    if (r) pthread_mutex_unlock(&r->lock);
}

int eng_pipe_attach(eng_pipe *p, eng_leg *leg)
{
    int rc = -1;
    pthread_mutex_lock(&g_pipe_lock);
    if (!p->leg && !leg->pipe && leg->m.rate == p->rate) {
        p->leg = leg;
        pipes_set_leg(leg, p);
        rc = 0;
    }
    pthread_mutex_unlock(&g_pipe_lock);
    return rc;
}

void eng_pipe_detach(eng_pipe *p)
{
    pthread_mutex_lock(&g_pipe_lock);
    if (p->leg) {
        pipes_set_leg(p->leg, NULL);
        p->leg = NULL;
    }
    pthread_mutex_unlock(&g_pipe_lock);
}

void pipes_leg_gone(eng_leg *leg)
{
    pthread_mutex_lock(&g_pipe_lock);
    if (leg->pipe) {
        leg->pipe->leg = NULL;
        leg->pipe = NULL;  /* the leg is in no room: no tick reads it */
    }
    pthread_mutex_unlock(&g_pipe_lock);
}

void eng_pipe_free(eng_pipe *p)
{
    if (!p)
        return;
    eng_pipe_detach(p);
    pthread_mutex_destroy(&p->lock);
    free(p->up[0]);
    free(p->up[1]);
    free(p->down);
    free(p);
}

int eng_pipe_read(eng_pipe *p, int track, int16_t *out, int max)
{
    int k = track == ENG_PIPE_OUT ? 1 : 0;
    if (!p->up[k])
        return 0;
    pthread_mutex_lock(&p->lock);
    int n = ring_take(p->up[k], p->cap_up, &p->up_head[k], &p->up_count[k], out, max);
    pthread_mutex_unlock(&p->lock);
    return n;
}

void eng_pipe_write(eng_pipe *p, const int16_t *pcm, int n)
{
    pthread_mutex_lock(&p->lock);
    ring_put_evict(p->down, p->cap_down, &p->down_head, &p->down_count, pcm, n,
                   &p->dropped_down);
    pthread_mutex_unlock(&p->lock);
}

int eng_pipe_clear(eng_pipe *p)
{
    pthread_mutex_lock(&p->lock);
    int n = p->down_count;
    p->down_count = 0;
    p->down_head = 0;
    pthread_mutex_unlock(&p->lock);
    return n;
}

void eng_pipe_get_stats(eng_pipe *p, eng_pipe_stats *st)
{
    pthread_mutex_lock(&p->lock);
    st->played = p->played;
    st->pending = (uint64_t)p->down_count;
    st->dropped_up = p->dropped_up;
    st->dropped_down = p->dropped_down;
    pthread_mutex_unlock(&p->lock);
}

/* The tick (under the room lock): one frame of what the leg says or hears, up. */
void pipes_up(eng_pipe *p, int track, const int16_t *pcm, int n)
{
    int k = track == ENG_PIPE_OUT ? 1 : 0;
    if (!p->up[k])
        return;
    pthread_mutex_lock(&p->lock);
    ring_put_evict(p->up[k], p->cap_up, &p->up_head[k], &p->up_count[k], pcm, n,
                   &p->dropped_up);
    pthread_mutex_unlock(&p->lock);
}

/* The tick: one frame of down audio into dst (added when add, else copied, silence past what
 * there is); 1 if there was any. */
int pipes_down(eng_pipe *p, int16_t *dst, int n, int add)
{
    int16_t frame[MIX_WB_SPF];
    if (n > MIX_WB_SPF)
        n = MIX_WB_SPF;
    pthread_mutex_lock(&p->lock);
    int got = ring_take(p->down, p->cap_down, &p->down_head, &p->down_count, frame, n);
    p->played += (uint64_t)got;
    pthread_mutex_unlock(&p->lock);
    if (add) {
        pcm_add_sat(dst, frame, got);
    } else {
        memcpy(dst, frame, (size_t)got * sizeof(int16_t));
        memset(dst + got, 0, (size_t)(n - got) * sizeof(int16_t));
    }
    return got > 0;
}

eng_leg *eng_agent_create(int rate)
{
    eng_leg *leg = legs_new_bare(rate);
    if (leg)
        leg->agent = 1;
    return leg;
}
