/* Transit jitter of a call's incoming RTP (issue 18): how late each packet came against the
 * earliest any packet of the window came, in its own timestamp's time. The jitter buffer's
 * playout point follows a quantile of it (legs.c), so a leg waits for, say, 90 % of its packets
 * and conceals the rest in place, instead of retiming the stream at every late packet.
 *
 * One writer (the call's RTP receive thread, rtpguard.c) feeds every packet; any thread reads a
 * snapshot through a seqlock. No lock, no allocation, no pjproject: unit-tested offline
 * (mixer.pyx). */
#ifndef SIPCONF_TRANSIT_H
#define SIPCONF_TRANSIT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define TRANSIT_WINDOW 256   /* packets (about 5 s of 20 ms packets) */
#define TRANSIT_EVERY 16     /* packets between two quantile updates */
#define TRANSIT_MIN 50       /* packets in the window before a snapshot is given */
#define TRANSIT_JUMP_US 2000000  /* a step this big (a new sender, a clock jump) starts again */
/* A delay step (a route change, a sender's hiccup: every packet later for good): this many
 * packets in a row later than the quantile by this much. The window's earliest then forgot the
 * step for ~5 s (the playout point read ~175 ms against 60 after a 150 ms step, and the node
 * dropped audio to shorten it: 3-4 drops); now it starts again from those packets, its
 * quantile at least the spread before the step until TRANSIT_MIN of them came. */
#define TRANSIT_STEP_RUN 5
#define TRANSIT_STEP_US 20000

typedef struct {
    /* what to measure: set by any thread (transit_configure), taken by the writer */
    atomic_uint want;        /* (pt << 24) | clock rate; 0: nothing */
    atomic_uint gen;         /* bumped by each configure */
    /* the writer's own */
    unsigned seen_gen, pt, rate, n, since, have;
    unsigned valid;          /* ring entries since the start or a step (at most the window) */
    unsigned late_run;       /* packets in a row a step later than the quantile */
    int32_t spread;          /* after a step: the quantile's lateness before it */
    unsigned steps;          /* delay steps the window started again from */
    uint32_t ssrc, anchor_ts, newest_ts, last_ts;
    uint16_t last_seq;
    int32_t packet_w;        /* the audio in a packet, us (two in sequence apart) */
    int64_t anchor_ns, last_o;
    int32_t ring[TRANSIT_WINDOW];   /* each packet's arrival less its timestamp, us */
    /* published to readers (seqlock) */
    atomic_uint seq;
    int64_t newest_ns;       /* when the packet with the highest timestamp arrived */
    int32_t newest_o, base, quant;  /* its arrival less timestamp; the window's min, quantile */
    uint32_t pub_newest_ts, pub_anchor_ts, pub_rate;  /* as published (times from the anchor) */
    int64_t pub_anchor_ns;
    int32_t packet;          /* packet_w as published */
    unsigned count;          /* packets in the window */
    unsigned known;          /* a snapshot is given (TRANSIT_MIN packets since the start) */
    unsigned pub_steps;
} transit;

typedef struct {
    int64_t newest_ns;       /* CLOCK_MONOTONIC arrival of the newest packet */
    int32_t newest_us;       /* how late that packet came (its jitter), us */
    int32_t target_us;       /* the quantile's lateness: packets up to it are waited for */
    int32_t packet_us;       /* the audio one packet carries */
    unsigned count;
    unsigned steps;          /* delay steps so far */
    uint32_t newest_ts;      /* the newest packet's RTP timestamp */
    /* for transit_earliest_ns: a timestamp's earliest arrival */
    uint32_t anchor_ts, rate;
    int64_t anchor_ns;
    int32_t base_us;
} transit_view;

/* When the packet with RTP timestamp `ts` could come at the earliest (the window's least
 * lateness), CLOCK_MONOTONIC ns: a playout point is how long after that it is played. */
static inline int64_t transit_earliest_ns(const transit_view *v, uint32_t ts)
{
    const int64_t since_us = (int64_t)(int32_t)(ts - v->anchor_ts) * 1000000 / (int64_t)v->rate;
    return v->anchor_ns + (since_us + v->base_us) * 1000;
}

/* Node-wide: the share of packets the playout point waits for, percent (50-100). */
void transit_set_pct(unsigned pct);
unsigned transit_pct(void);

/* Measure payload type `pt` at RTP clock `rate` (0: stop); any thread. */
void transit_configure(transit *t, unsigned pt, unsigned rate);

/* An RTP packet arrived at `now_ns` (CLOCK_MONOTONIC); the writer only. */
void transit_on_rtp(transit *t, const void *pkt, size_t size, int64_t now_ns);

/* 1 and `v` when the window holds TRANSIT_MIN packets; else 0. Any thread. */
int transit_read(transit *t, transit_view *v);

#endif
