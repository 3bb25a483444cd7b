/* Transit jitter: see transit.h. */
#include "transit.h"

#include <string.h>

static atomic_uint g_pct = 99;  /* as --jb-wait-pct's default */

void transit_set_pct(unsigned pct)
{
    atomic_store(&g_pct, pct < 50 ? 50 : pct > 100 ? 100 : pct);
}

unsigned transit_pct(void)
{
    return atomic_load_explicit(&g_pct, memory_order_relaxed);
}

void transit_configure(transit *t, unsigned pt, unsigned rate)
{
    atomic_store(&t->want, rate ? ((pt & 0x7fu) << 24) | (rate & 0xffffffu) : 0u);
    atomic_fetch_add(&t->gen, 1);
}

/* The k-th smallest of a[0..n) (n > k), a reordered: Hoare's selection. */
static int32_t select_kth(int32_t *a, unsigned n, unsigned k)
{
    unsigned lo = 0, hi = n - 1;
    while (lo < hi) {
        const int32_t pivot = a[lo + (hi - lo) / 2];
        unsigned i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot)
                i++;
            while (a[j] > pivot)
                j--;
            if (i <= j) {
                const int32_t x = a[i];
                a[i] = a[j];
                a[j] = x;
                i++;
                if (j == 0)
                    break;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return a[k];
    }
    return a[k];
}

static void publish(transit *t, int newest, int64_t now_ns, int32_t o, int stats)
{
    int32_t base = t->base, quant = t->quant;
    const unsigned count = t->valid < TRANSIT_WINDOW ? t->valid : TRANSIT_WINDOW;
    if (stats && count) {
        int32_t copy[TRANSIT_WINDOW];
        for (unsigned i = 0; i < count; i++)  /* the newest `count` entries */
            copy[i] = t->ring[(t->n - count + i) % TRANSIT_WINDOW];
        base = copy[0];
        for (unsigned i = 1; i < count; i++)
            if (copy[i] < base)
                base = copy[i];
        quant = select_kth(copy, count, (count - 1) * transit_pct() / 100);
        /* just after a step, a quantile of a few: at least the spread from before it */
        if (count < TRANSIT_MIN && quant < base + t->spread)
            quant = base + t->spread;
    }
    const unsigned s = atomic_load_explicit(&t->seq, memory_order_relaxed);
    atomic_store_explicit(&t->seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    if (newest) {
        t->newest_ns = now_ns;
        t->newest_o = o;
        t->pub_newest_ts = t->newest_ts;
    }
    t->pub_anchor_ns = t->anchor_ns;
    t->pub_anchor_ts = t->anchor_ts;
    t->pub_rate = t->rate;
    t->base = base;
    t->quant = quant;
    t->packet = t->packet_w;
    t->count = count;
    t->known = t->n >= TRANSIT_MIN;
    t->pub_steps = t->steps;
    atomic_store_explicit(&t->seq, s + 2, memory_order_release);
}

static void restart(transit *t, uint32_t ssrc, uint32_t ts, int64_t now_ns)
{
    t->have = 1;
    t->n = t->since = t->valid = t->late_run = 0;
    t->ssrc = ssrc;
    t->anchor_ts = t->newest_ts = ts;
    t->anchor_ns = now_ns;
    t->last_o = 0;
    publish(t, 1, now_ns, 0, 0);
}

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

void transit_on_rtp(transit *t, const void *pkt, size_t size, int64_t now_ns)
{
    const unsigned gen = atomic_load_explicit(&t->gen, memory_order_acquire);
    if (gen != t->seen_gen) {
        const unsigned want = atomic_load(&t->want);
        t->seen_gen = gen;
        t->pt = want >> 24;
        t->rate = want & 0xffffffu;
        t->have = 0;
        t->n = t->valid = t->late_run = 0;
        publish(t, 0, 0, 0, 0);
    }
    const uint8_t *p = (const uint8_t *)pkt;
    if (!t->rate || size < 12 || (p[0] >> 6) != 2 || (p[1] & 0x7fu) != t->pt)
        return;
    const uint32_t ts = rd32(p + 4), ssrc = rd32(p + 8);
    if (!t->have || ssrc != t->ssrc || (uint32_t)(ts - t->anchor_ts + 0x40000000u) > 0x80000000u) {
        restart(t, ssrc, ts, now_ns);  /* a new sender, or hours of timestamps */
    }
    const int64_t since_ts = (int64_t)(int32_t)(ts - t->anchor_ts) * 1000000 / t->rate;
    int64_t o = (now_ns - t->anchor_ns) / 1000 - since_ts;
    if (t->n && (o - t->last_o > TRANSIT_JUMP_US || t->last_o - o > TRANSIT_JUMP_US)) {
        restart(t, ssrc, ts, now_ns);
        o = 0;
    }
    t->last_o = o;
    const uint16_t seq = (uint16_t)(p[2] << 8 | p[3]);
    const uint32_t step = ts - t->last_ts;
    int packet = 0;
    if (t->n && seq == (uint16_t)(t->last_seq + 1) && step && step <= t->rate / 10)
        packet = (int)((int64_t)step * 1000000 / t->rate);
    t->last_seq = seq;
    t->last_ts = ts;
    /* a delay step: the window starts again from the packets that show it (against a
     * quantile of TRANSIT_MIN packets or more: jitter that starts with the step is no second
     * step against the few since it) */
    if (t->known && t->valid >= TRANSIT_MIN && o > (int64_t)t->quant + TRANSIT_STEP_US) {
        if (++t->late_run >= TRANSIT_STEP_RUN) {
            t->spread = t->quant - t->base;
            t->valid = TRANSIT_STEP_RUN - 1;
            t->late_run = 0;
            t->steps++;
        }
    } else {
        t->late_run = 0;
    }
    t->ring[t->n % TRANSIT_WINDOW] = (int32_t)o;
    t->n++;
    if (t->valid < TRANSIT_WINDOW)
        t->valid++;
    const int newest = (int32_t)(ts - t->newest_ts) >= 0;
    if (newest)
        t->newest_ts = ts;
    const int stats = t->n >= TRANSIT_MIN
        && (t->valid <= TRANSIT_MIN || ++t->since >= TRANSIT_EVERY);
    if (stats)
        t->since = 0;
    if (packet)
        t->packet_w = packet;  /* published with the next */
    if (newest || stats)
        publish(t, newest, now_ns, (int32_t)o, stats);
}

int transit_read(transit *t, transit_view *v)
{
    for (int tries = 0; tries < 8; tries++) {
        const unsigned s1 = atomic_load_explicit(&t->seq, memory_order_acquire);
        if (s1 & 1)
            continue;
        const int64_t newest_ns = t->newest_ns;
        const int32_t o = t->newest_o, base = t->base, quant = t->quant;
        const unsigned count = t->count, known = t->known, steps = t->pub_steps;
        const int32_t packet = t->packet;
        const uint32_t newest_ts = t->pub_newest_ts, anchor_ts = t->pub_anchor_ts;
        const uint32_t rate = t->pub_rate;
        const int64_t anchor_ns = t->pub_anchor_ns;
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&t->seq, memory_order_relaxed) != s1)
            continue;
        if (!known || !rate)
            return 0;
        v->newest_ns = newest_ns;
        v->newest_us = o - base;
        v->target_us = quant - base;
        v->count = count;
        v->steps = steps;
        v->packet_us = packet;
        v->newest_ts = newest_ts;
        v->anchor_ts = anchor_ts;
        v->anchor_ns = anchor_ns;
        v->rate = rate;
        v->base_us = base;
        return 1;
    }
    return 0;  /* the writer is busy: no view this time */
}
