"""Under heavy jitter the node holds a playout point instead of retiming (issue 18, jitter).

A raw talker sends 20 ms PCMU packets, each delayed by a seeded uniform 0-80 ms (40+-40 ms of
jitter: reordering every few packets), a 100 ms tone every 500 ms over a soft hum. The node
measures how late the packets come and waits for 99 % of them, at most --jb-delay-max-ms; later
ones are concealed in their own slot (the jitter buffer drops them when they come); the room's
tick moves so that it reads the talker's packets just after that wait. Run twice:
0-80 ms with the cap at 60 (the network asks for ~79: the cap holds) and 0-30 ms with the cap at
40 (the network's ~29 ms is the target). Asserted: the member's media reports that target and a
playout point just over it, late packets discarded; the bursts reach the listener later in the first
run by about the targets' difference; in both, every burst of the run's second half comes
through nearly whole and near the run's median (a held point, not a random walk). And a delay
step (every packet 150 ms later from 5 s on) is taken, not concealed away, and measured at once."""

from __future__ import annotations

import multiprocessing
import random
import statistics
import threading
import time

import numpy as np
import pytest
from support.audio import ulaw_encode
from support.rawsip import RawUA
from support.rtp import Receiver, RtpSender, loud_pcmu, udp_socket
from support.waiting import wait_until

pytestmark = pytest.mark.e2e

TOKEN = "jitter-token"
PACKETS = 450           # 9 s of 20 ms packets
PERIOD, BURST = 25, 5   # a 100 ms tone every 500 ms
SETTLED = 200           # the bursts from 4 s on are judged
NO_STEP = (PACKETS, 0.0)  # (from which packet, ms later): none


def _talker_media(members: list[dict]) -> dict:
    """The media of the member that sent the most packets: the talker (the listener sends
    none)."""
    return max((m["media"] for m in members if m.get("media")), key=lambda m: m["packets"])


def _talk(sock, dest, seed: int, jitter_ms: float, step: tuple[int, float] = NO_STEP
          ) -> list[float]:
    """Sends the plan with jitter, every packet from ``step[0]`` on ``step[1]`` ms later still;
    each burst's nominal start (its first packet's slot)."""
    rng = random.Random(seed)
    sender = RtpSender(rng.randrange(1 << 32))
    # a random start (RFC 3550) that is no multiple of a 10 ms frame's timestamps, and that
    # wraps during the call: the jitter buffer's head, numbered in frames, must be put back
    # on the stream's own timestamps (it was not: a packet dropped and grown back every few
    # hundred ms)
    sender.ts = (1 << 32) - 160 * 200 + 37
    t = np.arange(160) / 8000
    tone = ulaw_encode(0.25 * 32767 * np.sin(2 * np.pi * 1000 * t))
    quiet = ulaw_encode(0.04 * 32767 * np.sin(2 * np.pi * 400 * t))
    start = time.monotonic() + 0.05
    plan = []
    for i in range(PACKETS):
        burst = i % PERIOD < BURST
        later = step[1] / 1000 if i >= step[0] else 0.0
        plan.append((start + i * 0.02 + rng.uniform(0, jitter_ms) / 1000 + later,
                     sender.packet(tone if burst else quiet)))
    plan.sort(key=lambda p: p[0])
    for at, pkt in plan:
        delay = at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        sock.sendto(pkt, dest)
    return [start + i * 0.02 for i in range(0, PACKETS, PERIOD)]


def _talk_into(results, room: str, sock, dest, jitter_ms: float, step: tuple[int, float]) -> None:
    """``_talk`` in a process of its own, its onsets put on ``results`` (CLOCK_MONOTONIC is
    the machine's: the parent compares them with its receiver's times)."""
    results.put((room, _talk(sock, dest, seed=18, jitter_ms=jitter_ms, step=step)))


