"""Events end to end: digits from RFC 2833 (baresip /sndcode), SIP INFO (SIPp) and in-band
tones (a baresip mic WAV); relayed digits on the wire; a receiver that is down; a node killed
with undelivered events; floor callbacks following who talks. Real UAs, a real HTTP receiver."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from mixer_ext.mixer import detect_dtmf
from support import sipp
from support.audio import dtmf_wav, tone_pcm, ulaw_decode, write_wav
from support.pcap import Capture, telephone_events
from support.waiting import wait_until

from sipconf.webhooks import verify

pytestmark = pytest.mark.e2e
TOKEN = "test-token"


def _events(server, path="/cb", call=None):
    return [r for r in server.requests_to(path, delivered=True)
            if call is None or r.params.get("CallUUID") == call]


def test_digits_from_rfc2833_sip_info_and_inband_tones(answer_server, node_factory, uas,
                                                        tmp_path):
    cb = answer_server.route("/cb", "ok", content_type="text/plain")
    url = answer_server.conference("/answer", "keys", callbackUrl=cb,
                                   digitsMatch="123,456,789", action=answer_server.url("/act"),
                                   redirect="false")
    answer_server.route("/act", "<Response/>")
    node = node_factory(url, extra=["--auth-token", TOKEN])

    alice = uas("alice")  # a silent mic: what the SIPp leg hears is the relay and bob
    results = {}
    with Capture(tmp_path / "relay.pcap", "udp") as cap:
        alice.dial(node.uri("keys"), 40)
        assert alice.wait_for("Call established", 10), alice.output()[-2000:]
        bob = uas("bob", mic_wav=dtmf_wav(tmp_path / "bob-mic.wav", "789", 7.0, 40))
        bob.dial(node.uri("keys"), 40)
        assert bob.wait_for("Call established", 10)

        # SIP INFO from SIPp (dtmf-relay, dtmf, dtmf-relay); it has no telephone-event, so
        # the digits relayed to it come as in-band tones
        def info_call():
            results["sipp"] = sipp.run(
                tmp_path, f"127.0.0.1:{node.sip_port}", "uac_info_dtmf.xml", [["keys"]],
                calls=1, subs={"D1": "4", "D2": "5", "D3": "6", "HOLD_MS": "9000"},
                timeout=30)

        sipp_thread = threading.Thread(target=info_call)
        sipp_thread.start()
        try:
            assert wait_until(lambda: len([r for r in _events(answer_server)
                                      if r.params["ConferenceAction"] == "enter"]) == 3, 10)
            time.sleep(1.5)  # the INFO digits are out
            sent = {}
            for d in "123":  # RFC 2833 from alice
                sent["rfc2833"] = time.monotonic()
                alice.command(f"/sndcode {d}")
                time.sleep(0.4)
        finally:
            sipp_thread.join(60)
        res = results["sipp"]
        assert res.successful == 1, res.output[-3000:]  # every INFO got its 200

        def match(digits):
            return next((r for r in _events(answer_server)
                         if r.params.get("ConferenceDigitsMatch") == digits), None)

        assert wait_until(lambda: match("123") and match("456") and match("789"), 10), [
            r.params for r in _events(answer_server)]
        time.sleep(0.5)
    alice.stop()
    bob.stop()

    calls = {r.params["CallUUID"]: r.params["ConferenceMemberID"]
             for r in _events(answer_server) if r.params["ConferenceAction"] == "enter"}
    m123, m456, m789 = match("123"), match("456"), match("789")
    assert len({m123.params["CallUUID"], m456.params["CallUUID"], m789.params["CallUUID"]}) == 3
    for m in (m123, m456, m789):
        assert m.params["ConferenceAction"] == "digits"
        assert m.params["ConferenceName"] == "keys"
        assert calls[m.params["CallUUID"]] == m.params["ConferenceMemberID"]
        assert verify(TOKEN, cb, m.params, m.headers)
    assert len([r for r in _events(answer_server)
                if r.params["ConferenceAction"] == "digits"]) == 3  # no duplicates

    # relayed: alice's leg got telephone-events for the others' digits, on the wire ...
    packets = list(cap.packets())
    events, summary = telephone_events(iter(packets), alice.rtp)
    to_sipp = [ulaw_decode(p.payload[12:]) for p in packets
               if p.dst[1] == res.media_port and len(p.payload) == 172
               and p.payload[1] & 0x7F == 0]
    assert set("456789") <= events, (summary, [ln for ln in node.log().splitlines()
                                               if "digits" in ln][-12:])
    assert not set("123") & events  # never her own digits back
    # ... and the SIPp leg, which has no telephone-event, heard alice's as in-band tones
    heard = detect_dtmf(np.clip(np.concatenate(to_sipp), -32768, 32767).astype(np.int16), 8000)
    assert heard == "123789", heard  # relayed 1 2 3, then bob's own tones in the mix, once

    # per call: enter, digits, exit, then the action request
    wait_until(lambda: len(_events(answer_server, "/act")) >= 3, 10)  # alice, bob, SIPp
    for call in (m123.params["CallUUID"], m789.params["CallUUID"]):
        seq = [r.params["ConferenceAction"] for r in _events(answer_server, call=call)]
        assert seq == ["enter", "digits", "exit"], seq
        exit_at = _events(answer_server, call=call)[-1].at
        act = [r for r in _events(answer_server, "/act") if r.params["CallUUID"] == call]
        assert len(act) == 1 and act[0].at >= exit_at, [
            (r.params, r.status) for r in answer_server.requests_to("/act")]
        assert act[0].params["CallStatus"] == "completed"
    lat = match("123").at - sent["rfc2833"]
    print(f"FIGURE digits: last RFC 2833 key sent -> digits callback received {lat * 1000:.0f} "
          f"ms; relayed telephone-events seen at alice: {''.join(sorted(events))}; in-band "
          f"digits detected in the SIPp leg's audio: {heard}")


def test_receiver_down_for_20_s_gets_every_event_in_order(answer_server, node_factory, uas):
    cb = answer_server.route("/cb", "ok", content_type="text/plain")
    act = answer_server.route("/act", "<Response/>")
    url = answer_server.conference("/answer", "outage", callbackUrl=cb, digitsMatch="12",
                                   action=act)
    outage_end = time.monotonic() + 20
    answer_server.routes["/cb"].fail_until = outage_end
    answer_server.routes["/act"].fail_until = outage_end
    node = node_factory(url, extra=["--auth-token", TOKEN, "--webhook-max-backoff", "4"])
    alice = uas("alice", tone_hz=440).dial(node.uri("outage"), 30)
    bob = uas("bob", tone_hz=1000).dial(node.uri("outage"), 30)
    assert alice.wait_for("Call established", 10) and bob.wait_for("Call established", 10)
    time.sleep(1.5)
    for d in "12":
        alice.command(f"/sndcode {d}")
        time.sleep(0.3)
    time.sleep(1.0)
    alice.stop()
    time.sleep(1.0)
    bob.stop()
    assert time.monotonic() < outage_end, "the calls took longer than the outage"
    assert _events(answer_server) == []
    assert answer_server.requests_to("/cb")  # tried, refused

    done = wait_until(lambda: len(_events(answer_server)) >= 5
                 and len(_events(answer_server, "/act")) >= 2, 40)
    assert done, [r.params for r in _events(answer_server)]
    got = _events(answer_server)
    for r in got + _events(answer_server, "/act"):
        assert verify(TOKEN, answer_server.url(r.path), r.params, r.headers)
        assert r.at >= outage_end
    by_call: dict[str, list[str]] = {}
    for r in got:
        by_call.setdefault(r.params["CallUUID"], []).append(r.params["ConferenceAction"])
    assert sorted(by_call.values()) == [["enter", "digits", "exit"], ["enter", "exit"]]
    for call in by_call:
        exit_at = max(r.at for r in got if r.params["CallUUID"] == call)
        acts = [r for r in _events(answer_server, "/act") if r.params["CallUUID"] == call]
        assert len(acts) == 1 and acts[0].at >= exit_at
    first = min(r.at for r in got) - outage_end
    last = max(r.at for r in got + _events(answer_server, "/act")) - outage_end
    print(f"FIGURE outage 20 s: first event {first:.1f} s and last {last:.1f} s after the "
          f"receiver came back; {len(got)} events + 2 actions, all signed, in order")


def test_killed_node_delivers_spooled_events_after_restart(answer_server, node_factory, uas,
                                                          tmp_path):
    cb = answer_server.route("/cb", "ok", content_type="text/plain")
    url = answer_server.conference("/answer", "spool", callbackUrl=cb)
    answer_server.routes["/cb"].fail_until = time.monotonic() + 3600
    data = tmp_path / "node-data"
    node = node_factory(url, data_dir=data)
    alice = uas("alice", tone_hz=440).dial(node.uri("spool"), 20)
    assert alice.wait_for("Call established", 10)
    time.sleep(1.0)
    alice.stop()
    assert wait_until(lambda: answer_server.requests_to("/cb"), 10)  # the enter event was tried
    # the exit event is spooled behind it (the call's events go out in order)
    assert wait_until(lambda: "left room spool" in node.log(), 10), node.log()[-2000:]
    node.proc.kill()  # kill -9: no goodbye, the spool is all there is
    node.proc.wait(5)
    assert _events(answer_server) == []

    answer_server.routes["/cb"].fail_until = 0.0
    t0 = time.monotonic()
    node_factory(url, data_dir=data)
    assert wait_until(lambda: len(_events(answer_server)) >= 2, 15)
    time.sleep(0.5)
    got = _events(answer_server)
    assert [r.params["ConferenceAction"] for r in got] == ["enter", "exit"]
    print(f"FIGURE restart: spooled events delivered {max(r.at for r in got) - t0:.1f} s "
          "after the node was started again")


def test_floor_callbacks_follow_who_talks(answer_server, node_factory, uas, tmp_path):
    cb = answer_server.route("/cb", "ok", content_type="text/plain")
    url = answer_server.conference("/answer", "floor", callbackUrl=cb, floorEvent="true")
    node = node_factory(url)
    rate = 8000

    def mic(name, spans, seconds=30):
        pcm = np.zeros(seconds * rate, np.int16)
        for start, end, hz in spans:
            tone = tone_pcm(hz, end - start, rate, amplitude=0.2)
            pcm[int(start * rate):int(start * rate) + len(tone)] = tone
        write_wav(tmp_path / f"{name}.wav", pcm, rate)
        return tmp_path / f"{name}.wav"

    a = uas("alice", mic_wav=mic("alice", [(0, 3, 440), (12, 15, 440)]))
    b = uas("bob", mic_wav=mic("bob", [(5, 9, 1000)]))
    a.dial(node.uri("floor"), 25)
    assert a.wait_for("Call established", 10)
    t0 = time.monotonic()
    time.sleep(1.0)
    b.dial(node.uri("floor"), 25)
    assert b.wait_for("Call established", 10)
    assert wait_until(lambda: len([r for r in _events(answer_server)
                              if r.params["ConferenceAction"] == "floor"]) >= 3, 20)
    a.stop()
    b.stop()
    members = {r.params["CallUUID"]: r.params["ConferenceMemberID"]
               for r in _events(answer_server) if r.params["ConferenceAction"] == "enter"}
    floors = [(members[r.params["CallUUID"]], r.at - t0) for r in _events(answer_server)
              if r.params["ConferenceAction"] == "floor"]
    assert [m for m, _ in floors[:3]] == ["1", "2", "1"], floors
    assert 5 <= floors[1][1] <= 11 and 11 <= floors[2][1] <= 16, floors
    print("FIGURE floor: " + ", ".join(f"member {m} at {t:.1f} s" for m, t in floors))



def test_sigterm_sends_the_last_events_before_exiting(answer_server, node_factory, uas):
    cb = answer_server.route("/cb", "ok", content_type="text/plain")
    act = answer_server.route("/act", "<Response/>")
    url = answer_server.conference("/answer", "bye", callbackUrl=cb, action=act)
    node = node_factory(url)
    alice = uas("alice", tone_hz=440).dial(node.uri("bye"), 30)
    assert alice.wait_for("Call established", 10)
    assert wait_until(lambda: _events(answer_server), 5)
    code, took = node.terminate()
    assert code == 0 and took < 5, (code, took, node.log()[-2000:])
    assert alice.wait_for("terminated", 5) or alice.wait_for("session closed", 1)
    got = [r.params["ConferenceAction"] for r in _events(answer_server)]
    assert got == ["enter", "exit"], got
    acts = _events(answer_server, "/act")
    assert len(acts) == 1 and acts[0].params["CallStatus"] == "completed"
    print(f"FIGURE SIGTERM: exit event and action delivered, node exited 0 in {took:.1f} s")
