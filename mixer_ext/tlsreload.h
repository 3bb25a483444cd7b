#ifndef SIPCONF_TLSRELOAD_H
#define SIPCONF_TLSRELOAD_H

/* Read the certificate and key of pjsua transport ``tp_id`` (a TLS listener bound to
 * host:port) again from their files and restart its listener with them: new connections get
 * the new certificate, established ones keep theirs. Returns a pj_status_t (0 on success);
 * on failure the listener keeps serving with what it had if pjsip could not close it yet. */
int tlsreload_restart(int tp_id, const char *host, int port, const char *cert,
                      const char *key);

#endif
