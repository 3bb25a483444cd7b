# C-level interface of the pjsip guards (badsip.h, dtmfinfo.h, methods.h, admission.h) and of
# the TLS listener's certificate reload (tlsreload.h), cimported by sipguard.pyx.

cdef extern from "badsip.h" nogil:
    # 0, or -1 without a pjsip endpoint or when the transport hook could not be set
    int sipguard_install(const char *host)
    unsigned long sipguard_answered()

cdef extern from "dtmfinfo.h" nogil:
    # 0 (also when already installed), or -1 without a pjsip endpoint or when the module
    # could not be registered
    int dtmfinfo_install()
    unsigned long dtmfinfo_rewritten()

cdef extern from "methods.h" nogil:
    enum methods_reason:
        METHODS_NOT_ALLOWED
        METHODS_UNKNOWN
        METHODS_EVENT
        METHODS_INFO_BODY
        METHODS_NO_DIALOG
        METHODS_REASONS
    # 0 (also when already installed), or -1 without a pjsip endpoint or when the module
    # could not be registered
    int methods_install()
    unsigned long methods_refused(int why)

cdef extern from "admission.h" nogil:
    enum admission_reason:
        ADMISSION_FORBIDDEN
        ADMISSION_RATE
        ADMISSION_CAPACITY
        ADMISSION_NO_SRTP
        ADMISSION_REASONS
    int admission_install()
    int admission_trust(int family, const unsigned char *addr, int prefix)
    void admission_limits(unsigned max_calls, double rate, double burst, int retry_after,
                          int srtp_required)
    unsigned long admission_refused(int why)
    # pjsua's call slots in use: every INVITE dialog from its 100 Trying to its last
    # retransmission, what admission compares with --max-calls
    unsigned admission_calls()
    int admission_report(double interval, int *family, unsigned char *addr,
                         unsigned long *counts)

cdef extern from "tlsreload.h" nogil:
    # a pj_status_t: 0, or why the listener could not take the new certificate
    int tlsreload_restart(int tp_id, const char *host, int port, const char *cert,
                          const char *key)
