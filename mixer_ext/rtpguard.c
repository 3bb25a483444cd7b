/* Strict media: see rtpguard.h.
 *
 * Threads. attach2/detach/destroy run on the SIP thread while the transport below delivers no
 * packet to us (after detach the UDP transport has no callback; attach2 of the transport below
 * takes its ioqueue key locks, which orders our writes before the first packet). The RTP
 * receive callback runs on one ioqueue thread at a time (the UDP transport has one pending read
 * per socket) and alone writes the RTP state; likewise the RTCP callback and the RTCP state.
 * What one side publishes for another (the latched source, the learned RTCP destination) goes
 * through a single-writer seqlock: readers retry, nobody waits, nothing is locked.
 *
 * Long (~500 lines) because a pjmedia transport adapter must forward every transport op; the
 * decisions themselves are rtp_admit and guard_rtcp_cb. */
#define _GNU_SOURCE
#include "rtpguard.h"

#include <pjsua-lib/pjsua.h>

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sched.h>
#include <time.h>

#define THIS_FILE "rtpguard.c"

static atomic_ulong g_counts[RTPGUARD_COUNTERS];
static atomic_uint g_relatch_ms = 5000;
static atomic_uint g_learn = 3;

void rtpguard_configure(unsigned relatch_ms, unsigned learn)
{
    atomic_store(&g_relatch_ms, relatch_ms);
    atomic_store(&g_learn, learn ? learn : 1);
}

unsigned long rtpguard_count(int which)
{
    if (which < 0 || which >= RTPGUARD_COUNTERS)
        return 0;
    return atomic_load_explicit(&g_counts[which], memory_order_relaxed);
}

static void count(int which)
{
    atomic_fetch_add_explicit(&g_counts[which], 1, memory_order_relaxed);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* An address published by one thread for others (single writer). */
struct published {
    atomic_uint seq;        /* odd while being written */
    pj_sockaddr addr;
    unsigned gen;           /* the RTP latch it belongs to (see rtp_gen) */
    int valid;
};

static void publish(struct published *p, const pj_sockaddr *addr, unsigned gen, int valid)
{
    unsigned s = atomic_load_explicit(&p->seq, memory_order_relaxed);
    atomic_store_explicit(&p->seq, s + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    if (addr)
        pj_sockaddr_cp(&p->addr, addr);
    p->gen = gen;
    p->valid = valid;
    atomic_store_explicit(&p->seq, s + 2, memory_order_release);
}

static void read_published(struct published *p, pj_sockaddr *addr, unsigned *gen, int *valid)
{
    unsigned spins = 0;
    for (;;) {
        unsigned s1 = atomic_load_explicit(&p->seq, memory_order_acquire);
        if (s1 & 1) {
            if (++spins > 64)
                sched_yield();  /* the writer was preempted inside its few stores */
            continue;
        }
        memcpy(addr, &p->addr, sizeof(*addr));
        *gen = p->gen;
        *valid = p->valid;
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&p->seq, memory_order_relaxed) == s1)
            return;
    }
}

struct rtpguard {
    pjmedia_transport base;
    pj_pool_t *pool;
    pjmedia_transport *slave;
    pj_bool_t del_base;

    /* The stream's callbacks (set by attach2, cleared by detach). */
    void *stream_user_data;
    void (*stream_rtp_cb)(void *, void *, pj_ssize_t);
    void (*stream_rtp_cb2)(pjmedia_tp_cb_param *);
    void (*stream_rtcp_cb)(void *, void *, pj_ssize_t);

    /* From the offer/answer (attach2). */
    pj_sockaddr sdp_rtp, sdp_rtcp;
    int mux;

    /* RTP state: written by the RTP callback only (and attach2). */
    int latched;
    pj_sockaddr peer;           /* the latched source */
    pj_sockaddr prev_peer;      /* the one latched before the last attach, if any */
    int has_prev;
    pj_uint32_t ssrc;           /* last SSRC from the latched source */
    int64_t last_ms;            /* when the latched source last sent */
    pj_sockaddr cand;           /* learning: the source being counted */
    pj_uint32_t cand_ssrc;
    pj_uint16_t cand_seq;
    unsigned cand_n;
    unsigned rtp_gen;           /* bumped on every latch */
    int logged_rtp;             /* one log line per attach about dropped RTP */

