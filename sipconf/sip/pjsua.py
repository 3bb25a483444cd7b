"""How pjsua is configured: endpoint, media, transports, codecs, accounts.

Configuration only (what we ask of pjsua, and why); ``thread.SipThread.init`` calls these in
order on the SIP thread. Which codecs we take is not decided here but in
``sipconf.core.codecs``.
"""

from __future__ import annotations

import logging

from sipconf.config import NodeConfig
from sipconf.core.codecs import pjsua_priority
from sipconf.engine import EngineError
from sipconf.sip import pjlog

log = logging.getLogger("sipconf.sip")

UNREGISTER_WAIT_S = 1.0  # at shutdown, how long the PBX gets to confirm the unregistration


def init_log_writer_class(pj):
    """The log writer pjsua uses during ``libInit`` only (see :func:`endpoint_config`)."""

    class _InitLogWriter(pj.LogWriter):
        def write(self, entry):
            pjlog.line(entry.level, entry.msg)

    return _InitLogWriter


def endpoint_config(pj, cfg: NodeConfig, log_writer):
    """pjsua's EpConfig: no pjsua threads (we poll), our call limit and logging, 16 kHz mono
    20 ms media with no VAD or echo canceller, our jitter buffer bounds."""
    epc = pj.EpConfig()
    epc.uaConfig.threadCnt = 0
    epc.uaConfig.mainThreadOnly = False
    epc.uaConfig.maxCalls = cfg.max_calls
    epc.uaConfig.userAgent = cfg.user_agent
    epc.logConfig.level = cfg.pj_log_level
    epc.logConfig.consoleLevel = cfg.pj_log_level
    epc.logConfig.msgLogging = cfg.pj_log_level >= 4
    epc.logConfig.decor = pj.PJ_LOG_HAS_SENDER
    epc.logConfig.writer = log_writer
    mc = epc.medConfig
    mc.noVad = True
    mc.ecTailLen = 0
    mc.clockRate = 16000
    mc.sndClockRate = 16000
    mc.channelCount = 1
    mc.audioFramePtime = 20
    mc.ptime = 20
    mc.threadCnt = cfg.media_threads
    mc.jbInit = cfg.jb_init_ms
    mc.jbMinPre = cfg.jb_min_ms
    mc.jbMaxPre = min(cfg.jb_max_ms, cfg.jb_size_ms)
    mc.jbMax = cfg.jb_size_ms
    return epc


def create_transports(pj, ep, cfg: NodeConfig) -> int | None:
    """Listen for SIP on UDP (and TCP, TLS if asked); EngineError if an address is taken or
    the certificate cannot be used. Returns the TLS transport's id (for reloads), if any."""
    kinds = [("udp", pj.PJSIP_TRANSPORT_UDP, cfg.sip_port)]
    if cfg.sip_tcp:
        kinds.append(("tcp", pj.PJSIP_TRANSPORT_TCP, cfg.sip_port))
    if cfg.sip_tls_port:
        kinds.append(("tls", pj.PJSIP_TRANSPORT_TLS, cfg.sip_tls_port))
    tls_id = None
    for name, kind, port in kinds:
        tc = pj.TransportConfig()
        tc.port = port
        tc.boundAddress = cfg.sip_host
        if name == "tls":
            tls = tc.tlsConfig
            tls.certFile = cfg.tls_cert
            tls.privKeyFile = cfg.tls_key
            # TLS 1.2 and 1.3, nothing older (tlsreload.c asks the same)
            tls.proto = pj.PJ_SSL_SOCK_PROTO_TLS1_2 | pj.PJ_SSL_SOCK_PROTO_TLS1_3
            tls.verifyClient = False  # callers are admitted by address and limits, not certs
        try:
            tid = ep.transportCreate(kind, tc)
        except pj.Error as exc:
            raise EngineError(
                f"cannot listen for SIP on {name} {cfg.sip_host}:{port}: {exc.reason}"
            ) from None
        if name == "tls":
            tls_id = tid
    return tls_id


