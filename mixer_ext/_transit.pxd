# C-level interface of the transit jitter measure (transit.h), for mixer.pyx (tests).
from libc.stdint cimport int32_t, int64_t, uint32_t

cdef extern from "transit.h" nogil:
    ctypedef struct transit:
        pass
    ctypedef struct transit_view:
        int64_t newest_ns
        int32_t newest_us
        int32_t target_us
        int32_t packet_us
        unsigned count
        unsigned steps
        uint32_t newest_ts
    int64_t transit_earliest_ns(const transit_view *v, uint32_t ts)
    void transit_set_pct(unsigned pct)
    unsigned transit_pct()
    void transit_configure(transit *t, unsigned pt, unsigned rate)
    void transit_on_rtp(transit *t, const void *pkt, size_t size, int64_t now_ns)
    int transit_read(transit *t, transit_view *v)