    /* RTCP state: written by the RTCP callback only (and attach2). */
    int logged_rtcp;

    struct published rtp_pub;   /* the latched RTP source (by the RTP callback) */
    struct published rtcp_pub;  /* the RTCP destination learned (by the RTCP callback) */

    /* Outgoing RTP, for shared encoding (rtpguard_send_shared): written only by the thread
     * that drives the stream's sending (its room's clock thread; see rtpguard.h). */
    unsigned tx_seen;           /* the stream's own packets seen */
    pj_uint8_t tx_pt;           /* its audio payload type */
    pj_uint16_t tx_seq;         /* last sequence number and timestamp sent, as sent */
    pj_uint32_t tx_ts, tx_ssrc;
    pj_uint32_t tx_step;        /* timestamp units between consecutive audio packets */
    pj_uint16_t seq_off;        /* added to the stream's own numbers since a shared run */
    pj_uint32_t ts_off;
    int shared_run;             /* shared packets sent since the stream's last own one */
    int paused;                 /* a frame was skipped (DTX) since the last packet: mark the next */
    pj_uint32_t shared_pkts, shared_octets;  /* added to the counts in the stream's SRs */

    int64_t last_rx_ns;         /* when the latest admitted RTP packet arrived (atomic) */
    transit transit;            /* its transit jitter (written by the RTP callback) */
};

#define RTPGUARD_MAX_PKT 1500

static inline pj_uint32_t rd32(const pj_uint8_t *p)
{
    return ((pj_uint32_t)p[0] << 24) | ((pj_uint32_t)p[1] << 16) | ((pj_uint32_t)p[2] << 8) | p[3];
}

static inline void wr32(pj_uint8_t *p, pj_uint32_t v)
{
    p[0] = (pj_uint8_t)(v >> 24);
    p[1] = (pj_uint8_t)(v >> 16);
    p[2] = (pj_uint8_t)(v >> 8);
    p[3] = (pj_uint8_t)v;
}

static int same_ip(const pj_sockaddr *a, const pj_sockaddr *b)
{
    if (a->addr.sa_family != b->addr.sa_family)
        return 0;
    return memcmp(pj_sockaddr_get_addr(a), pj_sockaddr_get_addr(b),
                  pj_sockaddr_get_addr_len(a)) == 0;
}

static int same_addr(const pj_sockaddr *a, const pj_sockaddr *b)
{
    return same_ip(a, b) && pj_sockaddr_get_port(a) == pj_sockaddr_get_port(b);
}

static void log_drop(struct rtpguard *g, const char *what, const pj_sockaddr *src,
                     const pj_sockaddr *want, int *logged)
{
    char a[PJ_INET6_ADDRSTRLEN + 10], b[PJ_INET6_ADDRSTRLEN + 10];
    if (*logged)
        return;
    *logged = 1;
    PJ_LOG(3, (g->base.name, "dropping %s from %s: not the call's source (%s); further drops "
               "only counted", what, pj_sockaddr_print(src, a, sizeof(a), 3),
               want ? pj_sockaddr_print(want, b, sizeof(b), 3) : "not learned yet"));
}

static void latch(struct rtpguard *g, const pj_sockaddr *src, pj_uint32_t ssrc, int64_t now)
{
    pj_sockaddr_cp(&g->peer, src);
    g->ssrc = ssrc;
    g->last_ms = now;
    g->latched = 1;
    g->cand_n = 0;
    g->rtp_gen++;
    publish(&g->rtp_pub, src, g->rtp_gen, 1);
}

/* Whether an RTP packet from `src` is the call's; *sw when the transport below should send
 * to `src` from now on. */
