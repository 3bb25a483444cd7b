"""What pjsua2 calls us for: an incoming call, a registration's outcome, call and stream state.

pjsua2 reports through virtual methods on its Account and Call classes; the subclasses here only
forward to the handlers below (and log, never raise: an exception in a callback must not kill the
SIP thread). The handlers run on the SIP thread (pjsua2 calls them from ``libHandleEvents``, or
synchronously inside ``answer``/``hangup``) and tell the node through engine events.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING

from sipconf.core import sipmsg
from sipconf.core.access import source_ip
from sipconf.core.codecs import no_common_codec_warning
from sipconf.core.registration import dialled_user
from sipconf.engine import CallEnded, DialProgress, Dtmf, IncomingCall, MediaUp
from sipconf.sip.records import CallRec

if TYPE_CHECKING:
    from sipconf.sip.thread import SipThread

log = logging.getLogger("sipconf.sip")


def refuse(t: SipThread, rec: CallRec, code: int, reason: str, warning: str,
           outcome: str, retry_after: int = 0) -> None:
    """A final error before the trio side ever hears of the call (counted for /metrics)."""
    rec.offer_ok = False
    t.refused[outcome] = t.refused.get(outcome, 0) + 1
    try:
        rec.call.answer(t.op(code, reason, warning, retry_after))
    except t.pj.Error:
        pass


def incoming(t: SipThread, acc, prm) -> None:
    """A new INVITE that admission.c let in (trusted source, within its call rate and the
    node's capacity): refused here (503 too many calls from its source, 488 no codec, 400
    unreadable) or rung (180) and reported as IncomingCall."""
    pj = t.pj
    call = t.call_cls(t, acc, prm.callId)
    src_ip = source_ip(prm.rdata.srcAddress)
    rec = CallRec(uuid=str(uuid.uuid4()), call=call, src_ip=src_ip)
    call.rec = rec
    t.calls[rec.uuid] = rec
    up = sum(1 for r in t.calls.values() if r.src_ip == src_ip and not r.ended)
    if up > t.config.max_calls_per_source:
        log.warning("call %s from %s refused: %d calls up from there (--max-calls-per-source) "
                    "-> 503", rec.uuid, src_ip, up - 1)
        refuse(t, rec, 503, "Service Unavailable", "too many calls from this source",
               "source-busy", t.config.retry_after)
        return
    msg = prm.rdata.wholeMsg
    try:
        info = call.getInfo()
        _, ruri = sipmsg.request_line(msg)
        to_user = dialled_user(sipmsg.uri_user(ruri), sipmsg.uri_user(info.localUri),
                               t.own_users)
        # From as the INVITE wrote it: pjsua's remoteUri drops the port (a From URI's port
        # is not printed by default), and the web app gets the caller's address whole
        from_hdr = sipmsg.header(msg, "from") or info.remoteUri
        custom = sipmsg.custom_headers(msg)
        body = sipmsg.session_description(msg)
        if body.strip():
            offer = sipmsg.parse_offer(body)
            if not offer.has_audio or not offer.supported:
                log.info("call %s: no codec in common (offered: %s) -> 488", rec.uuid,
                         ",".join(offer.codecs) or "none")
                refuse(t, rec, 488, "Not Acceptable Here", no_common_codec_warning(),
                       "no-codec")
                return
        call.answer(t.op(180))
    except (ValueError, pj.Error) as exc:
        reason = exc.reason if isinstance(exc, pj.Error) else str(exc)
        log.warning("call %s: bad INVITE (%s) -> 400", rec.uuid, reason)
        refuse(t, rec, 400, "Bad Request", reason, "bad-request")
        return
    t.emit(IncomingCall(
        uuid=rec.uuid,
        from_uri=sipmsg.bare_uri(from_hdr),
        to_uri=ruri,
        to_user=to_user,
        caller_name=sipmsg.display_name(from_hdr),
        sip_call_id=info.callIdString,
        sip_headers=custom,
    ))


def reg_state(t: SipThread, code: int, reason: str, expires: int) -> None:
    """The PBX answered a REGISTER: note it, and on failure schedule the retry (with backoff)."""
    target = t.config.register_target
    if t.unregistering:  # the PBX's answer to our unregistration at shutdown
        t.registrar.registered = False
        log.info("unregistered from %s (%d %s)", target.registrar_uri, code, reason)
        return
    was = t.registrar.registered
    delay = t.registrar.outcome(code, reason, expires)
    if delay is None:
        if not was:
            log.info("registered %s at %s (%d %s, expires %d s)", target.uri,
                     target.registrar_uri, code, reason, expires)
        return
    log.warning("registration of %s at %s failed: %d %s; retrying in %g s", target.uri,
                target.registrar_uri, code, reason, delay)
    t.reg_retry_at = time.monotonic() + delay


def call_state(t: SipThread, rec: CallRec) -> None:
    """A taken call's end (out of the mixer, CallEnded); a dial-out's progress too."""
    pj = t.pj
    try:
        info = rec.call.getInfo()
    except pj.Error:
        return
    if rec.outbound and not rec.ended:
        dial_progress(t, rec, info)
    if info.state != pj.PJSIP_INV_STATE_DISCONNECTED or rec.ended:
        return
    rec.ended = True
    t.media.detach(rec)
    t.media.unplace(rec)
    t.calls.pop(rec.uuid, None)
    t.drop_call(rec)
    if rec.offer_ok:
        t.emit(CallEnded(rec.uuid, info.lastStatusCode, info.lastReason, rec.media_timeout))


def dial_progress(t: SipThread, rec: CallRec, info) -> None:
    """A dial-out rings (180/183, reported once) or is answered: then it is placed in the
    mixer like an answered call and timed for RTP."""
    pj = t.pj
    if info.state == pj.PJSIP_INV_STATE_EARLY and not rec.rang:
        rec.rang = True
        t.emit(DialProgress(rec.uuid, "ringing", info.lastStatusCode, info.callIdString))
    elif info.state == pj.PJSIP_INV_STATE_CONFIRMED and not rec.answered:
        rec.answered = True
        rec.rx_at = time.monotonic()
        t.media.place(rec)
        t.emit(DialProgress(rec.uuid, "answered", info.lastStatusCode, info.callIdString))


def stream_created(t: SipThread, rec: CallRec, prm) -> None:
    """The call's stream goes to the mixer; the conference bridge gets a placeholder port."""
    leg = t.media.new_leg(rec, prm.stream)
    if leg is None:
        return
    prm.pPort = leg.placeholder
    prm.destroyPort = False
    t.media.attach(rec, leg)
    t.emit(MediaUp(rec.uuid, leg.stats()["rate"]))


