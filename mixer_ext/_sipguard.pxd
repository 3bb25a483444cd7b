# C-level interface of the pjsip guards (badsip.h, dtmfinfo.h), cimported by sipguard.pyx.

cdef extern from "badsip.h" nogil:
    # 0, or -1 without a pjsip endpoint or when the transport hook could not be set
    int sipguard_install(const char *host)
    unsigned long sipguard_answered()

cdef extern from "dtmfinfo.h" nogil:
    # 0 (also when already installed), or -1 without a pjsip endpoint or when the module
    # could not be registered
    int dtmfinfo_install()
    unsigned long dtmfinfo_rewritten()
