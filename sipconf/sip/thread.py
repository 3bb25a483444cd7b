"""The SIP thread: the one thread that creates, drives and destroys every pjsua2 object.

pjsua2 aborts the process when a thread it does not know touches (or merely garbage-collects)
one of its objects, and when objects outlive ``libDestroy()``. So :class:`SipThread` owns them
all: it sets pjsua up (``pjsua``), polls ``libHandleEvents``, runs the commands the trio side
queues (``commands``), hands call streams to the mixer (``media``), and at the end hangs up,
unregisters and destroys everything, on this thread. It beats a heartbeat each turn so the node's
watchdog can tell it is stuck.
"""

from __future__ import annotations

import gc
import logging
import queue
import threading
import time
from typing import Any

import trio

from sipconf.config import NodeConfig
from sipconf.core.access import TrustedSources
from sipconf.core.registration import Registrar
from sipconf.engine import Emit
from sipconf.sip import callbacks, pjlog, pjsua
from sipconf.sip.commands import Stop, end_agent, execute
from sipconf.sip.media import Media
from sipconf.sip.records import CallRec

log = logging.getLogger("sipconf.sip")

POLL_MS = 5
REPORT_S = 10.0  # refusals of new calls: one log line per source per this many seconds
ADMISSION_WHY = {"forbidden": "not a trusted source (--trust) -> 403",
                 "rate": "past --source-call-rate -> 503",
                 "capacity": "the node at capacity (--max-calls, --rtp-ports) -> 503",
                 "no_srtp": "plain RTP offered, SRTP required (--srtp) -> 488"}