def stream_destroyed(t: SipThread, rec: CallRec) -> None:
    t.media.detach(rec)


def media_transport(t: SipThread, prm) -> None:
    """With strict_rtp, the call's media transport (SRTP over UDP) is wrapped in rtpguard.c:
    RTP and RTCP taken only from the call's source (README, "Strict media")."""
    if t.config.strict_rtp == "on":
        prm.mediaTp = t.media.streams.rtpguard_wrap_transport(prm.mediaTp, prm.flags & 1)


def account_class(pj):
    """pjsua2's Account, reporting to the SIP thread (the class is made once pjsua2 is
    imported, on that thread)."""

    class _Account(pj.Account):
        def __init__(self, sip: SipThread):
            super().__init__()
            self.sip = sip

        def onIncomingCall(self, prm):  # noqa: N802 - pjsua2's name
            try:
                incoming(self.sip, self, prm)
            except Exception:  # noqa: BLE001 - never let a callback kill the SIP thread
                log.exception("incoming call handler failed")

        def onRegState(self, prm):  # noqa: N802
            try:
                reg_state(self.sip, prm.code, prm.reason, prm.expiration)
            except Exception:  # noqa: BLE001
                log.exception("registration handler failed")

    return _Account


def call_class(pj):
    """pjsua2's Call, reporting to the SIP thread; ``rec`` links it to its CallRec."""

    class _Call(pj.Call):
        def __init__(self, sip: SipThread, acc, call_id: int):
            super().__init__(acc, call_id)
            self.sip = sip
            self.rec: CallRec | None = None

        def onCallState(self, prm):  # noqa: N802
            if self.rec is not None:
                try:
                    call_state(self.sip, self.rec)
                except Exception:  # noqa: BLE001
                    log.exception("call state handler failed")

        def onStreamCreated(self, prm):  # noqa: N802
            if self.rec is not None:
                try:
                    stream_created(self.sip, self.rec, prm)
                except Exception:  # noqa: BLE001
                    log.exception("stream handler failed")

        def onCreateMediaTransport(self, prm):  # noqa: N802
            try:
                media_transport(self.sip, prm)
            except Exception:  # noqa: BLE001
                log.exception("media transport handler failed")

        def onStreamDestroyed(self, prm):  # noqa: N802
            if self.rec is not None:
                stream_destroyed(self.sip, self.rec)

        def onDtmfDigit(self, prm):  # noqa: N802
            if self.rec is not None:
                source = "info" if prm.method == pj.PJSUA_DTMF_METHOD_SIP_INFO else "rfc2833"
                self.sip.emit(Dtmf(self.rec.uuid, str(prm.digit).upper(), source,
                                   time.monotonic()))

    return _Call
