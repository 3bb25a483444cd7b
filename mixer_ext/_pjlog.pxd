# C-level interface of the pjlib log ring (pjlog.h).
from libc.stdint cimport uint64_t

cdef extern from "pjlog.h" nogil:
    enum:
        PJLOG_SLOTS
        PJLOG_TEXT_MAX
    void pjlog_install(int level, unsigned decor)
    int pjlog_pop(int *level, char *buf, int cap)
    uint64_t pjlog_dropped()
