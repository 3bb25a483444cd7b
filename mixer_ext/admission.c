/* admission: who may start a call, decided before pjsua spends anything on it.
 *
 * pjsua creates a dialog, opens RTP sockets and negotiates SDP for every INVITE before the
 * application sees it, so a flood (or a stranger) costs ports, memory and log lines. This
 * pjsip module sits before the transaction layer and answers a new INVITE statelessly, to
 * the packet's source, when
 *   - its source is not in the trusted networks: 403 with a Warning;
 *   - its source started more calls than its token bucket allows (calls per second, burst):
 *     503 with Retry-After;
 *   - the node has no room for another call (--max-calls, or two RTP ports a call from
 *     --rtp-ports): 503 with Retry-After;
 *   - SRTP is required (--srtp required) and its offer is plain RTP: 488 with a Warning that
 *     says what to offer (pjsua would refuse it too, later, after opening media, and with
 *     no word why).
 * A retransmission of an INVITE that already has its transaction passes. Refusals are counted
 * per reason and, per source, kept for the SIP thread to log as one summary line per interval
 * (admission_report): no logging here, no Python, no allocation. Everything runs on the SIP
 * thread (pjsip's receive path and the poll loop are the same thread), so nothing is locked.
 */
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <pjsip.h>
#include <pjsua-lib/pjsua.h>

#include "admission.h"

#define MAX_NETS 64
#define SLOTS 4096          /* sources remembered (a power of two) */
#define PROBES 8            /* slots looked at per source before the stalest is replaced */
#define RCVBUF (4 << 20)    /* bytes the SIP UDP sockets may queue (a burst waits, not lost) */

typedef struct {
    int family;             /* 4 or 6 */
    unsigned char addr[16];
    int prefix;
} net_t;

typedef struct {
    int family;             /* 0: free */
    unsigned char addr[16];
    double tokens, last;    /* token bucket; last: when it was last refilled (s) */
    double reported;        /* when its refusals were last reported (s) */
    unsigned long unreported[ADMISSION_REASONS];
} source_t;

static pj_bool_t on_rx_request(pjsip_rx_data *rdata);
static int plain_offer(pjsip_rx_data *rdata);

static pjsip_module g_mod = {
    NULL, NULL,
    { "mod-sipconf-admission", 21 },
    -1,
    PJSIP_MOD_PRIORITY_TSX_LAYER - 3,  /* first of the node's guards */
    NULL, NULL, NULL, NULL,
    &on_rx_request,
    NULL, NULL, NULL, NULL,
};

