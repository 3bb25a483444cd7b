"""The node registered on a real PBX (Kamailio, from Debian, as registrar with digest auth).

Kamailio listens on 127.0.0.2, the node and the phones on 127.0.0.1, so the node can tell the
PBX from a caller that dials it directly: with ``--trust 10.0.0.0/8`` the only trusted source
on loopback is the registrar.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest
from support import sipp
from support.audio import tone_report
from support.kamailio import start_pbx
from support.waiting import wait_until

pytestmark = pytest.mark.e2e
PASSWORD = "conference-s3cret"
TOKEN = "pbx-token"
TALK_S = 5.0


@pytest.fixture
def pbx(tmp_path):
    kam = start_pbx(tmp_path, PASSWORD)
    yield kam
    kam.stop()


def _register_args(pbx, password: str, expires: int = 10) -> list[str]:
    return ["--register", f"sip:sipconf@{pbx.hostport}", "--auth-password", password,
            "--register-expires", str(expires)]


def test_registered_node_takes_calls_through_the_pbx(tmp_path, pbx, node_factory, uas):
    node = node_factory(extra=[*_register_args(pbx, PASSWORD), "--trust", "10.0.0.0/8",
                               "--api-token", TOKEN])
    contact = f"sip:sipconf@127.0.0.1:{node.sip_port}"
    assert wait_until(lambda: any(c.startswith(contact) for c in pbx.contacts()), 5), \
        node.log()[-2000:]
    assert "registered sip:sipconf@" in node.log()
    assert node.metrics()["sipconf_registered"] == 1

    # Two phones dial the PBX; it routes both to the node (Record-Route, its own Via).
    phones = [uas("alice", tone_hz=440.0), uas("bob", tone_hz=1000.0)]
    for ua in phones:
        ua.dial(f"sip:pbxroom@{pbx.hostport}", seconds=TALK_S + 20)
    for ua in phones:
        assert ua.wait_for("Call established", 10), ua.output()[-2000:] + pbx.log()[-2000:]
    api = httpx.Client(base_url=node.http_url, timeout=10,
                       headers={"Authorization": f"Bearer {TOKEN}"})
    room = api.get("/v1/rooms/pbxroom")
    assert room.status_code == 200, "the room is the number dialled at the PBX (To)"
    assert len(room.json()["members"]) == 2
    time.sleep(TALK_S)
    for ua in phones:
        ua.stop()
    for ua, other in ((phones[0], 1000.0), (phones[1], 440.0)):
        report = tone_report(ua.heard(), [440.0, 1000.0])
        assert report[other] - report["rest"] >= 20.0, (ua.name, report)

    # A caller straight to the node, not through the trusted PBX: 403, and counted.
    res = sipp.run(tmp_path, f"127.0.0.1:{node.sip_port}", "uac_expect_reject.xml", [["r"]],
                   calls=1, subs={"PT": 0, "RTPMAP": "PCMU/8000", "RESPONSE": 403}, timeout=15)
    assert res.successful == 1, res.output[-3000:]
    # one summary line per source (refused before pjsua, reported by the SIP thread's loop)
    assert wait_until(lambda: "not a trusted source" in node.log(), 5), node.log()[-2000:]
    m = wait_until(lambda: (m := node.metrics())["sipconf_calls_active"] == 0 and m, 5)
    assert m['sipconf_calls_total{outcome="forbidden"}'] == 1
    assert m['sipconf_calls_total{outcome="answered"}'] == 2

    # The PBX restarts and forgets every registration: the node's next refresh (expires 10 s)
    # puts it back, and calls route again.
    pbx.stop()
    t0 = time.monotonic()
    pbx.start()
    assert pbx.contacts() == []
    back = wait_until(lambda: pbx.contacts(), 20, step=0.25)
    took = time.monotonic() - t0
    assert back, node.log()[-3000:]
    print(f"re-registered {took:.1f} s after the PBX restarted")
    carol = uas("carol", tone_hz=1700.0).dial(f"sip:again@{pbx.hostport}", seconds=20)
    assert carol.wait_for("Call established", 10), carol.output()[-2000:]
    # The node hangs up: its BYE follows the Record-Route back through the PBX to carol.
    assert api.post("/v1/rooms/again/members/1/hangup").status_code == 200
    assert carol.wait_for("terminated", 5) or carol.terminated, carol.output()[-2000:]
    assert wait_until(lambda: f"in-dialog BYE from 127.0.0.1:{node.sip_port}" in pbx.log(), 3), \
        pbx.log()[-2000:]
    carol.stop()

    # Shutdown unregisters: the PBX holds no contact at once, not after expiry.
    rc, _ = node.terminate()
    assert rc == 0
    assert pbx.contacts() == [], "still registered after shutdown"
    assert "unregistered from" in node.log()


def test_wrong_password_is_logged_and_retried_with_backoff(pbx, node_factory):
    node = node_factory(extra=_register_args(pbx, "not-the-password"))
    fails = wait_until(lambda: re.findall(r"(\d\d:\d\d:\d\d,\d+) WARNING sipconf.sip: "
                                          r"registration of .* failed: (\d+) ", node.log())
                       if node.log().count("registration of") >= 4 else None, 20, step=0.25)
    assert fails, node.log()[-3000:]
    assert all(code in ("401", "403") for _, code in fails), fails
    stamps = [_seconds(t) for t, _ in fails[:4]]
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    print(f"retries after a wrong password: gaps {[round(g, 1) for g in gaps]} s")
    assert gaps[0] >= 0.8 and all(b > a * 1.5 for a, b in zip(gaps, gaps[1:], strict=False)), \
        gaps
    assert pbx.contacts() == []
    m = node.metrics()
    assert m["sipconf_registered"] == 0 and m["sipconf_registration_failures_total"] >= 4
    assert node.alive() and node.options_ok()


def _seconds(stamp: str) -> float:
    h, m, s = stamp.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s.replace(",", "."))
