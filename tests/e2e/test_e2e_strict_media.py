"""Strict media (issue 15, part 1): RTP from a stranger never takes over a call.

A baresip member sends a 1000 Hz tone; a raw-UDP caller in the same room sends a second of
silence, then goes quiet, the moment pjmedia alone would let ~10 packets from anywhere take the
call over ("RTP bleed"). A rogue socket then sends PCMU 440 Hz to the caller's node-side RTP port:
first with the caller's own SSRC while the caller has been quiet for less than
``rtp_relatch_seconds``, then with a random SSRC for longer than that, and RTCP from another
address. Nobody may hear 440 Hz, the rogue must receive nothing, the caller must keep hearing the
room and be heard when it talks again, and /metrics must count the drops. Last, the caller's
stream moves to a new port (a NAT rebinding) after a longer silence, with its SSRC: that is
taken, and the room's audio follows it."""

from __future__ import annotations

import random
import struct
import time

import numpy as np
import pytest
from support.audio import band_levels, timeline
from support.rawsip import SDP, RawUA
from support.rawsip import code as _code
from support.rtp import Receiver, RtpSender
from support.rtp import udp_socket as _udp

pytestmark = pytest.mark.e2e

RELATCH_S = 3.0
FREQS = [440.0, 1000.0, 1700.0, 2300.0]


def _tone_db(pcm: np.ndarray, freq: float) -> float:
    """How far (dB) ``freq`` stands above the rest of the band, median over 100 ms frames."""
    levels, rest = band_levels(pcm, 8000, FREQS)
    assert len(levels), "no audio received"
    return float(np.median(levels[:, FREQS.index(freq)] - rest))


def test_rtp_from_a_stranger_never_takes_over_a_call(node_factory, uas):
    node = node_factory(extra=["--rtp-relatch-seconds", str(RELATCH_S)])
    bob = uas("bob", tone_hz=1000.0).dial(node.uri("bleed"), 60)
    assert bob.wait_for("Call established", 10), bob.output()[-2000:]

    ua = RawUA(node.sip_port)
    legit, moved = _udp(), _udp()
    rogue, rogue_rtcp = _udp(), _udp("127.0.0.2")
    listeners = [Receiver(s) for s in (legit, moved, rogue, rogue_rtcp)]
    try:
        uri = f"sip:bleed@127.0.0.1:{node.sip_port}"
        node_rtp = ua.call(uri, legit.getsockname()[1]).node_rtp
        node_rtcp = (node_rtp[0], node_rtp[1] + 1)
        for r in listeners:
            r.start()

        caller = RtpSender(random.randrange(1 << 32))
        caller.send(legit, node_rtp, None, 1.0)  # a second of silence, then quiet
        quiet_at = time.monotonic()

        # The attack: the caller's SSRC while the caller is quiet for less than RELATCH_S ...
        stranger = RtpSender(caller.ssrc)
        stranger.seq, stranger.ts = caller.seq + 1, caller.ts + 160
        stranger.send(rogue, node_rtp, 440.0, RELATCH_S - 1.5)
        # ... then a random SSRC for longer than RELATCH_S, with RTCP from another address
        other = RtpSender(caller.ssrc ^ 0x5A5A5A5A)
        for _ in range(5):
            rr = struct.pack("!BBHI", 0x80, 201, 1, other.ssrc)  # empty receiver report
            rogue_rtcp.sendto(rr, node_rtcp)
            other.send(rogue, node_rtp, 440.0, 0.9)
        attack_end = time.monotonic()
        rogue_sent = stranger.sent + other.sent
        assert attack_end - quiet_at > RELATCH_S

        # The caller talks again, from where it always did: heard.
        caller.ts += int((time.monotonic() - quiet_at) * 8000)
        caller.send(legit, node_rtp, 1700.0, 2.0)
        # Quiet longer than RELATCH_S, then its stream comes from a new port (its NAT rebound).
        time.sleep(RELATCH_S + 0.5)
        caller.ts += int((RELATCH_S + 0.5) * 8000)
        moved_at = time.monotonic()
        caller.send(moved, node_rtp, 2300.0, 2.0)
        time.sleep(0.5)
    finally:
        for r in listeners:
            r.stop()
        bob.stop()
        ua.close()
    got_legit, got_moved, got_rogue, got_rogue_rtcp = listeners

    # The rogue got nothing back, RTP or RTCP.
    assert got_rogue.got == [] and got_rogue_rtcp.got == []

    # Bob never heard 440 Hz; he heard the caller's 1700 Hz and, after the move, 2300 Hz.
    levels, rest, _ = timeline(bob.heard(), FREQS)
    above = levels - rest[:, None]
    assert above[:, 0].max() < 0.0, f"440 Hz reached bob: {above[:, 0].max():.1f} dB"
    assert (above[:, 2] > 20).sum() >= 10, "bob did not hear the caller after the attack"
    assert (above[:, 3] > 20).sum() >= 10, "bob did not hear the caller from its new port"

    # The caller kept hearing the room (bob's 1000 Hz) during and after the attack, until its
    # stream moved; then the room's audio went to the new port.
    during = got_legit.pcmu_after(quiet_at)
    assert len(during) >= 8000 * 5
    assert _tone_db(during, 1000.0) > 20
    late = [t for t, src, _ in got_legit.got if t > moved_at + 0.5 and src == node_rtp]
    assert len(late) < 5, f"{len(late)} packets still went to the old port after the move"
    after_move = got_moved.pcmu_after(moved_at)
    assert len(after_move) >= 8000
    assert _tone_db(after_move, 1000.0) > 20

    m = node.metrics()
    foreign_rtp = m['sipconf_rtp_foreign_packets_total{kind="rtp"}']
    foreign_rtcp = m['sipconf_rtp_foreign_packets_total{kind="rtcp"}']
    relatched = m['sipconf_rtp_source_changes_total{how="relatched"}']
    print(f"rogue sent {rogue_sent} RTP + 5 RTCP; dropped {foreign_rtp:g} RTP, "
          f"{foreign_rtcp:g} RTCP; relatched {relatched:g}")
    assert foreign_rtp >= rogue_sent >= 200
    assert foreign_rtcp >= 5
    assert relatched == 1
    assert m['sipconf_rtp_source_changes_total{how="learned"}'] == 0