def set_codecs(pj, ep, cfg: NodeConfig) -> None:
    """Our codecs at their priorities, every other one off; Opus mono, coded as
    ``--opus-application`` says."""
    for ci in ep.codecEnum2():
        ep.codecSetPriority(ci.codecId, pjsua_priority(ci.codecId))
    try:
        # usedtx=1 in our fmtp: a peer stops sending in its pauses, so a quiet Opus member
        # costs the node almost nothing to receive and decode (a pause is no loss: see the
        # stream.c patch in scripts/build-pjproject.sh). What we send follows the peer's own
        # fmtp (pjmedia codes DTX only to a peer that asks usedtx=1).
        for ci in ep.codecEnum2():
            if ci.codecId.lower().startswith("opus/"):
                cp = ep.codecGetParam(ci.codecId)
                cp.setting.vad = True
                ep.codecSetParam(ci.codecId, cp)
        oc = ep.getCodecOpusConfig()
        # At the room's 16 kHz: no resampler on the leg, and the answer's maxplaybackrate=16000
        # asks the peer for wideband, cheaper to decode. (Fullband bought nothing a 16 kHz mix
        # has; an earlier "SILK smears a mix at 16 kHz" was pjmedia opening encoders at
        # OPUS_AUTO, 19 kbit/s at 16 kHz, fixed in scripts/build-pjproject.sh.)
        oc.sample_rate = 16000
        oc.channel_cnt = 1
        oc.frm_ptime = 20
        oc.bit_rate = cfg.opus_bitrate
        ep.setCodecOpusConfig(oc)
    except pj.Error as exc:
        log.warning("opus unavailable: %s", exc.reason)


def account_config(pj, cfg: NodeConfig):
    """The local account (``sip:sipconf@host:port``) that takes calls, and its RTP ports."""
    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:sipconf@{cfg.sip_host}:{cfg.sip_port}"
    acfg.regConfig.registerOnAdd = False
    mt = acfg.mediaConfig.transportConfig
    mt.port = cfg.rtp_port_min
    # pjsua takes RTP ports from [port, port + portRange) and RTCP one above: stop one short,
    # so RTCP of the last call is still inside --rtp-ports
    mt.portRange = cfg.rtp_port_max - cfg.rtp_port_min
    mt.boundAddress = cfg.sip_host
    mt.publicAddress = cfg.sip_host
    acfg.mediaConfig.rtcpMuxEnabled = False
    # Session timers (RFC 4028) on every call, also with callers that do not offer them (the
    # node refreshes then): a call whose other end is gone without a BYE ends, even on hold.
    acfg.callConfig.timerUse = pj.PJSUA_SIP_TIMER_ALWAYS
    acfg.callConfig.timerSessExpiresSec = cfg.session_expires
    acfg.callConfig.timerMinSESec = 90
    acfg.mediaConfig.srtpUse = {"off": pj.PJMEDIA_SRTP_DISABLED,
                                "optional": pj.PJMEDIA_SRTP_OPTIONAL,
                                "required": pj.PJMEDIA_SRTP_MANDATORY}[cfg.srtp]
    # SDES keys are taken over any transport, as callers offer them; over UDP or TCP they
    # cross in clear, which the README says (TLS keeps them private).
    acfg.mediaConfig.srtpSecureSignaling = 0
    return acfg


def registration_config(pj, cfg: NodeConfig, media_config):
    """The account that registers on a PBX (``--register``): pjsua sends the REGISTERs,
    failures are retried by us (sipconf.core.registration's backoff), not by pjsua."""
    target = cfg.register_target
    racfg = pj.AccountConfig()
    racfg.idUri = target.uri
    racfg.mediaConfig = media_config
    rc = racfg.regConfig
    rc.registrarUri = target.registrar_uri
    rc.registerOnAdd = True
    rc.timeoutSec = cfg.register_expires
    rc.retryIntervalSec = 0  # failures are retried by us, with backoff
    rc.unregWaitMsec = int(UNREGISTER_WAIT_S * 1000)
    cred = pj.AuthCredInfo("digest", "*", cfg.auth_user or target.user, 0, cfg.auth_password)
    racfg.sipConfig.authCreds.append(cred)
    return racfg