static int rtp_admit(struct rtpguard *g, const pj_sockaddr *src, const void *pkt,
                     pj_ssize_t size, pj_bool_t *sw)
{
    int64_t now = now_ms();
    const pjmedia_rtp_hdr *hdr = (const pjmedia_rtp_hdr *)pkt;
    pj_uint32_t ssrc;
    pj_uint16_t seq;
    char a[PJ_INET6_ADDRSTRLEN + 10];

    *sw = PJ_FALSE;
    if (g->latched && same_addr(src, &g->peer)) {
        g->last_ms = now;
        if (size >= (pj_ssize_t)sizeof(pjmedia_rtp_hdr))
            g->ssrc = pj_ntohl(hdr->ssrc);
        return 1;
    }
    if (size < (pj_ssize_t)sizeof(pjmedia_rtp_hdr) || (hdr->v != 2)) {
        count(RTPGUARD_FOREIGN_RTP);
        return 0;
    }
    ssrc = pj_ntohl(hdr->ssrc);
    seq = pj_ntohs(hdr->seq);

    if (g->latched) {
        unsigned relatch = atomic_load_explicit(&g_relatch_ms, memory_order_relaxed);
        if (ssrc == g->ssrc && now - g->last_ms >= (int64_t)relatch) {
            PJ_LOG(3, (g->base.name, "RTP source changed to %s (same SSRC, the old source "
                       "silent %lld ms)", pj_sockaddr_print(src, a, sizeof(a), 3),
                       (long long)(now - g->last_ms)));
            latch(g, src, ssrc, now);
            count(RTPGUARD_RELATCHED);
            *sw = PJ_TRUE;
            return 1;
        }
        count(RTPGUARD_FOREIGN_RTP);
        log_drop(g, "RTP", src, &g->peer, &g->logged_rtp);
        return 0;
    }

    /* Learning. The SDP's address, or the source latched before a re-INVITE: at once. */
    if (same_addr(src, &g->sdp_rtp) || (g->has_prev && same_addr(src, &g->prev_peer))) {
        latch(g, src, ssrc, now);
        *sw = !same_addr(src, &g->sdp_rtp);
        return 1;
    }
    /* Any other: after `learn` packets in sequence, nobody else in between. */
    if (g->cand_n && same_addr(src, &g->cand) && ssrc == g->cand_ssrc &&
        seq == (pj_uint16_t)(g->cand_seq + 1))
    {
        g->cand_seq = seq;
        g->cand_n++;
    } else {
        if (g->cand_n)
            count(RTPGUARD_FOREIGN_RTP);    /* the candidate it replaces, or this one */
        pj_sockaddr_cp(&g->cand, src);
        g->cand_ssrc = ssrc;
        g->cand_seq = seq;
        g->cand_n = 1;
    }
    if (g->cand_n >= atomic_load_explicit(&g_learn, memory_order_relaxed)) {
        PJ_LOG(4, (g->base.name, "RTP source learned: %s (the SDP named another)",
                   pj_sockaddr_print(src, a, sizeof(a), 3)));
        latch(g, src, ssrc, now);
        count(RTPGUARD_LEARNED);
        *sw = PJ_TRUE;
        return 1;
    }
    return 0;
}

static void guard_rtp_cb2(pjmedia_tp_cb_param *param)
{
    struct rtpguard *g = (struct rtpguard *)param->user_data;
    void (*cb2)(pjmedia_tp_cb_param *) = g->stream_rtp_cb2;
    void (*cb)(void *, void *, pj_ssize_t) = g->stream_rtp_cb;
    void *ud = g->stream_user_data;
    pj_bool_t sw = PJ_FALSE;

    if (!ud)
        return;
    if (param->size > 0 && param->src_addr &&
        !rtp_admit(g, (const pj_sockaddr *)param->src_addr, param->pkt, param->size, &sw))
        return;

    if (param->size > 12) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        const int64_t now = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
        __atomic_store_n(&g->last_rx_ns, now, __ATOMIC_RELAXED);
        transit_on_rtp(&g->transit, param->pkt, (size_t)param->size, now);
    }
    if (cb2) {
        pjmedia_tp_cb_param p = *param;
        p.user_data = ud;
        p.src_addr = NULL;      /* the stream's own NAT switch never runs: we decide */
        p.rem_switch = PJ_FALSE;
        cb2(&p);
    } else if (cb) {
        cb(ud, param->pkt, param->size);
    }
    param->rem_switch = sw;
}