def test_a_caller_behind_nat_is_learned_and_a_reinvite_moves_it(node_factory, uas):
    """The SDP names one port, the caller's packets come from another (its NAT's): the node
    learns that source from the first packets and sends there. A re-INVITE naming a new port
    moves the call at once, without waiting for any silence."""
    node = node_factory()
    bob = uas("bob", tone_hz=1000.0).dial(node.uri("nat"), 60)
    assert bob.wait_for("Call established", 10), bob.output()[-2000:]
    ua = RawUA(node.sip_port)
    advertised, natted, renewed = _udp(), _udp(), _udp()
    listeners = [Receiver(s) for s in (advertised, natted, renewed)]
    try:
        uri = f"sip:nat@127.0.0.1:{node.sip_port}"
        dlg = ua.call(uri, advertised.getsockname()[1])
        call_id, tag, contact, node_rtp = dlg.call_id, dlg.tag, dlg.contact, dlg.node_rtp
        for r in listeners:
            r.start()
        caller = RtpSender(random.randrange(1 << 32))
        learned_at = time.monotonic()
        caller.send(natted, node_rtp, 1700.0, 2.0)
        # re-INVITE: the caller's media moves to a new port; it talks from there at once
        ua.request("INVITE", contact, call_id, to_tag=tag, ctype="application/sdp",
                   body=SDP.format(port=renewed.getsockname()[1]).replace("o=- 1 1", "o=- 1 2"))
        ok2 = ua.final("INVITE", timeout=10)
        assert _code(ok2) == 200, ok2[:400]
        ua.request("ACK", contact, call_id, to_tag=tag, cseq=ua.cseq)
        moved_at = time.monotonic()
        caller.send(renewed, node_rtp, 2300.0, 2.0)
        time.sleep(0.3)
    finally:
        for r in listeners:
            r.stop()
        bob.stop()
        ua.close()
    got_adv, got_nat, got_new = listeners
    # the node sent to the SDP's port only until it learned the caller's real source
    assert not [t for t, _, _ in got_adv.got if t > learned_at + 0.5]
    heard_nat = got_nat.pcmu_after(learned_at)
    assert len(heard_nat) >= 8000 and _tone_db(heard_nat, 1000.0) > 20
    heard_new = got_new.pcmu_after(moved_at)
    assert len(heard_new) >= 8000 and _tone_db(heard_new, 1000.0) > 20
    levels, rest, _ = timeline(bob.heard(), FREQS)
    above = levels - rest[:, None]
    assert (above[:, 2] > 20).sum() >= 10, "bob did not hear the caller behind NAT"
    assert (above[:, 3] > 20).sum() >= 10, "bob did not hear the caller after the re-INVITE"
    m = node.metrics()
    assert m['sipconf_rtp_source_changes_total{how="learned"}'] == 1
    assert m['sipconf_rtp_source_changes_total{how="relatched"}'] == 0
