"""The commands the trio side sends the SIP thread, and how the SIP thread carries them out.

Each command is a small frozen dataclass; :data:`HANDLERS` maps its type to the function that
executes it on the SIP thread (``execute``). A handler returns the async method's result, or
raises (the exception is handed back to the awaiting caller). "The call is already gone" is an
answer (False/None), not an error.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mixer_ext import sipguard
from sipconf.engine import CallEnded
from sipconf.sip import pjlog
from sipconf.sip.records import CallRec

if TYPE_CHECKING:
    from sipconf.sip.thread import SipThread

log = logging.getLogger("sipconf.sip")
PJMEDIA_RTP_EREMNORFC2833 = 220107  # pjmedia/errno.h: the peer did not offer telephone-event
DIGIT_MS = 250  # an RFC 2833 digit's time on the stream (pjmedia: 200 ms and its end packets)


@dataclass(frozen=True)
class Answer:
    call_uuid: str
    code: int = 200
    reason: str = ""
    warning: str = ""


@dataclass(frozen=True)
class Hangup:
    call_uuid: str
    code: int = 0
    reason: str = ""


@dataclass(frozen=True)
class Dial:
    call_uuid: str
    to_uri: str
    local_uri: str = ""  # From (the account's own when empty)
    caller_name: str = ""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Pipe:
    call_uuid: str
    want: int  # mixer_ext.streams.IN | OUT


@dataclass(frozen=True)
class Unpipe:
    call_uuid: str


@dataclass(frozen=True)
class AddAgent:
    call_uuid: str


@dataclass(frozen=True)
class Join:
    call_uuid: str
    room_key: str
    muted: bool = False
    deaf: bool = False


@dataclass(frozen=True)
class Leave:
    call_uuid: str
    room_key: str  # only out of this room: the call may have gone on to another one


@dataclass(frozen=True)
class SetMember:
    call_uuid: str
    muted: bool
    deaf: bool = False
    volume_in: float = 0.0  # dB
    volume_out: float = 0.0
    denoise: bool = False
    agc: bool = False


@dataclass(frozen=True)
class SetCoach:
    call_uuid: str
    private: bool  # heard by nobody but target
    target: str | None


@dataclass(frozen=True)
class PlayToCall:
    call_uuid: str
    clip: Any  # sounds.Clip
    loops: int = 1


@dataclass(frozen=True)
class StopCallSound:
    call_uuid: str


@dataclass(frozen=True)
class PlayToRoom:
    room_key: str
    clip: Any  # sounds.Clip
    loops: int = 1


@dataclass(frozen=True)
class StopRoomSound:
    sound_id: int


@dataclass(frozen=True)
class SendDigits:
    call_uuid: str
    digits: str
    tones: bool = True


@dataclass(frozen=True)
class TapRoom:
    room_key: str
    tracks: int = 0  # per-member tracks too (at most ENG_MAX_TRACKS)


@dataclass(frozen=True)
class Untap:
    tap: Any  # mixer_ext.streams.Tap


@dataclass(frozen=True)
class Stats:
    rtp: bool = False


@dataclass(frozen=True)
class ReloadTls:
    """The TLS listener takes these certificate and key files (read again: SIGHUP)."""

    cert: str
    key: str


@dataclass(frozen=True)
class Stop:
    """Not a command with an answer: the SIP thread hangs up every call and ends its loop."""

    grace: float


Command = (Answer | Hangup | Dial | Pipe | Unpipe | AddAgent | Join | Leave | SetMember
           | SetCoach | PlayToCall | StopCallSound | PlayToRoom | StopRoomSound | SendDigits
           | TapRoom | Untap | Stats | ReloadTls)


def name(cmd: object) -> str:
    """``SetMember(...)`` -> ``set_member`` (for messages)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", type(cmd).__name__).lower()


# --- execution, on the SIP thread ---------------------------------------------------------------


def _live(t: SipThread, call_uuid: str) -> CallRec | None:
    rec = t.calls.get(call_uuid)
    return None if rec is None or rec.ended else rec


def _answer(t: SipThread, c: Answer) -> bool:
    rec = _live(t, c.call_uuid)
    if rec is None or rec.agent:
        return rec is not None
    rec.call.answer(t.op(c.code, c.reason, c.warning))
    if c.code == 200:
        rec.answered = True
        rec.rx_at = time.monotonic()
        t.media.place(rec)
    return True


def _hangup(t: SipThread, c: Hangup) -> bool:
    rec = _live(t, c.call_uuid)
    if rec is None:
        return False
    if rec.agent:
        end_agent(t, rec, "hung up by the node")
        return True
    t.media.detach(rec)
    rec.call.hangup(t.op(c.code, c.reason))
    return True


