/* tlsreload: a new certificate for the SIP TLS listener without a restart of the node.
 *
 * pjsua2 has no call for it; pjsip has pjsip_tls_transport_restart2, which closes the
 * listening socket, loads the certificate files named in the settings it is given, and
 * listens again (established TLS connections are separate transports and are not touched).
 * The listener's factory is only reachable through pjsua's transport table (pjsua_internal.h).
 * Runs on the SIP thread (registered with pjlib); no Python.
 */
#include <string.h>

#include <pjsip.h>
#include <pjsua-lib/pjsua.h>
#include <pjsua-lib/pjsua_internal.h>

#include "tlsreload.h"

int tlsreload_restart(int tp_id, const char *host, int port, const char *cert,
                      const char *key)
{
#if defined(PJSIP_HAS_TLS_TRANSPORT) && PJSIP_HAS_TLS_TRANSPORT != 0
    pjsua_transport_data *tp;
    pjsip_tls_setting opt;
    pj_sockaddr local;
    pjsip_host_port a_name;
    pj_str_t h;
    pj_status_t st;

    if (tp_id < 0 || tp_id >= (int)PJ_ARRAY_SIZE(pjsua_var.tpdata))
        return PJ_EINVAL;
    tp = &pjsua_var.tpdata[tp_id];
    if (tp->data.ptr == NULL || (tp->type & ~PJSIP_TRANSPORT_IPV6) != PJSIP_TRANSPORT_TLS)
        return PJ_EINVAL;
    h = pj_str((char *)host);
    st = pj_sockaddr_init(pj_AF_INET(), &local, &h, (pj_uint16_t)port);
    if (st != PJ_SUCCESS)
        return st;
    pjsip_tls_setting_default(&opt);
    opt.cert_file = pj_str((char *)cert);
    opt.privkey_file = pj_str((char *)key);
    opt.proto = PJ_SSL_SOCK_PROTO_TLS1_2 | PJ_SSL_SOCK_PROTO_TLS1_3;  /* as pjsua.py asks */
    a_name.host = h;
    a_name.port = port;
    /* restart2 copies the settings into the listener's pool: the strings need not outlive it */
    return pjsip_tls_transport_restart2(tp->data.factory, &opt, &local, &a_name);
#else
    (void)tp_id; (void)host; (void)port; (void)cert; (void)key;
    return PJ_ENOTSUP;
#endif
}