/* Where the call's RTCP comes from / goes when nothing better is known. */
static void rtcp_default(struct rtpguard *g, pj_sockaddr *out)
{
    pj_sockaddr peer;
    unsigned gen;
    int latched;

    read_published(&g->rtp_pub, &peer, &gen, &latched);
    if (latched && !same_addr(&peer, &g->sdp_rtp)) {
        pj_sockaddr_cp(out, &peer);
        if (!g->mux)
            pj_sockaddr_set_port(out, (pj_uint16_t)(pj_sockaddr_get_port(&peer) + 1));
    } else {
        pj_sockaddr_cp(out, &g->sdp_rtcp);
    }
}

static void guard_rtcp_cb(void *user_data, void *pkt, pj_ssize_t size)
{
    struct rtpguard *g = (struct rtpguard *)user_data;
    void (*cb)(void *, void *, pj_ssize_t) = g->stream_rtcp_cb;
    void *ud = g->stream_user_data;

    if (!ud || !cb)
        return;
    if (size > 0) {
        pjmedia_transport_info info;
        const pj_sockaddr *src;
        pj_sockaddr peer, dest;
        unsigned gen, dgen;
        int latched, learned, ok;

        pjmedia_transport_info_init(&info);
        if (pjmedia_transport_get_info(g->slave, &info) != PJ_SUCCESS)
            return;
        src = &info.src_rtcp_name;
        read_published(&g->rtp_pub, &peer, &gen, &latched);
        ok = same_addr(src, &g->sdp_rtcp) || (latched ? same_ip(src, &peer)
                                                      : same_ip(src, &g->sdp_rtp));
        if (!ok) {
            count(RTPGUARD_FOREIGN_RTCP);
            log_drop(g, "RTCP", src, latched ? &peer : &g->sdp_rtcp, &g->logged_rtcp);
            return;
        }
        read_published(&g->rtcp_pub, &dest, &dgen, &learned);
        if (latched && (!learned || dgen != gen))
            publish(&g->rtcp_pub, src, gen, 1);     /* our RTCP goes where theirs comes from */
    }
    cb(ud, pkt, size);
}

static pj_status_t guard_attach2(pjmedia_transport *tp, pjmedia_transport_attach_param *prm)
{
    struct rtpguard *g = (struct rtpguard *)tp;
    pj_status_t status;

    /* The offer/answer's addresses, as the UDP transport reads them. */
    pj_sockaddr_cp(&g->sdp_rtp, &prm->rem_addr);
    if (pj_sockaddr_has_addr(&prm->rem_rtcp)) {
        pj_sockaddr_cp(&g->sdp_rtcp, &prm->rem_rtcp);
    } else {
        pj_sockaddr_cp(&g->sdp_rtcp, &prm->rem_addr);
        pj_sockaddr_set_port(&g->sdp_rtcp,
                             (pj_uint16_t)(pj_sockaddr_get_port(&prm->rem_addr) + 1));
    }
    g->mux = pj_sockaddr_has_addr(&prm->rem_addr) && same_addr(&prm->rem_addr, &prm->rem_rtcp);

    /* Learn again (a re-INVITE), the source latched so far still welcome at once. */
    g->has_prev = g->latched;
    if (g->latched)
        pj_sockaddr_cp(&g->prev_peer, &g->peer);
    g->latched = 0;
    g->cand_n = 0;
    g->logged_rtp = g->logged_rtcp = 0;
    g->rtp_gen++;
    publish(&g->rtp_pub, NULL, g->rtp_gen, 0);
    publish(&g->rtcp_pub, NULL, g->rtp_gen, 0);

    g->stream_user_data = prm->user_data;
    g->stream_rtp_cb = prm->rtp_cb;
    g->stream_rtp_cb2 = prm->rtp_cb2;
    g->stream_rtcp_cb = prm->rtcp_cb;

    prm->user_data = g;
    prm->rtp_cb = NULL;
    prm->rtp_cb2 = &guard_rtp_cb2;
    prm->rtcp_cb = &guard_rtcp_cb;
    status = pjmedia_transport_attach2(g->slave, prm);
    if (status != PJ_SUCCESS) {
        g->stream_user_data = NULL;
        g->stream_rtp_cb = NULL;
        g->stream_rtp_cb2 = NULL;
        g->stream_rtcp_cb = NULL;
    }
    return status;
}

