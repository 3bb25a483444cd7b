/* pjlog: see pjlog.h.
 *
 * The ring is Vyukov's bounded queue: each slot carries a sequence number saying whose turn it
 * is. A producer claims position p with one compare-and-swap on the head when slot p's sequence
 * is p, writes the line, then publishes it by setting the sequence to p + 1; the consumer takes
 * position p when the sequence is p + 1 and hands the slot back to the next lap by setting it
 * to p + PJLOG_SLOTS. No thread ever waits on another: a producer that finds its slot not yet
 * drained drops its line, and the consumer stops at a slot that is claimed but not yet written.
 */
#include "pjlog.h"

#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include <pjlib.h>

_Static_assert((PJLOG_SLOTS & (PJLOG_SLOTS - 1)) == 0, "PJLOG_SLOTS must be a power of two");

typedef struct pjlog_slot {
    atomic_size_t seq;
    int level;
    int len;
    char text[PJLOG_TEXT_MAX];
} pjlog_slot;

static pjlog_slot g_ring[PJLOG_SLOTS];
static atomic_size_t g_head;          /* next position a producer claims */
static size_t g_tail;                 /* next position the consumer takes (under g_draining) */
static atomic_int g_draining;         /* 1 while a thread is in pjlog_pop */
static atomic_uint_fast64_t g_dropped;
static int g_ready;                   /* slots numbered (only pjlog_install touches it) */

/* pjlib's log function: any thread, any locks held; copies and returns, never blocks. */
static void pjlog_write(int level, const char *data, int len)
{
    size_t pos = atomic_load_explicit(&g_head, memory_order_relaxed);
    pjlog_slot *s;
    for (;;) {
        s = &g_ring[pos & (PJLOG_SLOTS - 1)];
        size_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
        ptrdiff_t dif = (ptrdiff_t)(seq - pos);
        if (dif == 0) {
            /* A failed CAS reloads pos: another producer took it, try the next one. */
            if (atomic_compare_exchange_weak_explicit(&g_head, &pos, pos + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed))
                break;
        } else if (dif < 0) {
            /* The slot still holds a line from the previous lap: the ring is full. */
            atomic_fetch_add_explicit(&g_dropped, 1, memory_order_relaxed);
            return;
        } else {
            pos = atomic_load_explicit(&g_head, memory_order_relaxed);
        }
    }
    if (len < 0)
        len = 0;
    if (len > PJLOG_TEXT_MAX)
        len = PJLOG_TEXT_MAX;  /* truncated; pjlib never makes lines this long anyway */
    memcpy(s->text, data, (size_t)len);
    s->len = len;
    s->level = level;
    atomic_store_explicit(&s->seq, pos + 1, memory_order_release);
}

void pjlog_install(int level, unsigned decor)
{
    /* Number the slots once, before pjlib can call pjlog_write: the first install runs before
     * the function is handed to pjlib, and later installs leave a live ring alone. */
    if (!g_ready) {
        for (size_t i = 0; i < PJLOG_SLOTS; i++)
            atomic_init(&g_ring[i].seq, i);
        g_ready = 1;
    }
    pj_log_set_level(level);
    pj_log_set_decor(decor);
    pj_log_set_log_func(&pjlog_write);
}

int pjlog_pop(int *level, char *buf, int cap)
{
    if (!g_ready)
        return -1;
    /* One consumer at a time, by try-lock: a second drainer returns at once instead of
     * waiting (the lines are not lost, the first drainer takes them). */
    if (atomic_exchange_explicit(&g_draining, 1, memory_order_acquire))
        return -2;
    size_t pos = g_tail;
    pjlog_slot *s = &g_ring[pos & (PJLOG_SLOTS - 1)];
    size_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
    int n = -1;
    if (seq == pos + 1) {
        n = s->len < cap ? s->len : cap;
        if (n < 0)
            n = 0;
        memcpy(buf, s->text, (size_t)n);
        *level = s->level;
        atomic_store_explicit(&s->seq, pos + PJLOG_SLOTS, memory_order_release);
        g_tail = pos + 1;
    }
    atomic_store_explicit(&g_draining, 0, memory_order_release);
    return n;
}

uint64_t pjlog_dropped(void)
{
    return (uint64_t)atomic_load_explicit(&g_dropped, memory_order_relaxed);
}
