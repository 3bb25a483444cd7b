"""Two sipconf nodes behind Kamailio's dispatcher (deploy/kamailio/dispatcher.cfg, as shipped):
rooms are hashed on the request-URI user, so both members of a room reach the same node and
hear each other; rooms spread over both nodes; a dead node's new rooms go to the live one."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from support import ports
from support.audio import tone_report
from support.kamailio import Kamailio
from support.waiting import wait_until

pytestmark = pytest.mark.e2e
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kamailio"
TOKEN = "cluster-token"
TALK_S = 5.0
# Each room's pair of tones: a member must hear its partner and no other room.
ROOMS = {"sales": (440.0, 1000.0), "support": (550.0, 1300.0), "board": (660.0, 1700.0),
         "standup": (770.0, 2100.0)}


def _rooms_on(node) -> set[str]:
    r = httpx.get(f"{node.http_url}/v1/rooms", timeout=10,
                  headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200, r.text
    return {room["name"] for room in r.json()}


def _flags(kam: Kamailio) -> dict[str, str]:
    """Each destination's dispatcher flags (A active / I inactive, P probing)."""
    out = kam.rpc("dispatcher.list")
    return dict(re.findall(r"URI:\s*sip:(\S+)\s+FLAGS:\s*(\S+)", out))


def test_rooms_hash_onto_nodes_and_fail_over(tmp_path, node_factory, uas):
    nodes = [node_factory(extra=["--api-token", TOKEN]) for _ in range(2)]
    lst = tmp_path / "dispatcher.list"
    lst.write_text("".join(f"1 sip:127.0.0.1:{n.sip_port}\n" for n in nodes))
    kam = Kamailio(tmp_path, DEPLOY / "dispatcher.cfg", "127.0.0.1", ports.block(1),
                   {"DISPATCHER_LIST": f'"{lst}"', "PING_INTERVAL": "1"}).start()
    try:
        addrs = [f"127.0.0.1:{n.sip_port}" for n in nodes]
        assert wait_until(lambda: all(_flags(kam).get(a, "").startswith("A") for a in addrs),
                          10), kam.rpc("dispatcher.list")

        phones = []
        for room, tones in ROOMS.items():
            for i, tone in enumerate(tones):
                ua = uas(f"{room}{i}", tone_hz=tone)
                ua.dial(f"sip:{room}@{kam.hostport}", seconds=TALK_S + 20)
                phones.append((room, tone, ua))
        for _, _, ua in phones:
            assert ua.wait_for("Call established", 10), ua.output()[-2000:] + kam.log()[-2000:]
        placed = [_rooms_on(n) for n in nodes]
        print(f"rooms per node: {[sorted(p) for p in placed]}")
        assert placed[0] | placed[1] == set(ROOMS) and not placed[0] & placed[1], placed
        assert placed[0] and placed[1], "every room landed on one node"
        time.sleep(TALK_S)
        for _, _, ua in phones:
            ua.stop()
        all_tones = [t for pair in ROOMS.values() for t in pair]
        for room, tone, ua in phones:
            partner = next(t for t in ROOMS[room] if t != tone)
            report = tone_report(ua.heard(), all_tones)
            assert report[partner] - report["rest"] >= 20.0, (ua.name, report)
            for t in all_tones:
                if t not in ROOMS[room]:
                    assert report[partner] - report[t] >= 20.0, (ua.name, t, report)

        # Node 2 dies: the probes mark it down, and a room that hashed to it goes to node 1.
        moved = sorted(placed[1])[0]
        nodes[1].kill()
        t0 = time.monotonic()
        assert wait_until(lambda: _flags(kam).get(addrs[1], "").startswith("I"), 10), \
            kam.rpc("dispatcher.list")
        print(f"dead node marked down after {time.monotonic() - t0:.1f} s")
        late = uas("late", tone_hz=440.0).dial(f"sip:{moved}@{kam.hostport}", seconds=40)
        assert late.wait_for("Call established", 10), late.output()[-2000:] + kam.log()[-2000:]
        assert moved in _rooms_on(nodes[0])

        # Node 2 comes back (same address): the probes take it in again. The room that moved
        # stays on node 1 while it runs (no split room), and node 2 gets rooms again.
        back = node_factory(sip_port=nodes[1].sip_port, extra=["--api-token", TOKEN])
        assert wait_until(lambda: _flags(kam).get(addrs[1], "").startswith("A"), 10), \
            kam.rpc("dispatcher.list")
        later = uas("later", tone_hz=1000.0).dial(f"sip:{moved}@{kam.hostport}", seconds=15)
        assert later.wait_for("Call established", 10), later.output()[-2000:]
        assert moved in _rooms_on(nodes[0]) and moved not in _rooms_on(back)
        m = wait_until(lambda: (m := nodes[0].metrics())["sipconf_legs_active"] == 2 and m, 5)
        assert m, "both members of the moved room are on node 1"
        again = sorted(placed[1])[-1]  # another of node 2's rooms, over before it died
        assert again != moved, placed  # the hash put 3 of the 4 rooms on node 2
        fresh = uas("fresh", tone_hz=440.0).dial(f"sip:{again}@{kam.hostport}", seconds=15)
        assert fresh.wait_for("Call established", 10), fresh.output()[-2000:]
        assert again in _rooms_on(back)
        for ua in (late, later, fresh):
            ua.stop()
    finally:
        kam.stop()
