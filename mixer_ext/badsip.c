/* badsip: answer malformed SIP requests with 400 instead of pjsip's silent drop.
 *
 * pjsip drops a request it cannot parse (it only logs it), which leaves the sender
 * retransmitting into silence. Its transport manager offers a dropped-data callback: there we
 * copy the headers a response needs (Via, From, To, Call-ID, CSeq) textually and send
 * "400 Bad Request" with a Warning saying what was wrong, from the node's own UDP transport,
 * to the packet's source address and port (RFC 3581: never to an address the Via claims, or
 * the node would reflect traffic at anyone). Runs on the SIP thread inside pjsip; no
 * allocation, no Python.
 */
#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <string.h>

#include <pjsip.h>
#include <pjsua-lib/pjsua.h>

#include "badsip.h"

#define RESP_MAX 4000

static char g_host[64] = "sipconf";
static unsigned long g_answered;

static int header_is(const char *line, size_t len, const char *name, char compact)
{
    size_t n = strlen(name);
    size_t i = 0;
    if (len > n && strncasecmp(line, name, n) == 0) {
        i = n;
    } else if (compact && len > 1 && tolower((unsigned char)line[0]) == compact &&
               (line[1] == ':' || line[1] == ' ' || line[1] == '\t')) {
        i = 1;
    } else {
        return 0;
    }
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    return i < len && line[i] == ':';
}

/* The packet's source. The callback gets no rx data, but on UDP the data it gets is the rx
 * data's packet buffer (past any leading CR/LF keep-alives pjsip skipped): step back to the
 * rx data and check it is the one (its transport, its length) before trusting it. */
static const pj_sockaddr *source_of(const pjsip_tp_dropped_data *dd)
{
    const char *data = (const char *)dd->data;
    for (int skip = 0; skip <= 8; skip++) {
        if (skip > 0 && data[-skip] != '\r' && data[-skip] != '\n')
            break;
        const pjsip_rx_data *rd = (const pjsip_rx_data *)(
            data - skip - offsetof(pjsip_rx_data, pkt_info.packet));
        if (rd->tp_info.transport == dd->tp && rd->pkt_info.len >= (pj_ssize_t)(dd->len + skip) &&
            rd->pkt_info.len <= PJSIP_MAX_PKT_LEN && rd->pkt_info.src_addr_len > 0 &&
            rd->pkt_info.src_addr.addr.sa_family == pj_AF_INET())
            return &rd->pkt_info.src_addr;
    }
    return NULL;
}

static void on_dropped(pjsip_tp_dropped_data *dd)
{
    if (!dd || !dd->data || dd->len < 8 || dd->status == PJ_SUCCESS)
        return;
    if (!dd->tp || dd->tp->key.type != PJSIP_TRANSPORT_UDP)
        return;
    const char *msg = dd->data;
    size_t len = dd->len;
    /* Requests only, never ACK (it gets no response), never responses. */
    if (len >= 4 && strncmp(msg, "SIP/", 4) == 0)
        return;
    if (len >= 4 && strncmp(msg, "ACK ", 4) == 0)
        return;

    char resp[RESP_MAX];
    int n = snprintf(resp, sizeof(resp), "SIP/2.0 400 Bad Request\r\n");
    int have = 0;
    const char *line = memchr(msg, '\n', len);
    if (!line) return;
    line++;
    while (line < msg + len) {
        const char *eol = memchr(line, '\n', (size_t)(msg + len - line));
        size_t ll = eol ? (size_t)(eol - line) : (size_t)(msg + len - line);
        size_t tl = (ll > 0 && line[ll - 1] == '\r') ? ll - 1 : ll;
        if (tl == 0)
            break;                                          /* end of headers */
        int keep = 0;
        if (header_is(line, tl, "Via", 'v')) {
            keep = 1;
            have |= 1;
        } else if (header_is(line, tl, "From", 'f')) { keep = 1; have |= 2; }
        else if (header_is(line, tl, "To", 't')) { keep = 1; have |= 4; }
        else if (header_is(line, tl, "Call-ID", 'i')) { keep = 1; have |= 8; }
        else if (header_is(line, tl, "CSeq", 0)) { keep = 1; have |= 16; }
        if (keep && n + (int)tl + 2 < (int)sizeof(resp) - 200) {
            memcpy(resp + n, line, tl);
            n += (int)tl;
            resp[n++] = '\r';
            resp[n++] = '\n';
        }
        if (!eol) break;
        line = eol + 1;
    }
    if ((have & 1) == 0 || (have & 8) == 0)
        return;                                    /* nowhere to send, or no dialog id */
    if ((have & 16) == 0)
        n += snprintf(resp + n, sizeof(resp) - n, "CSeq: 1 OPTIONS\r\n");
    n += snprintf(resp + n, sizeof(resp) - n,
                  "Warning: 399 %s \"malformed request (%s)\"\r\n"
                  "Content-Length: 0\r\n\r\n",
                  g_host, dd->status == PJSIP_EMISSINGHDR ? "missing header" : "syntax error");
    if (n <= 0 || n >= (int)sizeof(resp))
        return;

    const pj_sockaddr *src = source_of(dd);
    if (!src)
        return;                                    /* no source known: no answer */
    pj_sockaddr_in addr = src->ipv4;
    pjsip_tpmgr *mgr = pjsip_endpt_get_tpmgr(pjsua_get_pjsip_endpt());
    pjsip_tpselector sel;
    pj_bzero(&sel, sizeof(sel));
    sel.type = PJSIP_TPSELECTOR_TRANSPORT;
    sel.u.transport = dd->tp;
    if (pjsip_tpmgr_send_raw(mgr, PJSIP_TRANSPORT_UDP, &sel, NULL, resp, (pj_size_t)n, &addr,
                             sizeof(addr), NULL, NULL) == PJ_SUCCESS)
        g_answered++;
    return;
}

int sipguard_install(const char *host)
{
    if (host) {
        strncpy(g_host, host, sizeof(g_host) - 1);
        g_host[sizeof(g_host) - 1] = 0;
    }
    pjsip_endpoint *endpt = pjsua_get_pjsip_endpt();
    if (!endpt)
        return -1;
    return pjsip_tpmgr_set_drop_data_cb(pjsip_endpt_get_tpmgr(endpt), &on_dropped) == PJ_SUCCESS
               ? 0 : -1;
}

unsigned long sipguard_answered(void)
{
    return g_answered;
}
