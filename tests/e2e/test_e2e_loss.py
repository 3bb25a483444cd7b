"""A packet lost or late is concealed in its own slot (issue 18, loss).

The room's tick reads its talker a few ms after each packet arrives, so the talker's jitter
buffer holds nothing beyond the frame being read. A packet that comes 12 ms late misses its
tick: pjmedia conceals the frame, then plays the late packet at the next tick, and every packet
after it a tick late for the rest of the call (the stream is retimed; the catch-up never comes
while such events go on). The node drops a packet whose slot it already concealed when the
buffer keeps a whole frame back after the spell (``sipconf_rtp_concealed_in_place_total``). The
test makes one packet lost or late in each pause of a talker's bursts and asserts that the
bursts reach the listener as promptly at the end as at the start, whole."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
from support.audio import ulaw_encode
from support.rawsip import RawUA
from support.rtp import Receiver, RtpSender, loud_pcmu, udp_socket
from support.waiting import wait_until

pytestmark = pytest.mark.e2e

TOKEN = "loss-token"
PACKETS = 400          # 8 s of 20 ms packets
FIRST_BURST = 100      # 2 s of hum first: the room's tick settles onto the talker
PERIOD, BURST = 25, 5  # a 100 ms tone every 500 ms
EVERY, LOST_AT = 125, 15  # a packet lost or late every 2.5 s, 200 ms after a burst (a hiccup:
                          # under steady jitter the buffer grows instead)


def _talk(sock, dest, late: bool) -> tuple[list[float], int]:
    """The plan in real time; (each burst's start, packets lost or late)."""
    sender = RtpSender(random.randrange(1 << 32))
    t = np.arange(160) / 8000
    tone = ulaw_encode(0.25 * 32767 * np.sin(2 * np.pi * 1000 * t))
    # under the bursts, a soft 400 Hz hum (peak -28 dBFS, under _bursts_heard's "loud"): the
    # talker holds the floor throughout, so the room's tick reads it ~5 ms after each packet
    quiet = ulaw_encode(0.04 * 32767 * np.sin(2 * np.pi * 400 * t))
    onsets, lost = [], 0
    start = time.monotonic()
    for i in range(PACKETS):
        phase = i % PERIOD
        burst = i >= FIRST_BURST and phase < BURST
        if burst and phase == 0:
            onsets.append(time.monotonic())
        if i >= FIRST_BURST and (i - FIRST_BURST) % EVERY == LOST_AT:
            lost += 1
            if late:  # 12 ms late: after its tick, before the next packet
                time.sleep(0.012)
                sock.sendto(sender.packet(quiet), dest)
            else:  # lost on the way: its number and time pass unsent
                sender.seq += 1
                sender.ts += 160
        else:
            sock.sendto(sender.packet(tone if burst else quiet), dest)
        delay = start + (i + 1) * 0.02 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return onsets, lost


def _bursts_heard(got, onsets: list[float]) -> list[tuple[float, int]]:
    """Per burst: (ms from its first packet sent to its first loud sample leaving the node,
    loud packets heard)."""
    out = []
    for t0 in onsets:
        first, loud = loud_pcmu(got, t0, t0 + 0.3)
        out.append((first if first is not None else float("nan"), loud))
    return out


@pytest.mark.parametrize("late", [False, True], ids=["lost", "late"])
def test_a_packet_lost_or_late_is_concealed_in_its_own_slot(node_factory, late):
    node = node_factory(extra=["--api-token", TOKEN])
    ua = RawUA(node.sip_port)
    talk, listen = udp_socket(), udp_socket()
    rx = Receiver(listen)
    try:
        uri = node.uri("loss")
        ua.call(uri, listen.getsockname()[1])
        dest = ua.call(uri, talk.getsockname()[1]).node_rtp
        assert wait_until(lambda: len(node.members(TOKEN, "loss")) == 2, 5)
        rx.start()
        onsets, lost = _talk(talk, dest, late)
        time.sleep(0.3)
        metrics = node.metrics()
    finally:
        rx.stop()
        ua.close()
        talk.close()
        listen.close()
    heard = _bursts_heard(rx.got, onsets)
    delays = [d for d, _n in heard]
    in_place = metrics.get("sipconf_rtp_concealed_in_place_total", 0.0)
    print(f"FIGURE loss: {lost} packets {'late' if late else 'lost'}, {in_place:g} dropped "
          f"for a slot concealed (in place); each burst "
          f"heard after (ms) {[round(float(d), 1) for d in delays]}, loud packets "
          f"{[n for _d, n in heard]}")
    assert not any(np.isnan(delays)), heard
    assert all(n >= BURST - 1 for _d, n in heard), heard
    if late:  # (a lost packet here finds pjmedia prefetching one frame: nothing to drop)
        assert in_place >= lost - 1, (in_place, lost)
    # retimed, the later bursts would come 20 ms later or more (each planned late packet
    # retiming the rest); the tick's own moves toward its talker stay within a few ms. The median
    # of the last three: a hiccup of this Python sender itself right after the last planned
    # late packet (within the 2 s calm the node asks before concealing in place) retimed the
    # very last burst once in CI (-8.8 ms for eleven bursts, then 11.2)
    assert sorted(delays[-3:])[1] <= delays[0] + 12, delays