class SipThread:
    """The SIP thread's state and work. Everything but ``heartbeat``, ``media`` (read by the
    watchdog) and the command queue is touched on the SIP thread only."""

    def __init__(self, config: NodeConfig, on_event: Emit, cmds: queue.SimpleQueue):
        self.config = config
        self._on_event = on_event  # called on the trio thread; queues, never raises
        self.token: trio.lowlevel.TrioToken | None = None  # set by SipEngine.start
        self.cmds = cmds  # (command, deliver) pairs from the trio side
        self.ready = threading.Event()
        self.start_error: BaseException | None = None
        self.heartbeat = time.monotonic()  # the loop's last turn
        self.report_at = 0.0  # when refusals of new calls are next logged
        self.pj: Any = None  # the pjsua2 module, imported on this thread
        self.ep: Any = None
        self._init_log_writer: Any = None  # pjsua's log writer during libInit (see init)
        self.acc: Any = None  # the local account, which takes the calls
        self.reg: Any = None  # the pjsua2 Account that registers on a PBX, if any
        self.call_cls: Any = None
        self.media: Media | None = None
        self.trust: TrustedSources | None = None
        self.calls: dict[str, CallRec] = {}
        self._dead_calls: list[Any] = []
        self.refused: dict[str, int] = {}  # calls refused before the trio side saw them
        self.registrar = Registrar()
        self.reg_retry_at: float | None = None
        self.own_users = {"sipconf"}
        self.unregistering = False
        self.tls_id: int | None = None  # the SIP TLS listener's pjsua transport

    def emit(self, event: object) -> None:
        """An event for the node: queued into its channel on the trio thread (the callback
        only queues and cannot raise; a task drains the channel)."""
        try:
            self.token.run_sync_soon(self._on_event, event)
        except trio.RunFinishedError:
            pass

    def main(self) -> None:
        """The thread's body: set up, signal ``ready``, loop until Stop, destroy."""
        import pjsua2 as pj  # imported here: the module is only ever used on this thread

        self.pj = pj
        try:
            self.init(pj)
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self.start_error = exc
            self.destroy()
            self.ready.set()
            return
        self.ready.set()
        try:
            self.loop()
        except BaseException:
            log.critical("the SIP thread failed", exc_info=True)
            raise
        finally:
            self.destroy()

    def init(self, pj) -> None:
        cfg = self.config
        # pjlib's lines go to a lock-free ring that sipconf.sip.pjlog drains into Python logging
        # (so --log-format json covers them too); never to a Python callback, which would make a
        # thread holding a pjlib or mixer lock wait for the GIL. From the first line on:
        pjlog.install(cfg.pj_log_level, pj.PJ_LOG_HAS_SENDER)
        ep = self.ep = pj.Endpoint()
        ep.libCreate()
        # Inside libInit pjsua makes its own writer pjlib's log function, which hands lines to
        # this one (Python, on this thread: no clock thread exists yet); after libInit the ring
        # takes over for good and this writer is never called again.
        self._init_log_writer = pjsua.init_log_writer_class(pj)()
        self._init_log_writer.__disown__()  # libDestroy deletes it
        ep.libInit(pjsua.endpoint_config(pj, cfg, self._init_log_writer))
        pjlog.install(cfg.pj_log_level, pj.PJ_LOG_HAS_SENDER)
        # No sound device: nothing clocks the conference bridge (our mixer clocks the streams).
        ep.audDevManager().setNoDev()
        self.tls_id = pjsua.create_transports(pj, ep, cfg)
        pjsua.set_codecs(pj, ep, cfg)
        ep.libStart()

        from mixer_ext import sipguard, streams

        target = cfg.register_target
        self.trust = TrustedSources(cfg.trust, (target.host,) if target else ())
        self.guard = sipguard
        sipguard.install(cfg.sip_host)
        sipguard.admit(self.trust.networks, cfg.call_capacity, cfg.source_call_rate,
                       cfg.source_call_burst, cfg.retry_after, cfg.srtp == "required")
        self.media = Media(streams, self.emit, self.calls)
        streams.start(cfg.mixer_clocks)
        streams.rtpguard_settings(cfg.rtp_relatch_seconds)
        streams.catchup_settings(cfg.jb_catchup_ms)
        streams.playout_settings(cfg.jb_wait_pct, cfg.jb_delay_max_ms)
        streams.shared_encoding_settings(cfg.shared_encoding == "on")
        streams.opus_settings(cfg.opus_application, cfg.opus_decoding == "direct")
        streams.tick_align_settings(cfg.tick_align == "on")

        acfg = pjsua.account_config(pj, cfg)
        self.call_cls = callbacks.call_class(pj)
        self.acc = callbacks.account_class(pj)(self)
        self.acc.create(acfg, True)
        log.info("SIP listening on udp%s %s:%d%s, RTP %d-%d (SRTP %s); calls taken from %s",
                 "+tcp" if cfg.sip_tcp else "", cfg.sip_host, cfg.sip_port,
                 f", tls {cfg.sip_host}:{cfg.sip_tls_port}" if cfg.sip_tls_port else "",
                 cfg.rtp_port_min, cfg.rtp_port_max, cfg.srtp,
                 ", ".join(str(n) for n in self.trust.networks))
        if target is not None:
            racfg = pjsua.registration_config(pj, cfg, acfg.mediaConfig)
            self.own_users.add(target.user)
            self.reg = callbacks.account_class(pj)(self)
            self.reg.create(racfg)
            log.info("registering %s at %s (expires %d s)", target.uri, target.registrar_uri,
                     cfg.register_expires)

    def loop(self) -> None:
        ep = self.ep
        while True:
            self.heartbeat = time.monotonic()
            while True:
                try:
                    cmd, deliver = self.cmds.get_nowait()
                except queue.Empty:
                    break
                if isinstance(cmd, Stop):
                    self.shutdown_calls(cmd.grace)
                    return
                try:
                    result = execute(self, cmd)
                    ok = True
                except Exception as exc:  # noqa: BLE001 - returned to the caller
                    result, ok = exc, False
                if deliver is not None:
                    try:
                        self.token.run_sync_soon(deliver, ok, result)
                    except trio.RunFinishedError:
                        pass
            ep.libHandleEvents(POLL_MS)
            self.media.poll_events()
            self.reap()
            if self.heartbeat >= self.report_at:
                self.report_at = self.heartbeat + 1.0
                self.report_refusals()
                self.check_rtp(self.heartbeat)
            if self.reg_retry_at is not None and time.monotonic() >= self.reg_retry_at:
                self.reg_retry_at = None
                self.register(True)

    def check_rtp(self, now: float) -> None:
        """Hang up answered calls that sent no RTP for ``rtp_timeout`` seconds (a caller gone
        without a BYE, a NAT binding lost, an INVITE whose ACK never brought an answer), with
        a Reason header; a call the caller holds (its SDP sends us nothing) is not timed."""
        timeout = self.config.rtp_timeout
        if not timeout:
            return
        pj = self.pj
        for rec in list(self.calls.values()):
            if not rec.answered or rec.ended or rec.agent:
                continue
            packets = -1
            if rec.leg is not None:
                try:
                    packets = rec.call.getStreamStat(0).rtcp.rxStat.pkt
                except pj.Error:
                    pass
            if packets != rec.rx_packets:
                rec.rx_packets, rec.rx_at = packets, now
                continue
            if now - rec.rx_at < timeout:
                continue
            if self.held(rec):
                rec.rx_at = now
                continue
            log.warning("call %s: no RTP for %.0f s -> BYE (rtp_timeout)", rec.uuid,
                        now - rec.rx_at)
            rec.media_timeout = True
            prm = self.op(200)
            h = pj.SipHeader()
            h.hName = "Reason"
            h.hValue = f'Q.850;cause=102;text="no RTP for {now - rec.rx_at:.0f} s"'
            prm.txOption.headers.append(h)
            self.media.detach(rec)
            try:
                rec.call.hangup(prm)
            except pj.Error as exc:
                log.warning("call %s: hangup after the RTP timeout failed: %s", rec.uuid,
                            exc.reason)

    def held(self, rec: CallRec) -> bool:
        """The caller's SDP asks for no RTP to us (a=sendonly from us / inactive: on hold)."""
        pj = self.pj
        try:
            info = rec.call.getInfo()
        except pj.Error:
            return False
        audio = [m for m in info.media if m.type == pj.PJMEDIA_TYPE_AUDIO]
        return bool(audio) and not any(m.dir & pj.PJMEDIA_DIR_DECODING for m in audio)

    def report_refusals(self) -> None:
        """One line per source per REPORT_S about the INVITEs admission.c refused from it (a
        flood writes a line every ten seconds, not one per request)."""
        for ip, counts in self.guard.admission_reports(REPORT_S):
            what = ", ".join(f"{n} {ADMISSION_WHY[k]}" for k, n in sorted(counts.items()))
            log.warning("refused new calls from %s: %s (in the last %.0f s at most)", ip, what,
                        REPORT_S)

    def register(self, on: bool) -> None:
        try:
            self.reg.setRegistration(on)
        except self.pj.Error as exc:
            if on:
                callbacks.reg_state(self, 503, exc.reason, 0)

    def reap(self) -> None:
        # Call objects are dropped here, outside their own callbacks.
        if self._dead_calls:
            self._dead_calls.clear()
        self.media.reap()

    def shutdown_calls(self, grace: float) -> None:
        """Unregister, hang up every call and give them ``grace`` seconds to end."""
        self.reg_retry_at = None
        unregistering = self.unregistering = self.reg is not None and self.registrar.registered
        if unregistering:
            self.register(False)
        for rec in list(self.calls.values()):
            self.media.detach(rec)
            if rec.agent and not rec.ended:
                end_agent(self, rec, "node shutting down")
            elif not rec.ended:
                try:
                    rec.call.hangup(self.op(503 if not rec.answered else 0, "Node shutting down"))
                except self.pj.Error:
                    pass
        deadline = time.monotonic() + grace
        while any(not r.ended for r in self.calls.values()) and time.monotonic() < deadline:
            self.heartbeat = time.monotonic()
            self.ep.libHandleEvents(POLL_MS)
        deadline = time.monotonic() + pjsua.UNREGISTER_WAIT_S
        while unregistering and self.registrar.registered and time.monotonic() < deadline:
            self.ep.libHandleEvents(POLL_MS)

    def destroy(self) -> None:
        """Release every pjsua2 object and mixer resource, on this thread, then libDestroy."""
        pj = self.pj
        media = self.media
        for rec in list(self.calls.values()):
            if media is not None:
                media.detach(rec)
            self.drop_call(rec)
        self.calls.clear()
        self._dead_calls.clear()
        gc.collect()  # any stray pjsua2 object must go now, on this thread
        if media is not None:
            media.destroy()
        for name in ("reg", "acc"):
            acc = getattr(self, name)
            if acc is not None:
                try:
                    acc.shutdown()
                except pj.Error:
                    pass
                setattr(self, name, None)
        if self.ep is not None:
            try:
                self.ep.libDestroy()
            except pj.Error:
                pass
            self.ep = None
        pjlog.drain()  # libDestroy's lines, in case the pump has already stopped

    # --- helpers -------------------------------------------------------------------------------

    def op(self, code: int, reason: str = "", warning: str = "", retry_after: int = 0):
        """A CallOpParam with this status (and a ``Warning: 399`` header if ``warning``, a
        ``Retry-After`` if ``retry_after``)."""
        pj = self.pj
        prm = pj.CallOpParam(True)
        prm.statusCode = code
        if reason:
            prm.reason = reason
        if retry_after:
            h = pj.SipHeader()
            h.hName = "Retry-After"
            h.hValue = str(retry_after)
            prm.txOption.headers.append(h)
        if warning:
            h = pj.SipHeader()
            h.hName = "Warning"
            text = warning.replace("\\", "\\\\").replace('"', '\\"')[:200]
            h.hValue = f'399 {self.config.sip_host} "{text}"'
            prm.txOption.headers.append(h)
        return prm

    def drop_call(self, rec: CallRec) -> None:
        """Release the pjsua2 Call on this thread, outside its own callback (next loop turn):
        the rec <-> call cycle is broken so no garbage collector frees it elsewhere, later."""
        if rec.call is not None:
            rec.call.rec = None
            self._dead_calls.append(rec.call)
            rec.call = None
