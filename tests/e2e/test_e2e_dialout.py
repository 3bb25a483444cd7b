"""Dial-out into a room (POST /v1/rooms/{room}/dial) against real callees: SIPp UASes that
answer (streaming a tone), are busy, fail or never answer, and a baresip phone behind Kamailio
reached through the registered PBX with its digest challenge. Both directions of audio are
measured (FFT): what the room's member hears from the callee, and what reaches the callee on
the wire from the room."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest
from support import sipp
from support.audio import band_levels, tone_report, ulaw_decode
from support.kamailio import start_pbx
from support.pcap import Capture
from support.waiting import wait_until

pytestmark = pytest.mark.e2e
TOKEN = "dial-token"
PASSWORD = "dial-s3cret"
TALK_S = 4.0


def _tone_ulaw(path, hz: float):
    subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-e", "u-law", "-t", "raw", str(path),
                    "synth", "3", "sine", str(hz)], check=True, timeout=30)
    return path




def _statuses(server, path: str) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for r in server.requests_to(path):
        out.setdefault(r.params["CallUUID"], []).append(
            (r.params["DialStatus"], r.params.get("SIPResponseCode", "")))
    return out


def test_dial_out_to_a_sipp_callee_joins_the_room_and_both_hear(tmp_path, node_factory, uas,
                                                                 answer_server):
    progress = answer_server.route("/dial", "ok", content_type="text/plain")
    events = answer_server.route("/cb", "ok", content_type="text/plain")
    node = node_factory(None, extra=["--api-token", TOKEN, "--dial-allow", "sip:*@127.0.0.1:*"])
    api = node.api(TOKEN)
    alice = uas("alice", tone_hz=440.0)
    alice.dial(node.uri("sales"), seconds=60)
    assert alice.wait_for("Call established", 10), alice.output()[-2000:]

    callee = sipp.Uas(tmp_path, "uas_answer.xml",
                      {"RTPFILE": _tone_ulaw(tmp_path / "t1000.ulaw", 1000.0), "RING_MS": 600})
    with Capture(tmp_path / "callee.pcap", f"udp and dst port {callee.media_port}") as cap:
        r = api.post("/v1/rooms/sales/dial", json={
            "to": callee.uri("bob"), "from": "+4420", "callerName": "Sales desk",
            "callbackUrl": progress, "attrs": {"callbackUrl": events}})
        assert r.status_code == 200, r.text
        uuid = r.json()["call_uuid"]
        assert wait_until(lambda: len(node.members(TOKEN, "sales")) == 2, 10), node.log()[-3000:]
        joined = time.monotonic()
        (bob,) = [m for m in node.members(TOKEN, "sales") if m["call_uuid"] == uuid]
        assert bob["to"] == "bob" and bob["from"] == f"sip:+4420@127.0.0.1:{node.sip_port}"
        time.sleep(TALK_S)
        # the node ends the callee's call like any member's: BYE
        assert api.post(f"/v1/rooms/sales/members/{bob['member_id']}/hangup").status_code == 200
        res = callee.wait(15)
    alice.stop()
    assert res.successful == 1, res.output[-3000:]  # rang, answered, streamed, got the BYE

    heard = tone_report(alice.heard(), [440.0, 1000.0])
    assert heard[1000.0] - heard["rest"] >= 20.0, heard  # alice hears the callee ...
    rtp = [p for p in cap.packets() if len(p.payload) == 172 and p.payload[1] & 0x7F == 0]
    pcm = np.concatenate([ulaw_decode(p.payload[12:]) for p in rtp[50:]])
    levels, rest = band_levels(pcm, 8000, [440.0, 1000.0])
    lv = {440.0: float(np.median(levels[:, 0])), 1000.0: float(np.median(levels[:, 1])),
          "rest": float(np.median(rest))}
    assert lv[440.0] - max(lv[1000.0], lv["rest"]) >= 20.0, lv  # ... and the callee hears her
    assert len(rtp) >= 0.8 * TALK_S * 50, len(rtp)

    assert wait_until(lambda: len(answer_server.requests_to("/dial")) >= 2, 5)
    assert _statuses(answer_server, "/dial") == {uuid: [("ringing", "180"),
                                                        ("answered", "200")]}
    (first,) = answer_server.requests_to("/dial")[:1]
    assert first.params["Direction"] == "outbound" and first.params["ConferenceName"] == "sales"
    assert wait_until(lambda: [r.params["ConferenceAction"] for r in
                               answer_server.requests_to("/cb")] == ["enter", "exit"], 5)
    m = node.metrics()
    assert m['sipconf_dials_total{outcome="answered"}'] == 1
    print(f"FIGURE dial-out: SIPp callee joined {joined - first.at:.2f} s after ringing; "
          f"alice hears it {heard[1000.0] - heard['rest']:.1f} dB over the rest, the callee "
          f"hears alice {lv[440.0] - max(lv[1000.0], lv['rest']):.1f} dB over the rest "
          f"({len(rtp)} RTP packets to it)")


def test_busy_failed_and_unanswered_dial_outs_report_their_outcome(tmp_path, node_factory,
                                                                   answer_server):
    progress = answer_server.route("/dial", "ok", content_type="text/plain")
    node = node_factory(None, extra=["--api-token", TOKEN,
                                     "--dial-allow", "sip:*@127.0.0.1:*"])
    api = node.api(TOKEN)
    busy = sipp.Uas(tmp_path, "uas_reject.xml", {"RING_MS": 300, "RESPONSE": 486,
                                                 "REASON": "Busy Here"})
    gone = sipp.Uas(tmp_path, "uas_reject.xml", {"RING_MS": 0, "RESPONSE": 404,
                                                 "REASON": "Not Found"})
    late = sipp.Uas(tmp_path, "uas_no_answer.xml")
    try:
        # nowhere that is not allowed, and nothing a request controls goes unchecked
        r = api.post("/v1/rooms/x/dial", json={"to": "sip:bob@127.0.0.2:5060"})
        assert r.status_code == 403 and "--dial-allow" in r.json()["error"]
        assert api.post("/v1/rooms/x/dial", json={"to": busy.uri(), "timeout": 999}
                        ).status_code == 400
        uuids = {}
        for name, callee, timeout in (("busy", busy, 30), ("failed", gone, 30),
                                      ("no-answer", late, 2)):
            r = api.post("/v1/rooms/x/dial", json={"to": callee.uri(), "timeout": timeout,
                                                   "callbackUrl": progress})
            assert r.status_code == 200, r.text
            uuids[r.json()["call_uuid"]] = name
        assert wait_until(lambda: len(_statuses(answer_server, "/dial")) == 3 and all(
            s[-1][0] != "ringing" for s in _statuses(answer_server, "/dial").values()), 15), \
            (answer_server.requests_to("/dial"), node.log()[-3000:])
        results = [c.wait(10) for c in (busy, gone, late)]
    finally:
        for c in (busy, gone, late):
            c.stop()
    got = {uuids[u]: s[-1] for u, s in _statuses(answer_server, "/dial").items()}
    assert got == {"busy": ("busy", "486"), "failed": ("failed", "404"),
                   "no-answer": ("no-answer", "487")}, got
    assert [r.successful for r in results] == [1, 1, 1], [r.output[-2000:] for r in results]
    assert api.get("/v1/dials").json() == {"dials": []}
    assert api.get("/v1/rooms/x").status_code == 404  # nobody joined
    m = node.metrics()
    for outcome in ("busy", "failed", "no-answer"):
        assert m[f'sipconf_dials_total{{outcome="{outcome}"}}'] == 1
    assert m["sipconf_calls_active"] == 0 and m["sipconf_sip_calls"] == 0


@pytest.fixture
def pbx(tmp_path):
    kam = start_pbx(tmp_path, PASSWORD)
    yield kam
    kam.stop()


def test_dial_out_through_the_registered_pbx_with_digest(tmp_path, pbx, node_factory, uas):
    node = node_factory(extra=["--register", f"sip:sipconf@{pbx.hostport}", "--auth-password",
                               PASSWORD, "--register-expires", "30", "--trust", "10.0.0.0/8",
                               "--api-token", TOKEN, "--dial-allow", f"sip:*@{pbx.hostport}"])
    assert wait_until(lambda: node.metrics().get("sipconf_registered") == 1, 10), \
        node.log()[-2000:]
    api = node.api(TOKEN)
    alice = uas("alice", tone_hz=440.0)
    alice.dial(f"sip:pbxroom@{pbx.hostport}", seconds=60)
    assert alice.wait_for("Call established", 10), alice.output()[-2000:] + pbx.log()[-2000:]
    carol = uas("phone", tone_hz=1000.0).listen(seconds=60)  # the PBX rings sip:phone@...
    time.sleep(0.5)
    # a bare number: the PBX's extension (its dial plan rings the phone at that port)
    r = api.post("/v1/rooms/pbxroom/dial", json={"to": str(carol.sip_port)})
    assert r.status_code == 200, r.text
    assert r.json()["to"] == f"sip:{carol.sip_port}@{pbx.hostport}"
    assert wait_until(lambda: len(node.members(TOKEN, "pbxroom")) == 2, 10), \
        node.log()[-3000:] + pbx.log()[-3000:]
    assert carol.wait_for("Call established", 5), carol.output()[-2000:]
    time.sleep(TALK_S)
    alice.stop()
    carol.stop()
    log = pbx.log()
    assert "dial-out from" in log and "challenge" in log, log[-3000:]  # 407, then ...
    assert "dial-out authenticated as sipconf" in log, log[-3000:]  # ... the node's digest
    a = tone_report(alice.heard(), [440.0, 1000.0])
    c = tone_report(carol.heard(), [440.0, 1000.0])
    assert a[1000.0] - a["rest"] >= 20.0, a
    assert c[440.0] - c["rest"] >= 20.0, c
    print(f"FIGURE dial-out through Kamailio (407 digest): alice hears carol "
          f"{a[1000.0] - a['rest']:.1f} dB, carol hears alice {c[440.0] - c['rest']:.1f} dB "
          "over the rest")


def test_a_supervisor_dialled_in_with_coach_whispers_to_the_agent_alone(tmp_path, node_factory,
                                                                         uas):
    """The support-desk pattern: agent and customer talk; the supervisor is dialled in with
    attrs {"coach": agent's member ID}: the agent hears the supervisor, the customer does not,
    and the supervisor hears both."""
    node = node_factory(None, extra=["--api-token", TOKEN, "--dial-allow", "sip:*@127.0.0.1:*"])
    api = node.api(TOKEN)
    agent = uas("agent", tone_hz=440.0)
    customer = uas("customer", tone_hz=1000.0)
    agent.dial(node.uri("desk"), seconds=60)
    assert agent.wait_for("Call established", 10), agent.output()[-2000:]
    assert wait_until(lambda: len(node.members(TOKEN, "desk")) == 1, 5)
    customer.dial(node.uri("desk"), seconds=60)
    assert customer.wait_for("Call established", 10), customer.output()[-2000:]
    agent_id = next(m["member_id"] for m in node.members(TOKEN, "desk")
                    if m["from"].startswith("sip:agent@"))
    boss = sipp.Uas(tmp_path, "uas_answer.xml",
                    {"RTPFILE": _tone_ulaw(tmp_path / "t1700.ulaw", 1700.0), "RING_MS": 0})
    with Capture(tmp_path / "boss.pcap", f"udp and dst port {boss.media_port}") as cap:
        r = api.post("/v1/rooms/desk/dial", json={"to": boss.uri("boss"),
                                                  "attrs": {"coach": agent_id}})
        assert r.status_code == 200, r.text
        assert wait_until(lambda: len(node.members(TOKEN, "desk")) == 3, 10), node.log()[-3000:]
        (sup,) = [m for m in node.members(TOKEN, "desk") if m["call_uuid"] == r.json()["call_uuid"]]
        assert sup["coach"] and sup["coaching"] == agent_id
        time.sleep(TALK_S)
        api.post(f"/v1/rooms/desk/members/{sup['member_id']}/hangup")
        boss.wait(15)
    agent.stop()
    customer.stop()
    freqs = [440.0, 1000.0, 1700.0]
    a = tone_report(agent.heard(), freqs)
    c = tone_report(customer.heard(), freqs)
    pcm = np.concatenate([ulaw_decode(p.payload[12:]) for p in cap.packets()
                          if len(p.payload) == 172 and p.payload[1] & 0x7F == 0][50:])
    levels, rest = band_levels(pcm, 8000, freqs)
    s = {f: float(np.median(levels[:, i])) for i, f in enumerate(freqs)}
    assert a[1700.0] - a["rest"] >= 20.0, a  # the agent hears the supervisor ...
    assert c[1700.0] - c["rest"] <= 3.0, c  # ... the customer does not
    assert c[440.0] - c["rest"] >= 20.0, c
    assert min(s[440.0], s[1000.0]) - float(np.median(rest)) >= 20.0, s  # it hears both
    print(f"FIGURE coach by dial-out attribute: agent hears supervisor "
          f"{a[1700.0] - a['rest']:.1f} dB over the rest, customer "
          f"{c[1700.0] - c['rest']:.1f} dB (nothing); supervisor hears agent "
          f"{s[440.0] - float(np.median(rest)):.1f} dB and customer "
          f"{s[1000.0] - float(np.median(rest)):.1f} dB")


def test_dial_element_bridges_the_caller_to_a_sip_callee(tmp_path, node_factory, uas,
                                                         answer_server):
    """``<Dial><User>sip:...</User></Dial>`` from the answer document: the caller talks with
    the callee (both directions measured); when the caller hangs up the bridge ends, the
    callee gets a BYE, and the action gets DialStatus=completed."""
    callee = sipp.Uas(tmp_path, "uas_answer.xml",
                      {"RTPFILE": _tone_ulaw(tmp_path / "t1000.ulaw", 1000.0), "RING_MS": 300})
    act = answer_server.route("/dialed", "<Response/>")
    cb = answer_server.route("/dialcb", "ok", content_type="text/plain")
    url = answer_server.route(
        "/answer", f'<Response><Dial action="{act}" callbackUrl="{cb}" callerId="+4420">'
        f'<User>{callee.uri("bob")}</User></Dial></Response>')
    node = node_factory(url, extra=["--api-token", TOKEN, "--dial-allow", "sip:*@127.0.0.1:*"])
    api = node.api(TOKEN)
    alice = uas("alice", tone_hz=440.0)
    with Capture(tmp_path / "callee.pcap", f"udp and dst port {callee.media_port}") as cap:
        alice.dial(node.uri("support"), seconds=60)
        assert alice.wait_for("Call established", 10), alice.output()[-2000:]
        assert wait_until(lambda: any(len(r["members"]) == 2 for r in
                                      api.get("/v1/rooms").json()), 10), node.log()[-3000:]
        (room,) = api.get("/v1/rooms").json()
        assert room["name"].startswith("dial:")
        time.sleep(TALK_S)
        alice.stop()  # the caller hangs up: the bridge ends and the callee gets its BYE
        res = callee.wait(15)
    assert res.successful == 1, res.output[-3000:]
    heard = tone_report(alice.heard(), [440.0, 1000.0])
    assert heard[1000.0] - heard["rest"] >= 20.0, heard
    rtp = [p for p in cap.packets() if len(p.payload) == 172 and p.payload[1] & 0x7F == 0]
    pcm = np.concatenate([ulaw_decode(p.payload[12:]) for p in rtp[50:]])
    levels, rest = band_levels(pcm, 8000, [440.0, 1000.0])
    to_callee = float(np.median(levels[:, 0]) - np.median(rest))
    assert to_callee >= 20.0, to_callee
    assert wait_until(lambda: answer_server.requests_to("/dialed"), 5)
    a = answer_server.requests_to("/dialed")[0].params
    assert a["DialStatus"] == "completed" and a["DialRingStatus"] == "true", a
    assert a["DialBLegUUID"] and a["DialALegUUID"] == a["CallUUID"]
    assert [r.params["DialAction"] for r in answer_server.requests_to("/dialcb")] == [
        "answer", "hangup"]
    print(f"FIGURE <Dial>: caller hears callee {heard[1000.0] - heard['rest']:.1f} dB over the "
          f"rest, callee hears caller {to_callee:.1f} dB; action DialStatus=completed")