def _dial(t: SipThread, c: Dial) -> str | None:
    """An outbound INVITE from the registered account (its digest credentials answer the
    PBX's challenge) or, without ``--register``, the local one. None: sent; else why not."""
    pj = t.pj
    call = t.call_cls(t, t.reg if t.reg is not None else t.acc, pj.PJSUA_INVALID_ID)
    rec = CallRec(uuid=c.call_uuid, call=call, outbound=True)
    call.rec = rec
    prm = pj.CallOpParam(True)
    prm.opt.audioCount = 1
    prm.opt.videoCount = 0
    if c.local_uri:
        prm.txOption.localUri = f'"{c.caller_name}" <{c.local_uri}>' if c.caller_name \
            else c.local_uri
    for hname, value in c.headers:
        h = pj.SipHeader()
        h.hName, h.hValue = hname, value
        prm.txOption.headers.append(h)
    t.calls[rec.uuid] = rec
    try:
        call.makeCall(c.to_uri, prm)
    except pj.Error as exc:
        rec.ended = True
        t.calls.pop(rec.uuid, None)
        t.drop_call(rec)
        log.warning("dial-out %s to %s not sent: %s", c.call_uuid, c.to_uri, exc.reason)
        return exc.reason
    log.info("dial-out %s: INVITE to %s%s", c.call_uuid, c.to_uri,
             " through the registered account" if t.reg is not None else "")
    return None


def _pipe(t: SipThread, c: Pipe) -> Any:
    rec = _live(t, c.call_uuid)
    return None if rec is None else t.media.pipe(rec, c.want)


def _unpipe(t: SipThread, c: Unpipe) -> None:
    rec = t.calls.get(c.call_uuid)
    if rec is not None and not rec.agent:
        t.media.unpipe(rec)


def _add_agent(t: SipThread, c: AddAgent) -> Any:
    return t.media.add_agent(c.call_uuid)


def end_agent(t: SipThread, rec: CallRec, reason: str) -> None:
    """An agent member's end: out of the mixer, and CallEnded like a call's BYE."""
    rec.ended = True
    t.media.detach(rec)
    t.media.unplace(rec)
    t.calls.pop(rec.uuid, None)
    t.emit(CallEnded(rec.uuid, 200, reason))


def _join(t: SipThread, c: Join) -> bool:
    rec = _live(t, c.call_uuid)
    if rec is None:
        return False
    t.media.join(rec, c.room_key, c.muted, c.deaf)
    return True


def _leave(t: SipThread, c: Leave) -> bool:
    rec = t.calls.get(c.call_uuid)
    if rec is None or rec.room_key is None or rec.room_key != c.room_key:
        return False
    t.media.leave(rec)
    return True


def _set_member(t: SipThread, c: SetMember) -> bool:
    rec = t.calls.get(c.call_uuid)
    if rec is None:
        return False
    t.media.set_member(rec, c.muted, c.deaf, c.volume_in, c.volume_out, c.denoise, c.agc)
    return True


def _set_coach(t: SipThread, c: SetCoach) -> bool:
    rec = t.calls.get(c.call_uuid)
    if rec is None:
        return False
    t.media.set_coach(rec, c.private, c.target)
    return True


def _play_to_call(t: SipThread, c: PlayToCall | StopCallSound) -> bool:
    rec = _live(t, c.call_uuid)
    if rec is None:
        return False
    if isinstance(c, StopCallSound):
        t.media.play_to_call(rec, None, 0)
    else:
        t.media.play_to_call(rec, c.clip, c.loops)
    return True


def _play_to_room(t: SipThread, c: PlayToRoom) -> int | None:
    return t.media.play_to_room(c.room_key, c.clip, c.loops)


def _stop_room_sound(t: SipThread, c: StopRoomSound) -> bool:
    return t.media.stop_room_sound(c.sound_id)


def _send_digits(t: SipThread, c: SendDigits) -> bool:
    """RFC 2833 events while the peer takes them; otherwise (if asked) in-band tones.
    Only "no telephone-event negotiated" turns a call to tones for good: any other refusal
    (a full digit queue, media being renegotiated) costs this send alone."""
    rec = _live(t, c.call_uuid)
    if rec is None or rec.leg is None:
        log.warning("call %s: digits %s not sent: the call has no media", c.call_uuid, c.digits)
        return False
    if rec.rfc2833 is not False:
        try:
            rec.leg.own_encoder(DIGIT_MS * len(c.digits) + 1000)  # only its own stream sends them
            rec.call.dialDtmf(c.digits)
            rec.rfc2833 = True
            log.info("call %s: sent digits %s as RFC 2833 events", c.call_uuid, c.digits)
            return True
        except t.pj.Error as exc:
            if exc.status == PJMEDIA_RTP_EREMNORFC2833:
                rec.rfc2833 = False
            log.info("call %s: digits %s not sent as RFC 2833 events (%s)", c.call_uuid,
                     c.digits, exc.reason)
    if c.tones:
        t.media.relay_tones(rec, c.digits)
        log.info("call %s: sent digits %s as in-band tones", c.call_uuid, c.digits)
    return True


