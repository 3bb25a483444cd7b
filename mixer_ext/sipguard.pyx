# cython: language_level=3
"""SIP input guards: refuse new INVITEs from untrusted sources, past a source's call rate or
past the node's capacity before pjsua spends anything on them (admission.c), answer malformed
SIP requests with 400 (pjsip alone drops them silently; badsip.c), answer every request the
node does not serve (405/501/489/415/481, methods.c), and take SIP INFO digits as
application/dtmf too (dtmfinfo.c).

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
    with nogil:
        rc = methods_install()
    if rc != 0:
        raise RuntimeError("could not install the unserved-methods handler")
    with nogil:
        rc = admission_install()
    if rc != 0:
        raise RuntimeError("could not install the admission handler")


def admit(networks, unsigned max_calls, double rate, double burst, int retry_after,
          bint srtp_required=False) -> None:
    """What admission.c lets in: ``networks`` (ipaddress networks) may call, each source at
    most ``rate`` new calls a second (``burst`` at once), the node at most ``max_calls``;
    with ``srtp_required`` only offers of RTP/SAVP with SDES keys.
    Call once, on the SIP thread, after ``install``."""
    cdef bytes packed
    for net in networks:
        packed = net.network_address.packed
        if admission_trust(net.version, packed, net.prefixlen) != 0:
            raise ValueError(f"trust: too many networks (at most 64), at {net}")
    admission_limits(max_calls, rate, burst, retry_after, srtp_required)


def answered() -> int:
    """How many malformed requests got a 400."""
    return sipguard_answered()


ADMISSION = {"forbidden": ADMISSION_FORBIDDEN, "rate": ADMISSION_RATE,
             "capacity": ADMISSION_CAPACITY, "no_srtp": ADMISSION_NO_SRTP}


def sip_calls() -> int:
    """pjsua's call slots in use (also calls still being set up or torn down)."""
    return admission_calls()


def admission_counts() -> dict:
    """New INVITEs refused by admission.c, by reason."""
    return {name: admission_refused(why) for name, why in ADMISSION.items()}


def admission_reports(double interval) -> list:
    """Sources with refusals not reported for ``interval`` s: [(address, {reason: count})],
    each then reset (the caller logs one line per source per interval)."""
    import ipaddress
    cdef int family = 0
    cdef unsigned char addr[16]
    cdef unsigned long counts[ADMISSION_REASONS]
    out = []
    while admission_report(interval, &family, addr, counts):
        ip = ipaddress.ip_address(bytes(addr[:4] if family == 4 else addr[:16]))
        out.append((str(ip), {name: counts[why] for name, why in ADMISSION.items()
                              if counts[why]}))
    return out


REFUSED = {"method_not_allowed": METHODS_NOT_ALLOWED, "unknown_method": METHODS_UNKNOWN,
           "bad_event": METHODS_EVENT, "info_body": METHODS_INFO_BODY,
           "no_dialog": METHODS_NO_DIALOG}


def refused() -> dict:
    """Requests answered by methods.c, by reason (counters of the SIP thread)."""
    return {name: methods_refused(why) for name, why in REFUSED.items()}


def tls_reload(int tp_id, str host, int port, str cert, str key) -> int:
    """Restart the TLS listener ``tp_id`` with the certificate and key read again from their
    files (tlsreload.c); a pj_status_t, 0 when it took them. On the SIP thread."""
    bh, bc, bk = host.encode(), cert.encode(), key.encode()
    cdef const char *h = bh
    cdef const char *c = bc
    cdef const char *k = bk
    cdef int rc
    with nogil:  # pjsip's transport manager lock
        rc = tlsreload_restart(tp_id, h, port, c, k)
    return rc
