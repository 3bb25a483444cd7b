/* events.c: what the ticks detect (ENG_EV_DIGIT from a leg's DTMF detector, ENG_EV_FLOOR from
 * a room's floor detector), in a bounded ring the control plane drains every few milliseconds.
 *
 * Locking: g_ev_lock guards the ring. events_push is called by clock threads with a room lock
 * held, so g_ev_lock is a leaf: nothing else is locked under it, and it is held only for a
 * copy. A full ring drops the event and counts it (reported by the next eng_poll_events).
 */
#include "engine_int.h"

static pthread_mutex_t g_ev_lock = PTHREAD_MUTEX_INITIALIZER;
static eng_event g_events[ENG_EVENT_QUEUE];
static int g_ev_head, g_ev_count;
static uint64_t g_ev_dropped;

void events_push(int type, char digit, uint64_t leg_id, uint64_t room_id)
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