def _tap_room(t: SipThread, c: TapRoom) -> Any:
    return t.media.tap_room(c.room_key, c.tracks)


def _untap(t: SipThread, c: Untap) -> None:
    c.tap.detach()


def _rtp_stats(t: SipThread, rec: CallRec) -> dict | None:
    """A leg's RTP figures (pjsua's stream statistics) and its jitter buffer's: frames it
    had to conceal (a packet lost or too late: the codec's PLC filled in), frames it
    discarded (too late, or to bring its delay down), reads that found it empty (before the
    first packet, or a packet late: the codec's concealment played), its delay now; and the
    node's playout point (legs.c): how long after its earliest possible arrival a packet is
    played, and the lateness the buffer waits for (None until 50 packets came); the loss its
    Opus encoder codes in-band FEC for (None: not Opus, or no report from the peer yet)."""
    try:
        stat = rec.call.getStreamStat(0)
    except t.pj.Error:
        return None
    st, jb = stat.rtcp, stat.jbuf
    rx = st.rxStat
    mix = rec.leg.stats() if rec.leg is not None else {}
    return {"rx_packets": rx.pkt, "rx_lost": rx.loss, "rx_discarded": rx.discard,
            "jitter_s": rx.jitterUsec.last / 1e6, "jitter_max_s": rx.jitterUsec.max / 1e6,
            "peer_lost": st.txStat.loss,  # what the caller's RTCP reports says it lost
            "concealed": jb.lost, "jb_discarded": jb.discard, "jb_empty": jb.empty,
            "jb_delay_s": jb.avgDelayMsec / 1e3, "jb_delay_max_s": jb.maxDelayMsec / 1e3,
            "playout_s": mix.get("playout_s"), "target_s": mix.get("target_s"),
            "delay_steps": mix.get("delay_steps"),
            "fec_pct": mix.get("fec_pct"), "fec_recovered": mix.get("fec_frames")}


def _refused(t: SipThread) -> dict[str, int]:
    """Calls refused, by outcome: by the callbacks, and before pjsua by admission.c."""
    out = dict(t.refused)
    for why, n in sipguard.admission_counts().items():
        key = {"rate": "rate-limited", "no_srtp": "no-srtp"}.get(why, why)
        out[key] = out.get(key, 0) + n
    return out


def _stats(t: SipThread, c: Stats) -> dict:
    """The mixer's figures; with ``rtp``, each leg's RTP statistics from pjsua too."""
    out = {"calls": len(t.calls), "sip_calls": sipguard.sip_calls(), **t.media.stats(t.calls),
           "refused": _refused(t),
           "log_dropped": pjlog.dropped(),
           "rtp_guard": t.media.streams.rtpguard_counts(),
           "sip_refused": {**sipguard.refused(), "malformed": sipguard.answered()},
           "registration": None if t.reg is None else {
               "registered": t.registrar.registered,
               "failures": t.registrar.attempts_failed,
               "last_code": t.registrar.last_code,
               "expires": t.registrar.expires}}
    if c.rtp:
        out["rtp"] = {u: st for u, r in t.calls.items()
                      if r.leg is not None and r.answered and not r.ended and not r.agent
                      and (st := _rtp_stats(t, r)) is not None}
    return out


def _reload_tls(t: SipThread, c: ReloadTls) -> str | None:
    """None when the TLS listener took the files again, else why not (it keeps listening
    with the old ones when pjsip could not close it yet)."""
    cfg = t.config
    if t.tls_id is None:
        return "the node has no SIP TLS listener (sip_tls_port)"
    status = sipguard.tls_reload(t.tls_id, cfg.sip_host, cfg.sip_tls_port, c.cert, c.key)
    return None if status == 0 else f"{t.ep.utilStrError(status)} (status {status})"


HANDLERS: dict[type, Callable[[SipThread, Any], Any]] = {
    Answer: _answer,
    Hangup: _hangup,
    Dial: _dial,
    Pipe: _pipe,
    Unpipe: _unpipe,
    AddAgent: _add_agent,
    Join: _join,
    Leave: _leave,
    SetMember: _set_member,
    SetCoach: _set_coach,
    PlayToCall: _play_to_call,
    StopCallSound: _play_to_call,
    PlayToRoom: _play_to_room,
    StopRoomSound: _stop_room_sound,
    SendDigits: _send_digits,
    TapRoom: _tap_room,
    Untap: _untap,
    Stats: _stats,
    ReloadTls: _reload_tls,
}


def execute(t: SipThread, cmd: Command) -> Any:
    """Carry out ``cmd`` on the SIP thread; its result (or its exception) is the caller's."""
    return HANDLERS[type(cmd)](t, cmd)
