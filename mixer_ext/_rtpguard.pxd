# C-level interface of the strict-media transport adapter (rtpguard.h), cimported by
# streams.pyx.

cdef extern from "rtpguard.h" nogil:
    enum rtpguard_counter:
        RTPGUARD_FOREIGN_RTP
        RTPGUARD_FOREIGN_RTCP
        RTPGUARD_LEARNED
        RTPGUARD_RELATCHED
        RTPGUARD_COUNTERS
    ctypedef struct pjmedia_transport:
        pass
    void rtpguard_configure(unsigned relatch_ms, unsigned learn)
    pjmedia_transport *rtpguard_wrap(pjmedia_transport *base, int close_member)
    unsigned long rtpguard_count(int which)