static void guard_detach(pjmedia_transport *tp, void *strm)
{
    struct rtpguard *g = (struct rtpguard *)tp;
    PJ_UNUSED_ARG(strm);
    if (g->stream_user_data) {
        pjmedia_transport_detach(g->slave, g);
        g->stream_user_data = NULL;
        g->stream_rtp_cb = NULL;
        g->stream_rtp_cb2 = NULL;
        g->stream_rtcp_cb = NULL;
    }
}

static pj_status_t guard_get_info(pjmedia_transport *tp, pjmedia_transport_info *info)
{
    return pjmedia_transport_get_info(((struct rtpguard *)tp)->slave, info);
}

/* The stream's own RTP. After shared packets (rtpguard_send_shared) its numbering is shifted
 * to go on from theirs, so the peer sees one stream: one SSRC, sequence numbers and
 * timestamps without a gap or a step back. */
static pj_status_t guard_send_rtp(pjmedia_transport *tp, const void *pkt, pj_size_t size)
{
    struct rtpguard *g = (struct rtpguard *)tp;
    const pj_uint8_t *p = (const pj_uint8_t *)pkt;
    if (size < 12 || size > RTPGUARD_MAX_PKT || (p[0] & 0xC0) != 0x80)
        return pjmedia_transport_send_rtp(g->slave, pkt, size);
    pj_uint16_t seq = (pj_uint16_t)((p[2] << 8) | p[3]);
    pj_uint32_t ts = rd32(p + 4);
    pj_uint8_t pt = p[1] & 0x7F;
    if (g->shared_run) {
        g->seq_off = (pj_uint16_t)(g->tx_seq + 1 - seq);
        g->ts_off = g->tx_ts + g->tx_step - ts;
        g->shared_run = 0;
    }
    pj_uint16_t oseq = (pj_uint16_t)(seq + g->seq_off);
    pj_uint32_t ots = ts + g->ts_off;
    if (!g->tx_seen)
        g->tx_pt = pt;
    const int mark = g->paused && pt == g->tx_pt;  /* the first packet after a DTX pause */
    if (pt == g->tx_pt) {   /* audio (not a telephone-event): its timestamp steps */
        pj_uint32_t d = ots - g->tx_ts;
        /* (a marked packet starts a talk spurt: its timestamp jumped over a DTX pause) */
        if (g->tx_seen && (pj_uint16_t)(oseq - g->tx_seq) == 1 && d > 0 && d <= 4800
                && !(p[1] & 0x80) && !g->paused)
            g->tx_step = d;
        g->paused = 0;
        g->tx_ts = ots;
    }
    g->tx_seq = oseq;
    g->tx_ssrc = rd32(p + 8);
    g->tx_seen++;
    if (!g->seq_off && !g->ts_off && !mark)
        return pjmedia_transport_send_rtp(g->slave, pkt, size);
    pj_uint8_t buf[RTPGUARD_MAX_PKT];
    memcpy(buf, pkt, size);
    if (mark)
        buf[1] |= 0x80;
    buf[2] = (pj_uint8_t)(oseq >> 8);
    buf[3] = (pj_uint8_t)oseq;
    wr32(buf + 4, ots);
    return pjmedia_transport_send_rtp(g->slave, buf, size);
}

static struct pjmedia_transport_op guard_op;

static struct rtpguard *guard_of(pjmedia_transport *tp)
{
    return tp && tp->op == &guard_op ? (struct rtpguard *)tp : NULL;
}

unsigned rtpguard_own_sent(pjmedia_transport *tp)
{
    struct rtpguard *g = guard_of(tp);
    return g && g->tx_step ? g->tx_seen : 0;
}