static net_t g_nets[MAX_NETS];
static int g_nnets;
static source_t g_src[SLOTS];
static unsigned g_max_calls = 1;
static double g_rate = 10.0, g_burst = 20.0;
static int g_retry_after = 5;
static int g_srtp_required;
static volatile unsigned long g_refused[ADMISSION_REASONS];
static const char *const g_warning[ADMISSION_REASONS] = {
    "source not trusted", "too many new calls from this source", "node at capacity",
    "SRTP required: offer RTP/SAVP with a=crypto (SDES)",
};
static const int g_code[ADMISSION_REASONS] = {
    PJSIP_SC_FORBIDDEN, PJSIP_SC_SERVICE_UNAVAILABLE, PJSIP_SC_SERVICE_UNAVAILABLE,
    PJSIP_SC_NOT_ACCEPTABLE_HERE,
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The source as (family, bytes); an IPv4-mapped IPv6 address is IPv4. */
static int source_addr(const pj_sockaddr *sa, unsigned char out[16])
{
    memset(out, 0, 16);
    if (sa->addr.sa_family == pj_AF_INET()) {
        memcpy(out, &sa->ipv4.sin_addr, 4);
        return 4;
    }
    if (sa->addr.sa_family == pj_AF_INET6()) {
        const unsigned char *a = (const unsigned char *)&sa->ipv6.sin6_addr;
        static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (memcmp(a, mapped, 12) == 0) {
            memcpy(out, a + 12, 4);
            return 4;
        }
        memcpy(out, a, 16);
        return 6;
    }
    return 0;
}

static int trusted(int family, const unsigned char *a)
{
    for (int i = 0; i < g_nnets; i++) {
        const net_t *n = &g_nets[i];
        if (n->family != family)
            continue;
        int bits = n->prefix, k = 0;
        while (bits >= 8 && a[k] == n->addr[k]) {
            bits -= 8;
            k++;
        }
        if (bits >= 8)
            continue;
        if (bits == 0 || ((a[k] ^ n->addr[k]) & (0xff00 >> bits) & 0xff) == 0)
            return 1;
    }
    return 0;
}

static source_t *source_slot(int family, const unsigned char *a, double now)
{
    unsigned h = 2166136261u;
    for (int i = 0; i < 16; i++)
        h = (h ^ a[i]) * 16777619u;
    source_t *victim = NULL;  /* a free slot, else the one whose source was seen longest ago */
    for (int p = 0; p < PROBES; p++) {
        source_t *s = &g_src[(h + (unsigned)p) & (SLOTS - 1)];
        if (s->family == family && memcmp(s->addr, a, 16) == 0)
            return s;
        if (s->family == 0) {
            if (!victim || victim->family != 0)
                victim = s;
        } else if (!victim || (victim->family != 0 && s->last < victim->last)) {
            victim = s;
        }
    }
    memset(victim, 0, sizeof(*victim));
    victim->family = family;
    memcpy(victim->addr, a, 16);
    victim->tokens = g_burst;
    victim->last = now;
    victim->reported = now - 3600.0;  /* its first refusal is reported at once */
    return victim;
}

static pj_bool_t refuse(pjsip_rx_data *rdata, source_t *s, enum admission_reason why)
{
    pjsip_endpoint *endpt = pjsua_get_pjsip_endpt();
    pj_pool_t *pool = rdata->tp_info.pool;
    pjsip_hdr hdrs;
    pj_list_init(&hdrs);
    char warn[120];
    pj_ansi_snprintf(warn, sizeof(warn), "399 sipconf \"%s\"", g_warning[why]);
    pj_str_t wn = pj_str("Warning"), wv = pj_str(warn);
    pjsip_generic_string_hdr *w = pjsip_generic_string_hdr_create(pool, &wn, &wv);
    if (w)
        pj_list_push_back(&hdrs, w);
    if (g_code[why] == PJSIP_SC_SERVICE_UNAVAILABLE) {
        pjsip_retry_after_hdr *ra = pjsip_retry_after_hdr_create(pool, g_retry_after);
        if (ra)
            pj_list_push_back(&hdrs, ra);
    }
    pjsip_endpt_respond_stateless(endpt, rdata, g_code[why], NULL, &hdrs, NULL);
    g_refused[why]++;
    if (s)
        s->unreported[why]++;
    return PJ_TRUE;
}

static pj_bool_t on_rx_request(pjsip_rx_data *rdata)
{
    pjsip_msg *msg = rdata->msg_info.msg;
    if (msg->line.req.method.id != PJSIP_INVITE_METHOD)
        return PJ_FALSE;
    if (rdata->msg_info.to && rdata->msg_info.to->tag.slen > 0)
        return PJ_FALSE;  /* a re-INVITE: its call was admitted */
    pj_str_t key;
    if (pjsip_tsx_create_key(rdata->tp_info.pool, &key, PJSIP_ROLE_UAS,
                             &msg->line.req.method, rdata) == PJ_SUCCESS &&
        pjsip_tsx_layer_find_tsx(&key, PJ_FALSE) != NULL)
        return PJ_FALSE;  /* a retransmission: its transaction answers it */

    unsigned char a[16];
    int family = source_addr(&rdata->pkt_info.src_addr, a);
    if (family == 0)
        return refuse(rdata, NULL, ADMISSION_FORBIDDEN);
    double now = now_s();
    source_t *s = source_slot(family, a, now);
    if (!trusted(family, a))
        return refuse(rdata, s, ADMISSION_FORBIDDEN);
    s->tokens += (now - s->last) * g_rate;
    if (s->tokens > g_burst)
        s->tokens = g_burst;
    s->last = now;
    if (s->tokens < 1.0)
        return refuse(rdata, s, ADMISSION_RATE);
    if (pjsua_call_get_count() >= g_max_calls)
        return refuse(rdata, s, ADMISSION_CAPACITY);
    s->tokens -= 1.0;
    if (g_srtp_required && plain_offer(rdata))
        return refuse(rdata, s, ADMISSION_NO_SRTP);
    return PJ_FALSE;
}

/* An SDP offer (the body, or the SDP part of a multipart body) whose audio is not RTP/SAVP(F)
 * with SDES keys. No offer (a late offer in the ACK) is not plain: pjsua then offers SRTP. An
 * offer pjsip cannot parse is left to pjsua, which answers it. */
static int plain_offer(pjsip_rx_data *rdata)
{
    pjsip_rdata_sdp_info *info = pjsip_rdata_get_sdp_info(rdata);
    if (info == NULL || info->sdp == NULL)
        return 0;
    for (unsigned i = 0; i < info->sdp->media_count; i++) {
        const pjmedia_sdp_media *m = info->sdp->media[i];
        if (pj_strcmp2(&m->desc.media, "audio") != 0 || m->desc.port == 0)
            continue;
        if ((pj_stricmp2(&m->desc.transport, "RTP/SAVP") == 0 ||
             pj_stricmp2(&m->desc.transport, "RTP/SAVPF") == 0) &&
            pjmedia_sdp_media_find_attr2(m, "crypto", NULL) != NULL)
            return 0;
        return 1;
    }
    return 0;
}

/* A burst of requests larger than the kernel's default UDP receive buffer (~200 kB, about a
 * hundred INVITEs) would be dropped before anyone could refuse it, OPTIONS probes with it:
 * ask for RCVBUF (root may exceed net.core.rmem_max; others get what it allows). */
static void enlarge_udp_buffers(void)
{
    pjsua_transport_id ids[16];
    unsigned n = PJ_ARRAY_SIZE(ids);
    if (pjsua_enum_transports(ids, &n) != PJ_SUCCESS)
        return;
    for (unsigned i = 0; i < n; i++) {
        pjsua_transport_info info;
        if (pjsua_transport_get_info(ids[i], &info) != PJ_SUCCESS ||
            (info.type != PJSIP_TRANSPORT_UDP && info.type != PJSIP_TRANSPORT_UDP6))
            continue;
        pjsip_transport *tp = NULL;  /* the listener itself, found by its own address */
        if (pjsip_tpmgr_acquire_transport(pjsip_endpt_get_tpmgr(pjsua_get_pjsip_endpt()),
                                          info.type, &info.local_addr, (int)info.addr_len,
                                          NULL, &tp) != PJ_SUCCESS || !tp)
            continue;
        pj_sock_t sock = pjsip_udp_transport_get_socket(tp);
        pjsip_transport_dec_ref(tp);
        int size = RCVBUF;
#ifdef SO_RCVBUFFORCE
        if (setsockopt(sock, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) == 0)
            continue;
#endif
        setsockopt(sock, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    }
}

int admission_install(void)
{
    pjsip_endpoint *endpt = pjsua_get_pjsip_endpt();
    if (!endpt)
        return -1;
    enlarge_udp_buffers();
    if (g_mod.id != -1)
        return 0;
    return pjsip_endpt_register_module(endpt, &g_mod) == PJ_SUCCESS ? 0 : -1;
}

int admission_trust(int family, const unsigned char *addr, int prefix)
{
    if (g_nnets >= MAX_NETS || (family != 4 && family != 6) || prefix < 0 ||
        prefix > (family == 4 ? 32 : 128))
        return -1;
    net_t *n = &g_nets[g_nnets++];
    n->family = family;
    memset(n->addr, 0, 16);
    memcpy(n->addr, addr, family == 4 ? 4 : 16);
    n->prefix = prefix;
    return 0;
}

void admission_limits(unsigned max_calls, double rate, double burst, int retry_after,
                      int srtp_required)
{
    g_srtp_required = srtp_required;
    g_max_calls = max_calls;
    g_rate = rate;
    g_burst = burst < 1.0 ? 1.0 : burst;
    g_retry_after = retry_after;
}

unsigned long admission_refused(int why)
{
    return (why >= 0 && why < ADMISSION_REASONS) ? g_refused[why] : 0;
}

int admission_report(double interval, int *family, unsigned char addr[16],
                     unsigned long counts[ADMISSION_REASONS])
{
    double now = now_s();
    for (int i = 0; i < SLOTS; i++) {
        source_t *s = &g_src[i];
        if (s->family == 0 || now - s->reported < interval)
            continue;
        unsigned long any = 0;
        for (int r = 0; r < ADMISSION_REASONS; r++)
            any |= s->unreported[r];
        if (!any)
            continue;
        *family = s->family;
        memcpy(addr, s->addr, 16);
        memcpy(counts, s->unreported, sizeof(s->unreported));
        memset(s->unreported, 0, sizeof(s->unreported));
        s->reported = now;
        return 1;
    }
    return 0;
}

unsigned admission_calls(void)
{
    return pjsua_call_get_count();
}
