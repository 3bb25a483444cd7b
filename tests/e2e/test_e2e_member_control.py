"""Per-member volume and hold through the control API, measured in what real baresip members
hear: alice's input volume changes what everyone hears of her, carol's output volume what she
hears of everyone; alice on hold hears the hold music and nobody, and nobody hears her."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
from support.audio import timeline, tone_pcm, wav_bytes, write_wav
from support.waiting import wait_until

pytestmark = pytest.mark.e2e
A, B, MUSIC = 440.0, 1000.0, 2300.0
TOKEN = "ops-token"



def test_member_volumes_and_hold_measured_at_the_members(answer_server, node_factory, uas):
    cb = answer_server.route("/cb", "ok", content_type="text/plain")
    music = answer_server.route("/hold.wav", wav_bytes(tone_pcm(MUSIC, 2.0, 16000), 16000),
                                content_type="audio/wav")
    url = answer_server.conference("/answer", "vol", callbackUrl=cb)
    node = node_factory(url, extra=["--api-token", TOKEN])
    api = node.api(TOKEN)
    a = uas("alice", tone_hz=A).dial(node.uri("vol"), 40)
    assert a.wait_for("Call established", 10)
    ta0 = time.monotonic()
    b = uas("bob", tone_hz=B).dial(node.uri("vol"), 40)
    assert b.wait_for("Call established", 10)
    c = uas("carol").dial(node.uri("vol"), 40)  # a silent listener
    assert c.wait_for("Call established", 10)
    t0 = time.monotonic()

    def volume(member: str, **levels) -> float:
        r = api.post(f"/v1/rooms/vol/members/{member}/volume", json=levels)
        assert r.status_code == 200 and r.json() == {"ok": True}, r.text
        return time.monotonic() - t0

    # refused: out of range, not a number, nothing asked, no such member
    for bad in ({"in": -30}, {"out": 13}, {"in": "loud"}, {"in": True}, {}):
        r = api.post("/v1/rooms/vol/members/1/volume", json=bad)
        assert r.status_code == 400 and "error" in r.json(), (bad, r.text)
    assert api.post("/v1/rooms/vol/members/9/volume", json={"in": -3}).status_code == 404
    assert api.post("/v1/rooms/nope/members/1/volume", json={"in": -3}).status_code == 404

    time.sleep(3.0)
    t_alice = volume("1", **{"in": -12})
    members = {m["member_id"]: m for m in api.get("/v1/rooms/vol").json()["members"]}
    assert members["1"]["volume_in"] == -12 and members["1"]["volume_out"] == 0
    time.sleep(3.0)
    t_carol = volume("1", **{"in": 0})
    volume("3", out=-6)
    assert api.get("/v1/rooms/vol").json()["members"][2]["volume_out"] == -6
    time.sleep(3.0)
    t_end = time.monotonic() - t0

    # hold: alice hears the music and not the room; nobody hears alice; then back
    assert api.post("/v1/rooms/vol/members/1/hold", json={"music": "ftp://x"}).status_code == 400
    assert api.post("/v1/rooms/vol/members/3/volume", json={"out": 0}).status_code == 200
    r = api.post("/v1/rooms/vol/members/1/hold", json={"music": music})
    assert r.status_code == 200, r.text
    t_hold = time.monotonic() - t0
    assert api.get("/v1/rooms/vol").json()["members"][0]["held"]
    time.sleep(3.5)
    assert api.post("/v1/rooms/vol/members/1/unhold").status_code == 200
    t_unhold = time.monotonic() - t0
    time.sleep(3.0)
    t_done = time.monotonic() - t0
    for ua in (a, b, c):
        ua.stop()

    def actions() -> list[str]:
        return [r.params["ConferenceAction"] for r in answer_server.requests_to("/cb")
                if r.params["ConferenceMemberID"] == "1"]
    assert wait_until(lambda: actions()[:3] == ["enter", "hold", "unhold"], 10), actions()

    levels, _rest, frame_s = timeline(c.heard(), [A, B])

    def level(start: float, end: float, lv=levels) -> np.ndarray:
        return np.median(lv[int((start + 0.5) / frame_s): int((end - 0.3) / frame_s)], axis=0)

    before, alice_down, carol_down = (level(0.0, t_alice), level(t_alice, t_carol),
                                      level(t_carol, t_end))
    d_alice = alice_down - before
    d_carol = carol_down - before
    print(f"FIGURE member volume: alice in -12 dB -> carol heard alice {d_alice[0]:+.2f} dB, "
          f"bob {d_alice[1]:+.2f} dB; carol out -6 dB -> alice {d_carol[0]:+.2f} dB, "
          f"bob {d_carol[1]:+.2f} dB")
    assert abs(d_alice[0] + 12) <= 1.0 and abs(d_alice[1]) <= 1.0, d_alice
    assert abs(d_carol[0] + 6) <= 1.0 and abs(d_carol[1] + 6) <= 1.0, d_carol

    # carol during the hold: bob as before, alice gone (> 30 dB down); back after unhold
    held, back = level(t_hold, t_unhold), level(t_unhold, t_done)
    # alice (her recording started ta0 - t0 before carol's clock): music, not bob; then bob
    la, _r, _f = timeline(a.heard(), [MUSIC, B])
    off = t0 - ta0
    a_before, a_held, a_back = (level(off + t_carol, off + t_hold, la),
                                level(off + t_hold, off + t_unhold, la),
                                level(off + t_unhold, off + t_done, la))
    print(f"FIGURE hold: carol heard alice {held[0] - before[0]:+.1f} dB on hold, "
          f"{back[0] - before[0]:+.1f} dB after; alice heard the music "
          f"{a_held[0] - a_before[0]:+.1f} dB over before, bob {a_held[1] - a_before[1]:+.1f} "
          "dB on hold")
    assert before[0] - held[0] > 30 and abs(held[1] - before[1]) <= 1.5, (before, held)
    assert abs(back[0] - before[0]) <= 1.5, (before, back)
    assert a_held[0] - a_before[0] > 30 and a_before[1] - a_held[1] > 30, (
        a_before, a_held, [ln for ln in node.log().splitlines() if "hold" in ln])
    assert a_back[1] - a_held[1] > 30 and a_held[0] - a_back[0] > 30, (a_held, a_back)


def test_talk_events_follow_a_scripted_talker(answer_server, node_factory, uas, tmp_path):
    cb = answer_server.route("/cb", "ok", content_type="text/plain")
    url = answer_server.conference("/answer", "talk", callbackUrl=cb, talkEvent="true")
    node = node_factory(url)
    # the script: quiet 2 s, talk 1.5 s, quiet 1.5 s, talk 1.0 s, quiet; low noise throughout
    rate = 8000
    script = [(2.0, False), (1.5, True), (1.5, False), (1.0, True), (3.0, False)]
    rng = np.random.default_rng(7)
    parts = [tone_pcm(A, s, rate, amplitude=0.3) if on else np.zeros(int(s * rate), np.int16)
             for s, on in script]
    pcm = np.concatenate(parts).astype(np.float64) + rng.normal(0, 30, sum(map(len, parts)))
    mic = tmp_path / "talker.wav"
    write_wav(mic, np.clip(pcm, -32768, 32767).astype(np.int16), rate)
    listener = uas("bob").dial(node.uri("talk"), 30)
    assert listener.wait_for("Call established", 10)
    talker = uas("alice", mic_wav=mic).dial(node.uri("talk"), 30)
    assert talker.wait_for("Call established", 10)
    t_est = time.monotonic()

    def talk_events() -> list:
        return [r for r in answer_server.requests_to("/cb")
                if r.params["ConferenceMemberID"] == "2"
                and r.params["ConferenceAction"] in ("talking", "stopped-talking")]

    assert wait_until(lambda: len(talk_events()) >= 4, 12), [
        r.params for r in answer_server.requests_to("/cb")]
    time.sleep(1.0)
    talker.stop()
    listener.stop()
    evs = talk_events()
    kinds = [r.params["ConferenceAction"] for r in evs]
    assert kinds == ["talking", "stopped-talking", "talking", "stopped-talking"], kinds
    assert all(r.params["ConferenceName"] == "talk" for r in evs)
    at = [r.at - t_est for r in evs]
    spans = [at[1] - at[0], at[2] - at[1], at[3] - at[2]]
    print(f"FIGURE talk events: talking at {at[0]:.2f} s (script 2.0 s after the call was up), "
          f"spans {', '.join(f'{s:.2f}' for s in spans)} s (script 1.5, 1.5, 1.0)")
    # `at` is when the web app got each callback: the detector's 100 ms release plus the webhook
    # worker's delivery on a loaded 2-core box (measured up to 0.10 s off the script in CI)
    for got, want in zip(spans, (1.5, 1.5, 1.0), strict=True):
        assert abs(got - want) <= 0.15, (spans, at)
    assert 1.9 <= at[0] <= 2.6, at  # the mic starts with the call; detection takes ~80 ms


def test_a_coach_is_heard_by_the_coached_member_alone(answer_server, node_factory, uas):
    C = 1700.0
    url = answer_server.conference("/answer", "desk")
    node = node_factory(url, extra=["--api-token", TOKEN])
    api = node.api(TOKEN)
    uas_ = {}
    started = {}
    for name, hz in (("alice", A), ("bob", B), ("carol", C)):  # carol: the supervisor
        uas_[name] = uas(name, tone_hz=hz).dial(node.uri("desk"), 40)
        assert uas_[name].wait_for("Call established", 10)
        started[name] = time.monotonic()
    t0 = time.monotonic()
    for bad in ({}, {"member_id": "3"}, {"member_id": ""}, {"member_id": [2]}):
        r = api.post("/v1/rooms/desk/members/3/coach", json=bad)
        assert r.status_code == 400, (bad, r.text)
    assert api.post("/v1/rooms/desk/members/3/coach", json={"member_id": "9"}).status_code == 404
    time.sleep(3.0)
    r = api.post("/v1/rooms/desk/members/3/coach", json={"member_id": 2})
    assert r.status_code == 200 and r.json() == {"ok": True}, r.text
    t_coach = time.monotonic() - t0
    carol = next(m for m in api.get("/v1/rooms/desk").json()["members"] if m["member_id"] == "3")
    assert carol["coach"] and carol["coaching"] == "2"
    time.sleep(4.0)
    assert api.post("/v1/rooms/desk/members/3/uncoach").status_code == 200
    t_uncoach = time.monotonic() - t0
    time.sleep(3.0)
    t_end = time.monotonic() - t0
    for ua in uas_.values():
        ua.stop()

    def phases(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        levels, _rest, frame_s = timeline(uas_[name].heard(), [A, B, C])
        off = t0 - started[name]

        def level(start: float, end: float) -> np.ndarray:
            return np.median(levels[int((off + start + 0.5) / frame_s):
                                    int((off + end - 0.3) / frame_s)], axis=0)

        return level(0.0, t_coach), level(t_coach, t_uncoach), level(t_uncoach, t_end)

    (a0, a1, a2), (b0, b1, _b2), (c0, c1, _c2) = (phases("alice"), phases("bob"),
                                                  phases("carol"))
    print(f"FIGURE coach: carol (coach of bob) in alice's ear {a1[2] - a0[2]:+.1f} dB while "
          f"coaching, in bob's {b1[2] - b0[2]:+.1f} dB; carol heard alice {c1[0] - c0[0]:+.1f} "
          f"dB and bob {c1[1] - c0[1]:+.1f} dB; after uncoach alice hears carol "
          f"{a2[2] - a0[2]:+.1f} dB")
    assert a0[2] - a1[2] > 30, (a0, a1)  # alice does not hear the coach ...
    assert abs(a1[1] - a0[1]) <= 1.5  # ... but still bob
    assert abs(b1[2] - b0[2]) <= 1.5 and abs(b1[0] - b0[0]) <= 1.5, (b0, b1)  # bob: all
    assert abs(c1[0] - c0[0]) <= 1.5 and abs(c1[1] - c0[1]) <= 1.5, (c0, c1)  # carol: all
    assert abs(a2[2] - a0[2]) <= 1.5, (a0, a2)  # heard by everyone again


def test_per_member_tracks_are_aligned_and_each_holds_its_own_voice(
        answer_server, node_factory, uas, tmp_path):
    import json

    from support.audio import band_levels, read_wav

    C = 1700.0
    cb = answer_server.route("/cb", "ok", content_type="text/plain")
    url = answer_server.conference("/answer", "rec", callbackUrl=cb)
    node = node_factory(url, extra=["--api-token", TOKEN])
    api = node.api(TOKEN)
    a = uas("alice", tone_hz=A).dial(node.uri("rec"), 30)
    assert a.wait_for("Call established", 10)
    b = uas("bob", tone_hz=B).dial(node.uri("rec"), 30)
    assert b.wait_for("Call established", 10)
    assert api.post("/v1/rooms/rec/record/start",
                    json={"format": "wav", "tracks": "yes"}).status_code == 400
    r = api.post("/v1/rooms/rec/record/start", json={"format": "wav", "tracks": True})
    assert r.status_code == 200, r.text
    t_start = time.monotonic()
    time.sleep(2.0)
    c = uas("carol", tone_hz=C).dial(node.uri("rec"), 30)  # joins late: silence first
    assert c.wait_for("Call established", 10)
    t_carol = time.monotonic() - t_start
    time.sleep(3.0)
    stop = api.post("/v1/rooms/rec/record/stop", json={})
    assert stop.status_code == 200, stop.text

    def record_event():
        return next((q for q in answer_server.requests_to("/cb")
                     if q.params["ConferenceAction"] == "record"), None)

    assert wait_until(record_event, 10)
    for ua in (a, b, c):
        ua.stop()
    ev = record_event().params
    tracks = json.loads(ev["RecordTracks"])
    assert sorted(t["member_id"] for t in tracks) == ["1", "2", "3"], tracks

    def fetch(url: str, name: str) -> np.ndarray:
        got = httpx.get(url, timeout=10)
        assert got.status_code == 200 and got.content[:4] == b"RIFF", url
        (tmp_path / name).write_bytes(got.content)
        pcm, rate = read_wav(tmp_path / name)
        assert rate == 16000
        return pcm

    mix = fetch(ev["RecordUrl"], "mix.wav")
    tones = {"1": A, "2": B, "3": C}
    report = []
    for t in tracks:
        pcm = fetch(t["RecordUrl"], f"track{t['member_id']}.wav")
        assert abs(len(pcm) - len(mix)) <= 16000 * 0.1, (len(pcm), len(mix))  # aligned
        levels, _rest = band_levels(pcm, 16000, [A, B, C])
        own = list(tones).index(t["member_id"])
        start = int((t_carol + 1.0) * 10) if t["member_id"] == "3" else 5
        body = np.median(levels[start:-3], axis=0)
        others = [body[j] for j in range(3) if j != own]
        report.append(f"member {t['member_id']}: own {body[own] - max(others):.0f} dB over "
                      f"the others")
        assert body[own] - max(others) >= 40, (t["member_id"], body)
        if t["member_id"] == "3":  # carol's track is silent until she joined
            lead = np.median(levels[: int((t_carol - 0.5) * 10)], axis=0)
            assert body[own] - lead[own] > 40, (lead, body)
    print(f"FIGURE tracks: {'; '.join(report)}; mix {len(mix) / 16000:.2f} s, tracks within "
          f"0.1 s of it; carol joined {t_carol:.1f} s in, silent before")


def test_record_tracks_attribute_writes_mp3_tracks_from_the_document(answer_server,
                                                                      node_factory, uas):
    """``<Conference record="true" recordTracks="true" recordFileFormat="mp3">``: the room's
    recording starts with the run and also writes one mp3 per member, listed in the record
    event (the same tracks as the API's record/start {"tracks": true})."""
    import json

    from support.audio import band_levels, decode_audio

    cb = answer_server.route("/cb", "ok", content_type="text/plain")
    url = answer_server.conference("/answer", "mp3rec", callbackUrl=cb, record="true",
                                   recordTracks="true", recordFileFormat="mp3")
    node = node_factory(url, extra=["--api-token", TOKEN])
    a = uas("alice", tone_hz=A).dial(node.uri("mp3rec"), 30)
    assert a.wait_for("Call established", 10)
    b = uas("bob", tone_hz=B).dial(node.uri("mp3rec"), 30)
    assert b.wait_for("Call established", 10)
    time.sleep(4.0)
    a.stop()
    b.stop()

    def record_event():
        return next((q for q in answer_server.requests_to("/cb")
                     if q.params["ConferenceAction"] == "record"), None)

    assert wait_until(record_event, 15), [q.params for q in answer_server.requests_to("/cb")]
    ev = record_event().params
    assert ev["RecordUrl"].endswith(".mp3")
    tracks = json.loads(ev["RecordTracks"])
    assert sorted(t["member_id"] for t in tracks) == ["1", "2"], tracks
    report = []
    for t in tracks:
        got = httpx.get(t["RecordUrl"], timeout=10)
        assert got.status_code == 200 and t["RecordUrl"].endswith(".mp3"), t
        pcm = decode_audio(got.content)
        levels, _rest = band_levels(pcm, 16000, [A, B])
        own = 0 if t["member_id"] == "1" else 1
        body = np.median(levels[15:-5], axis=0)  # from 1.5 s: bob dialled after alice
        report.append(f"member {t['member_id']}: own {body[own] - body[1 - own]:.0f} dB")
        assert body[own] - body[1 - own] >= 40, (t, body)
    print(f"FIGURE mp3 tracks from recordTracks=\"true\": {'; '.join(report)} over the other")
