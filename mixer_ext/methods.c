/* methods: a final answer to every request the node does not serve.
 *
 * Left alone, pjsua answers a SUBSCRIBE from anyone with 200 and a stream of NOTIFYs to the
 * Contact it names, takes MESSAGE, and gives no final response at all to REGISTER, REFER or an
 * unknown method (the sender retransmits for 32 s). This pjsip module sits before the
 * transaction layer and answers those statelessly (RFC 3261 8.2.1/8.2.2): 405 with Allow for a
 * method SIP defines but the node does not serve, 501 for an unknown one, 489 for an event
 * package (the node has none), 415 with Accept for an INFO body it does not read. Stateless
 * answers go where RFC 3261 18.2.2 / RFC 3581 say (the packet's source address; its port with
 * rport), never retransmitted. Runs on the SIP thread inside pjsip; no Python.
 */
#include <string.h>

#include <pjsip.h>
#include <pjsua-lib/pjsua.h>

#include "methods.h"

#define ALLOW "INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, UPDATE, PRACK"

static pj_bool_t on_rx_request(pjsip_rx_data *rdata);

static pjsip_module g_mod = {
    NULL, NULL,
    { "mod-sipconf-methods", 19 },
    -1,
    PJSIP_MOD_PRIORITY_TSX_LAYER - 2,  /* before dtmfinfo's rewrite and the transactions */
    NULL, NULL, NULL, NULL,
    &on_rx_request,
    NULL, NULL, NULL, NULL,
};

static volatile unsigned long g_refused[METHODS_REASONS];

/* Methods RFC 3261 and its extensions define that the node does not serve: 405. */
static const char *const g_unserved[] = {
    "REGISTER", "SUBSCRIBE", "NOTIFY", "PUBLISH", "MESSAGE", "REFER", NULL,
};
/* Methods the node serves (pjsua and its dialogs answer them). */
static const char *const g_served[] = {
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "PRACK", NULL,
};
/* INFO bodies pjsua reads (digits; a video key-frame request it answers itself). */
static const char *const g_info_types[] = {
    "dtmf-relay", "dtmf", "media_control+xml", NULL,
};

static int in_list(const pj_str_t *name, const char *const *list)
{
    for (int i = 0; list[i]; i++)
        if (pj_stricmp2(name, list[i]) == 0)
            return 1;
    return 0;
}

static pj_bool_t refuse(pjsip_rx_data *rdata, int code, enum methods_reason why,
                        const char *hname, const char *hvalue)
{
    pjsip_endpoint *endpt = pjsua_get_pjsip_endpt();
    pjsip_hdr hdrs;
    pj_list_init(&hdrs);
    if (hname) {
        pj_str_t n = pj_str((char *)hname), v = pj_str((char *)hvalue);
        pjsip_generic_string_hdr *h =
            pjsip_generic_string_hdr_create(rdata->tp_info.pool, &n, &v);
        if (h)
            pj_list_push_back(&hdrs, h);
    }
    /* pjsip's response address: the source IP ("received"), the source port with rport */
    if (pjsip_endpt_respond_stateless(endpt, rdata, code, NULL, &hdrs, NULL) == PJ_SUCCESS)
        g_refused[why]++;
    return PJ_TRUE;  /* answered: nothing else sees it */
}

static pj_bool_t on_rx_request(pjsip_rx_data *rdata)
{
    pjsip_msg *msg = rdata->msg_info.msg;
    const pjsip_method *m = &msg->line.req.method;
    const pj_str_t *name = &m->name;
    int in_dialog = rdata->msg_info.to && rdata->msg_info.to->tag.slen > 0;

    if (m->id == PJSIP_ACK_METHOD)
        return PJ_FALSE;  /* never answered */
    if (in_list(name, g_served)) {
        if (m->id == PJSIP_OTHER_METHOD && pj_stricmp2(name, "INFO") == 0 && in_dialog &&
            msg->body && msg->body->len > 0 &&
            (pj_stricmp2(&msg->body->content_type.type, "application") != 0 ||
             !in_list(&msg->body->content_type.subtype, g_info_types)))
            return refuse(rdata, PJSIP_SC_UNSUPPORTED_MEDIA_TYPE, METHODS_INFO_BODY, "Accept",
                          "application/dtmf-relay, application/dtmf");
        if (!in_dialog && (pj_stricmp2(name, "INFO") == 0 || pj_stricmp2(name, "UPDATE") == 0 ||
                           pj_stricmp2(name, "PRACK") == 0))
            return refuse(rdata, PJSIP_SC_CALL_TSX_DOES_NOT_EXIST, METHODS_NO_DIALOG, NULL,
                          NULL);
        return PJ_FALSE;
    }
    if (in_list(name, g_unserved)) {
        if (in_dialog && (pj_stricmp2(name, "SUBSCRIBE") == 0 ||
                          pj_stricmp2(name, "NOTIFY") == 0))
            return refuse(rdata, PJSIP_SC_BAD_EVENT, METHODS_EVENT, NULL, NULL);
        return refuse(rdata, PJSIP_SC_METHOD_NOT_ALLOWED, METHODS_NOT_ALLOWED, "Allow", ALLOW);
    }
    return refuse(rdata, PJSIP_SC_NOT_IMPLEMENTED, METHODS_UNKNOWN, "Allow", ALLOW);
}

int methods_install(void)
{
    pjsip_endpoint *endpt = pjsua_get_pjsip_endpt();
    if (!endpt)
        return -1;
    if (g_mod.id != -1)
        return 0;
    return pjsip_endpt_register_module(endpt, &g_mod) == PJ_SUCCESS ? 0 : -1;
}

unsigned long methods_refused(int why)
{
    return (why >= 0 && why < METHODS_REASONS) ? g_refused[why] : 0;
}
