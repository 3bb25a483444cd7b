/* ring.h: the int16 rings taps.c and pipes.c keep (the caller holds the ring's lock). */
#ifndef SIPCONF_RING_H
#define SIPCONF_RING_H

#include <stdint.h>

/* n samples (x NULL: silence) into a ring of cap; past a full ring the newest are dropped
 * (counted in *dropped). */
static inline void ring_put(int16_t *buf, int cap, int head, int *count, const int16_t *x,
                            int n, uint64_t *dropped)
{
    for (int i = 0; i < n; i++) {
        if (*count == cap) {
            (*dropped)++;
            continue;
        }
        buf[(head + (*count)++) % cap] = x ? x[i] : 0;
    }
}

/* The same, but a full ring makes room by dropping its oldest samples (live audio: what is
 * freshest matters). */
static inline void ring_put_evict(int16_t *buf, int cap, int *head, int *count,
                                  const int16_t *x, int n, uint64_t *dropped)
{
    int over = *count + n - cap;
    if (over > 0) {
        if (over > *count)
            over = *count;
        *head = (*head + over) % cap;
        *count -= over;
        *dropped += (uint64_t)over;
    }
    if (n > cap) {  /* more than the ring holds: only its last cap samples */
        *dropped += (uint64_t)(n - cap);
        if (x)
            x += n - cap;
        n = cap;
    }
    ring_put(buf, cap, *head, count, x, n, dropped);
}

/* Up to max of the oldest samples out of a ring; returns how many. */
static inline int ring_take(const int16_t *buf, int cap, int *head, int *count, int16_t *out,
                            int max)
{
    int n = *count < max ? *count : max;
    for (int i = 0; i < n; i++)
        out[i] = buf[(*head + i) % cap];
    *head = (*head + n) % cap;
    *count -= n;
    return n;
}

#endif