def _run(node_factory, cap: int, jitter_ms: float, step: tuple[int, float] = NO_STEP,
         judged: int = SETTLED) -> tuple[dict, list[tuple[float, int]]]:
    node = node_factory(extra=["--api-token", TOKEN, "--jb-delay-max-ms", str(cap)])
    ua = RawUA(node.sip_port)
    talk, listen = udp_socket(), udp_socket()
    rx = Receiver(listen)
    try:
        uri = node.uri("jitter")
        ua.call(uri, listen.getsockname()[1])
        dest = ua.call(uri, talk.getsockname()[1]).node_rtp
        assert wait_until(lambda: len(node.members(TOKEN, "jitter")) == 2, 5)
        rx.start()
        seen: list = []  # the member list read mid-call (after it, the newest packet ages)
        readers = [threading.Timer(5.0 + k * 0.37,
                                   lambda: seen.append(node.members(TOKEN, "jitter")))
                   for k in range(7)]
        for r in readers:
            r.start()
        onsets = _talk(talk, dest, seed=18, jitter_ms=jitter_ms, step=step)
        for r in readers:
            r.join(5)
        time.sleep(0.3)
        metrics = node.metrics()
        drops = metrics.get("sipconf_rtp_catchups_total", 0.0)
        moves = metrics.get("sipconf_mixer_tick_moves", 0.0)
    finally:
        rx.stop()
        ua.close()
        talk.close()
        listen.close()
        node.terminate()
    assert seen, "the member list was not read during the call"
    medias = [_talker_media(ms) for ms in seen]
    media = dict(medias[-1], jb_playout_ms=statistics.median(m["jb_playout_ms"] for m in medias),
                 playout_samples=[m["jb_playout_ms"] for m in medias], drops=drops, moves=moves)
    heard = []
    for t0 in onsets[judged // PERIOD:]:
        first, loud = loud_pcmu(rx.got, t0, t0 + 0.35)
        heard.append((first if first is not None else float("nan"), loud))
    return media, heard


# (jitter ms, cap ms): the target the node should find
RUNS = {(80, 60): 60.0, (30, 40): 29.7}


def test_heavy_jitter_holds_a_playout_point_within_the_cap(node_factory):
    results = {run: _run(node_factory, run[1], run[0]) for run in RUNS}
    for (jitter, cap), (media, heard) in results.items():
        delays = [round(d, 1) for d, _n in heard]
        print(f"FIGURE jitter 0-{jitter} ms, cap {cap} ms: target {media['jb_target_ms']} ms, "
              f"playout {media['playout_samples']} ms, discarded {media['jb_discarded']}, empty "
              f"{media['jb_empty']}, drops {media['drops']:.0f}, tick moves {media['moves']:.0f}; "
              f"bursts heard after (ms) {delays}, "
              "loud packets "
              f"{[n for _d, n in heard]}")
    for run, (media, heard) in results.items():
        # 99 % of 0-80 ms is ~79: the cap holds; 99 % of 0-30 is ~29.7, under the cap (a window
        # of 256 packets: a quantile within a few ms)
        assert media["jb_target_ms"] == pytest.approx(RUNS[run], abs=3.0), media
        # (median of 7 reads: a drop or a grow moves it by a frame or a packet for a while)
        assert RUNS[run] - 10 <= media["jb_playout_ms"] <= RUNS[run] + 30, media
        # and the room's tick follows the talker's wait (mixer_ext/rooms.c,
        # rooms_align_jittery): the point just over the target, not anywhere in the packet over
        # it that the tick's phase against the talker's packets put it in (61-75 ms against 60
        # in the quality benchmark before)
        assert media["jb_target_ms"] - 1 <= media["jb_playout_ms"] <= media["jb_target_ms"] + 7, \
            media
        assert media["jb_discarded"] > 0, media  # late packets dropped, not retimed
        assert media["jb_steps"] == 0, media  # jitter is no delay step
        # most packets make it: every burst heard, nearly whole, and near the median (a held
        # point)
        med = statistics.median(d for d, _n in heard if not np.isnan(d))
        assert all(n >= BURST - 2 for _d, n in heard), heard
        assert all(abs(d - med) <= 35 for d, _n in heard), heard
    # under the cap the point stays put: the playout read seven times mid-call within a few ms
    # of its median but once at most (a frame dropped and grown back shows as 8-20 ms swings:
    # the head off the stream's timestamps, fixed), and no more than a couple of drops
    media, _heard = results[(30, 40)]
    med_p = statistics.median(media["playout_samples"])
    assert sum(abs(x - med_p) > 4 for x in media["playout_samples"]) <= 1, media
    assert media["drops"] <= 2, media
    med = {run: statistics.median(d for d, _n in heard if not np.isnan(d))
           for run, (_m, heard) in results.items()}
    # later under the heavier jitter, by about the targets' difference (~30 ms)
    assert 12 <= med[(80, 60)] - med[(30, 40)] <= 50, med


def test_a_delay_step_over_the_cap_is_taken_not_concealed(node_factory):
    """The talker's packets come 150 ms later for good from 5 s on (a route change, a sender's
    hiccup), under 0-30 ms of jitter: far over what the node waits (~30 ms). Each packet comes
    for a slot already concealed in place; a spell of over 60 ms with a packet for it is a
    delay step, and the stream is retimed by it (as pjmedia would). Concealing on, the leg fell
    silent for 400 ms (the spell's limit): the burst right after the step was lost whole (a
    100 ms pause before the tone of tests/e2e/test_e2e_latency.py lost all of it). The
    lateness the node measures starts again from the step."""
    at = 10 * PERIOD  # a burst starts just after the step
    media, heard = _run(node_factory, 60, 30, step=(at, 150.0), judged=at)
    print(f"FIGURE a 150 ms delay step under 0-30 ms of jitter: target {media['jb_target_ms']} "
          f"ms, playout {media['playout_samples']} ms, drops {media['drops']:.0f}, discarded "
          f"{media['jb_discarded']}, empty {media['jb_empty']}; bursts after the step heard "
          "after (ms) "
          f"{[round(d, 1) for d, _n in heard]}, loud packets {[n for _d, n in heard]}")
    # every burst from the step on comes through nearly whole, the first one included, and
    # about the step later than its slot (150 ms, the wait, a tick; NaN: not heard)
    assert all(n >= BURST - 1 for _d, n in heard), heard
    assert all(130 <= d <= 280 for d, _n in heard), heard
    # and the node knows the step at once (mixer_ext/transit.c starts its window again from
    # it): the playout point reads the new lateness (0-30 ms: 22-46 measured), not the step
    # (it read ~175 ms against the 60 ms cap for ~5 s, and 3-4 drops shortened it: bursts
    # heard 157 or 179 ms late by turns); no drop
    assert media["jb_steps"] == 1, media
    assert statistics.median(media["playout_samples"][1:]) <= 80, media
    assert media["drops"] <= 1, media


def test_a_step_in_one_room_leaves_another_alone(node_factory):
    """Two rooms at once: in one the talker's packets come 150 ms later from 5 s on under
    0-30 ms of jitter, in the other a talker sends on time. The calm room hears every burst
    whole at one delay, and its talker's measure sees no step and drops nothing."""
    node = node_factory(extra=["--api-token", TOKEN])
    ua = RawUA(node.sip_port)
    socks = {room: (udp_socket(), udp_socket()) for room in ("stepped", "calm")}
    rxs = {room: Receiver(listen) for room, (_talk_s, listen) in socks.items()}
    try:
        dests = {}
        for room, (talk, listen) in socks.items():
            ua.call(node.uri(room), listen.getsockname()[1])
            dests[room] = ua.call(node.uri(room), talk.getsockname()[1]).node_rtp
        assert wait_until(lambda: all(len(node.members(TOKEN, r)) == 2 for r in socks), 5)
        for rx in rxs.values():
            rx.start()
        # each talker in a process of its own: two sender threads under one GIL made the calm
        # one late by 20-30 ms now and then (seen in 2 of 6 runs), retiming the calm room
        plans = {"stepped": (30.0, (10 * PERIOD, 150.0)), "calm": (0.0, NO_STEP)}
        ctx = multiprocessing.get_context("fork")
        results = ctx.Queue()
        procs = [ctx.Process(target=_talk_into, args=(results, room, socks[room][0], dests[room],
                                                      j, s))
                 for room, (j, s) in plans.items()]
        for pr in procs:
            pr.start()
        try:
            onsets: dict[str, list[float]] = dict(results.get(timeout=30) for _ in procs)
        finally:
            for pr in procs:
                pr.join(5)
                if pr.is_alive():
                    pr.terminate()
                    pr.join(5)
        time.sleep(0.3)
        media = {r: _talker_media(node.members(TOKEN, r)) for r in socks}
    finally:
        for rx in rxs.values():
            rx.stop()
        ua.close()
        for pair in socks.values():
            for s in pair:
                s.close()
        node.terminate()
    heard = {r: [loud_pcmu(rxs[r].got, t0, t0 + 0.35) for t0 in onsets[r][2:]] for r in socks}
    print(f"FIGURE a step in the next room: calm room's bursts heard after (ms) "
          f"{[None if d is None else round(float(d), 1) for d, _n in heard['calm']]}, loud "
          f"packets {[n for _d, n in heard['calm']]}; its talker's media {media['calm']}; the "
          f"stepped room's steps {media['stepped']['jb_steps']}")
    assert media["stepped"]["jb_steps"] == 1, media
    assert all(n >= BURST - 1 for _d, n in heard["stepped"][8:]), heard["stepped"]
    calm = heard["calm"]
    assert all(d is not None and n >= BURST for d, n in calm), calm
    med = statistics.median(d for d, _n in calm)
    assert all(abs(d - med) <= 5 for d, _n in calm), calm
    assert media["calm"]["jb_steps"] == 0 and media["calm"]["jb_discarded"] == 0, media
