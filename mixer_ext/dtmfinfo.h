/* dtmfinfo: accept SIP INFO application/dtmf as well as dtmf-relay (see dtmfinfo.c). */
#ifndef SIPCONF_DTMFINFO_H
#define SIPCONF_DTMFINFO_H
int dtmfinfo_install(void);
unsigned long dtmfinfo_rewritten(void);
#endif