pj_status_t rtpguard_send_shared(pjmedia_transport *tp, const void *payload, unsigned len)
{
    struct rtpguard *g = guard_of(tp);
    if (!g || len + 12 > RTPGUARD_MAX_PKT)
        return PJ_EINVAL;
    pj_uint8_t buf[RTPGUARD_MAX_PKT];
    pj_uint16_t seq = (pj_uint16_t)(g->tx_seq + 1);
    pj_uint32_t ts = g->tx_ts + g->tx_step;
    buf[0] = 0x80;
    buf[1] = (pj_uint8_t)(g->tx_pt | (g->paused ? 0x80 : 0));  /* marker: a spurt after DTX */
    g->paused = 0;
    buf[2] = (pj_uint8_t)(seq >> 8);
    buf[3] = (pj_uint8_t)seq;
    wr32(buf + 4, ts);
    wr32(buf + 8, g->tx_ssrc);
    memcpy(buf + 12, payload, len);
    g->tx_seq = seq;
    g->tx_ts = ts;
    g->shared_run = 1;
    g->shared_pkts++;
    g->shared_octets += len;
    return pjmedia_transport_send_rtp(g->slave, buf, len + 12);
}

void rtpguard_skip(pjmedia_transport *tp, int shared)
{
    struct rtpguard *g = guard_of(tp);
    if (!g || !g->tx_step)
        return;
    g->tx_ts += g->tx_step;
    g->paused = 1;
    if (shared)
        g->shared_run = 1;
}

unsigned rtpguard_sent(pjmedia_transport *tp)
{
    struct rtpguard *g = guard_of(tp);
    return g ? g->tx_seen : 0;
}

/* A sender report of a stream whose numbering was shifted: its RTP timestamp shifted the
 * same way, its counts including the shared packets. Anything else as it is. */
static const void *shift_sr(struct rtpguard *g, const void *pkt, pj_size_t size, pj_uint8_t *buf)
{
    const pj_uint8_t *p = (const pj_uint8_t *)pkt;
    if ((!g->ts_off && !g->shared_pkts) || size < 28 || size > RTPGUARD_MAX_PKT || p[1] != 200)
        return pkt;
    memcpy(buf, pkt, size);
    wr32(buf + 16, rd32(p + 16) + g->ts_off);
    wr32(buf + 20, rd32(p + 20) + g->shared_pkts);
    wr32(buf + 24, rd32(p + 24) + g->shared_octets);
    return buf;
}

static pj_status_t guard_send_rtcp2(pjmedia_transport *tp, const pj_sockaddr_t *addr,
                                    unsigned addr_len, const void *pkt, pj_size_t size)
{
    return pjmedia_transport_send_rtcp2(((struct rtpguard *)tp)->slave, addr, addr_len, pkt,
                                        size);
}

/* Our RTCP: to the RTCP source taken since the latch, else to the latched RTP address's
 * port + 1 (its own port with rtcp-mux), else to the SDP's RTCP address. */
static pj_status_t guard_send_rtcp(pjmedia_transport *tp, const void *pkt, pj_size_t size)
{
    struct rtpguard *g = (struct rtpguard *)tp;
    pj_uint8_t buf[RTPGUARD_MAX_PKT];
    pkt = shift_sr(g, pkt, size, buf);
    pj_sockaddr dest, peer;
    unsigned gen, dgen;
    int latched, learned;

    read_published(&g->rtp_pub, &peer, &gen, &latched);
    read_published(&g->rtcp_pub, &dest, &dgen, &learned);
    if (!(learned && latched && dgen == gen))
        rtcp_default(g, &dest);
    if (!pj_sockaddr_has_addr(&dest))
        return pjmedia_transport_send_rtcp(g->slave, pkt, size);
    return pjmedia_transport_send_rtcp2(g->slave, &dest, pj_sockaddr_get_len(&dest), pkt,
                                        size);
}

static pj_status_t guard_media_create(pjmedia_transport *tp, pj_pool_t *pool, unsigned options,
                                      const pjmedia_sdp_session *rem_sdp, unsigned idx)
{
    return pjmedia_transport_media_create(((struct rtpguard *)tp)->slave, pool, options,
                                          rem_sdp, idx);
}

