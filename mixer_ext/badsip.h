/* badsip: a 400 for malformed SIP requests (see badsip.c). */
#ifndef SIPCONF_BADSIP_H
#define SIPCONF_BADSIP_H
int sipguard_install(const char *host);
unsigned long sipguard_answered(void);
#endif
