# cython: language_level=3
"""SIP input guards: answer malformed SIP requests with 400 (pjsip alone drops them
silently; badsip.c), and take SIP INFO digits as application/dtmf too (dtmfinfo.c).

It lives in this package because it is C linked against the project's pjproject, like the
stream engine. Call ``install`` on the SIP thread after pjsua's libInit.
"""

from mixer_ext._sipguard cimport *


def install(str host="sipconf") -> None:
    b = host.encode()
    cdef const char *h = b
    cdef int rc
    # Both take pjsip locks (the transport manager's, the endpoint's module lock, which pjsip
    # holds while it runs callbacks into Python): never wait for them with the GIL.
    with nogil:
        rc = sipguard_install(h)
    if rc != 0:
        raise RuntimeError("could not install the malformed-SIP handler")
    with nogil:
        rc = dtmfinfo_install()
    if rc != 0:
        raise RuntimeError("could not install the SIP INFO DTMF handler")


def answered() -> int:
    """How many malformed requests got a 400."""
    return sipguard_answered()
