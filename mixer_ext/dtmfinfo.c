/* dtmfinfo: SIP INFO digits in both common bodies.
 *
 * pjsua reports INFO digits only for `application/dtmf-relay` ("Signal=5\r\nDuration=160").
 * Phones also send `application/dtmf`, whose body is the digit alone. This pjsip module sits
 * before the transaction layer and rewrites such a request into the dtmf-relay form, so both
 * reach the call's DTMF callback the same way (method SIP INFO) and get pjsua's 200 OK.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <pjsip.h>
#include <pjsua-lib/pjsua.h>

#include "dtmfinfo.h"

static pj_bool_t on_rx_request(pjsip_rx_data *rdata);

static pjsip_module g_mod = {
    NULL, NULL,
    { "mod-sipconf-dtmfinfo", 20 },
    -1,
    PJSIP_MOD_PRIORITY_TSX_LAYER - 1,
    NULL, NULL, NULL, NULL,
    &on_rx_request,
    NULL, NULL, NULL, NULL,
};

static unsigned long g_rewritten;

static pj_bool_t on_rx_request(pjsip_rx_data *rdata)
{
    pjsip_msg *msg = rdata->msg_info.msg;
    if (pjsip_method_cmp(&msg->line.req.method, &pjsip_info_method) != 0)
        return PJ_FALSE;
    pjsip_msg_body *body = msg->body;
    if (!body || !body->len || pj_stricmp2(&body->content_type.type, "application") != 0 ||
        pj_stricmp2(&body->content_type.subtype, "dtmf") != 0)
        return PJ_FALSE;
    const char *p = (const char *)body->data;
    unsigned i = 0;
    while (i < body->len && isspace((unsigned char)p[i]))
        i++;
    if (i >= body->len)
        return PJ_FALSE;
    char digit = (char)toupper((unsigned char)p[i]);
    if (!strchr("0123456789*#ABCD", digit))
        return PJ_FALSE;  /* pjsua answers what it does not know */
    char *text = (char *)pj_pool_alloc(rdata->tp_info.pool, 40);
    int n = snprintf(text, 40, "Signal=%c\r\nDuration=160\r\n", digit);
    body->data = text;
    body->len = (unsigned)n;
    body->content_type.subtype = pj_str("dtmf-relay");
    g_rewritten++;
    return PJ_FALSE;  /* go on: the dialog and pjsua handle it from here */
}

int dtmfinfo_install(void)
{
    pjsip_endpoint *endpt = pjsua_get_pjsip_endpt();
    if (!endpt)
        return -1;
    if (g_mod.id != -1)
        return 0;
    return pjsip_endpt_register_module(endpt, &g_mod) == PJ_SUCCESS ? 0 : -1;
}

unsigned long dtmfinfo_rewritten(void)
{
    return g_rewritten;
}
