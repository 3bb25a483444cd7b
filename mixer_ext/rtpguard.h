/* Strict media: a pjmedia transport adapter that takes a call's RTP and RTCP only from its
 * caller (issue 15, "RTP bleed").
 *
 * Wrapped around each call's media transport (pjsua's on_create_media_transport), it sits
 * between the stream and the transport below it (SRTP over UDP) and decides, per packet, in the
 * transport's receive callback, with no lock and no Python:
 *
 *   - until the call's source is known (after each attach: the call's start, a re-INVITE that
 *     recreates the stream) it is learned: a packet from the address the SDP named (or from the
 *     source already latched before the re-INVITE) latches at once; any other source latches
 *     after `learn` packets in sequence (same SSRC, consecutive sequence numbers) with no
 *     other source in between (symmetric RTP, for callers behind NAT);
 *   - then only that source is taken. Another is taken (and the node's RTP goes there) only
 *     once the latched one has been silent for `relatch_ms` and the new one carries the SSRC
 *     last seen from the latched one;
 *   - RTCP is taken from the latched source's IP (or the SDP's RTCP address); the node's own
 *     RTCP goes to the first RTCP source taken since the latch, else to the latched RTP
 *     address's port + 1 (the RTP port itself with rtcp-mux), never where pjmedia's own 3-packet
 *     RTCP switch would send it;
 *   - everything else is dropped and counted.
 * pjmedia's stream never sees a packet's source (so its own 10-packet NAT switch never runs);
 * the UDP transport switches its RTP destination only when this adapter says so (rem_switch). */
#ifndef SIPCONF_RTPGUARD_H
#define SIPCONF_RTPGUARD_H

#include <pjmedia.h>

#include "transit.h"

enum rtpguard_counter {
    RTPGUARD_FOREIGN_RTP,    /* RTP packets dropped: not from the call's source */
    RTPGUARD_FOREIGN_RTCP,   /* RTCP packets dropped: not from the call's source */
    RTPGUARD_LEARNED,        /* latches onto a source the SDP did not name (NAT) */
    RTPGUARD_RELATCHED,      /* changes of source after the old one went silent */
    RTPGUARD_COUNTERS
};

/* Node-wide settings, read by every guard on each decision (atomics; any thread). */
void rtpguard_configure(unsigned relatch_ms, unsigned learn);

/* `base` wrapped in a guard (closing `base` with it when close_member), or NULL when out of
 * memory. Called on the SIP thread, from on_create_media_transport. */
pjmedia_transport *rtpguard_wrap(pjmedia_transport *base, int close_member);

unsigned long rtpguard_count(int which);

/* Shared encoding (issue 19): a payload encoded once for several legs that hear the same mix
 * is sent on `tp` (a guard) as the next packet of the stream's own RTP: its SSRC and payload
 * type, the next sequence number and timestamp; the stream's own packets after it are
 * renumbered to go on from there, its sender reports adjusted. Called by the thread that
 * drives the stream's sending (its room's clock), between the stream's own packets.
 * rtpguard_own_sent: the stream's own packets so far, 0 until the timestamp step is known (two
 * audio packets in a row) or if `tp` is no guard; a shared packet needs it non-zero. */
unsigned rtpguard_own_sent(pjmedia_transport *tp);
pj_status_t rtpguard_send_shared(pjmedia_transport *tp, const void *payload, unsigned len);
/* DTX (Opus to a peer that asked usedtx=1): a frame the stream's timestamp runs over with no
 * packet, the next one marked. `shared`: the shared encoder's frame (the stream's own numbering
 * goes on from it, as after a shared packet); else the stream's own encoder sent nothing for the
 * frame it was given (rtpguard_sent did not move), so a shared packet after it is timed right. */
void rtpguard_skip(pjmedia_transport *tp, int shared);
unsigned rtpguard_sent(pjmedia_transport *tp);

/* CLOCK_MONOTONIC ns of the latest RTP packet the guard `tp` let through (0: none yet, or `tp`
 * is no guard); any thread. The room tick aligns its phase to its talker's arrivals (rooms.c). */
int64_t rtpguard_last_rx_ns(pjmedia_transport *tp);

/* Transit jitter (transit.h) of the RTP `tp` (a guard) lets through: payload type `pt` at RTP
 * clock `rate` (0: none), set when a stream attaches; the view: 1 when there is one. */
void rtpguard_measure(pjmedia_transport *tp, unsigned pt, unsigned rate);
int rtpguard_transit(pjmedia_transport *tp, transit_view *v);

#endif
