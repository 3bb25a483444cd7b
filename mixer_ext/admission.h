/* admission: trust, per-source rate, capacity and SRTP policy checks on new INVITEs (see
 * admission.c). */
#ifndef SIPCONF_ADMISSION_H
#define SIPCONF_ADMISSION_H
enum admission_reason {
    ADMISSION_FORBIDDEN,  /* 403: source not in the trusted networks */
    ADMISSION_RATE,       /* 503: the source's new-call rate */
    ADMISSION_CAPACITY,   /* 503: --max-calls or the RTP ports */
    ADMISSION_NO_SRTP,    /* 488: --srtp required and the offer is plain RTP */
    ADMISSION_REASONS
};
int admission_install(void);
/* family 4 (addr: 4 bytes) or 6 (16 bytes); 0, or -1 if the table is full or it is bad */
int admission_trust(int family, const unsigned char *addr, int prefix);
void admission_limits(unsigned max_calls, double rate, double burst, int retry_after,
                      int srtp_required);
unsigned long admission_refused(int why);
unsigned admission_calls(void);
/* One source with refusals not reported for ``interval`` seconds: 1 and its figures (then
 * reset), or 0 if there is none. */
int admission_report(double interval, int *family, unsigned char addr[16],
                     unsigned long counts[ADMISSION_REASONS]);
#endif