static pj_status_t guard_encode_sdp(pjmedia_transport *tp, pj_pool_t *pool,
                                    pjmedia_sdp_session *local, const pjmedia_sdp_session *rem,
                                    unsigned idx)
{
    return pjmedia_transport_encode_sdp(((struct rtpguard *)tp)->slave, pool, local, rem, idx);
}

static pj_status_t guard_media_start(pjmedia_transport *tp, pj_pool_t *pool,
                                     const pjmedia_sdp_session *local,
                                     const pjmedia_sdp_session *rem, unsigned idx)
{
    return pjmedia_transport_media_start(((struct rtpguard *)tp)->slave, pool, local, rem, idx);
}

static pj_status_t guard_media_stop(pjmedia_transport *tp)
{
    return pjmedia_transport_media_stop(((struct rtpguard *)tp)->slave);
}

static pj_status_t guard_simulate_lost(pjmedia_transport *tp, pjmedia_dir dir, unsigned pct)
{
    return pjmedia_transport_simulate_lost(((struct rtpguard *)tp)->slave, dir, pct);
}

static void guard_on_destroy(void *arg)
{
    pj_pool_release(((struct rtpguard *)arg)->pool);
}

static pj_status_t guard_destroy(pjmedia_transport *tp)
{
    struct rtpguard *g = (struct rtpguard *)tp;
    if (g->del_base)
        pjmedia_transport_close(g->slave);
    if (g->base.grp_lock)
        pj_grp_lock_dec_ref(g->base.grp_lock);   /* the pool goes with the group lock */
    else
        guard_on_destroy(g);
    return PJ_SUCCESS;
}

static struct pjmedia_transport_op guard_op = {
    .get_info = &guard_get_info,
    .attach = NULL,
    .detach = &guard_detach,
    .send_rtp = &guard_send_rtp,
    .send_rtcp = &guard_send_rtcp,
    .send_rtcp2 = &guard_send_rtcp2,
    .media_create = &guard_media_create,
    .encode_sdp = &guard_encode_sdp,
    .media_start = &guard_media_start,
    .media_stop = &guard_media_stop,
    .simulate_lost = &guard_simulate_lost,
    .destroy = &guard_destroy,
    .attach2 = &guard_attach2,
};

pjmedia_transport *rtpguard_wrap(pjmedia_transport *base, int close_member)
{
    pj_pool_t *pool;
    struct rtpguard *g;

    if (!base)
        return NULL;
    pool = pjsua_pool_create("rtpg%p", 512, 512);
    if (!pool)
        return NULL;
    g = PJ_POOL_ZALLOC_T(pool, struct rtpguard);
    g->pool = pool;
    pj_ansi_strxcpy(g->base.name, pool->obj_name, sizeof(g->base.name));
    g->base.type = (pjmedia_transport_type)(PJMEDIA_TRANSPORT_TYPE_USER + 15);
    g->base.op = &guard_op;
    g->slave = base;
    g->del_base = close_member ? PJ_TRUE : PJ_FALSE;
    if (base->grp_lock) {
        g->base.grp_lock = base->grp_lock;
        pj_grp_lock_add_ref(base->grp_lock);
        pj_grp_lock_add_handler(base->grp_lock, pool, g, &guard_on_destroy);
    }
    return &g->base;
}

int64_t rtpguard_last_rx_ns(pjmedia_transport *tp)
{
    if (!tp || tp->op != &guard_op)
        return 0;
    return __atomic_load_n(&((struct rtpguard *)tp)->last_rx_ns, __ATOMIC_RELAXED);
}

void rtpguard_measure(pjmedia_transport *tp, unsigned pt, unsigned rate)
{
    if (tp && tp->op == &guard_op)
        transit_configure(&((struct rtpguard *)tp)->transit, pt, rate);
}

int rtpguard_transit(pjmedia_transport *tp, transit_view *v)
{
    if (!tp || tp->op != &guard_op)
        return 0;
    return transit_read(&((struct rtpguard *)tp)->transit, v);
}
