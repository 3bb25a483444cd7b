"""The live-control API against a node with three real baresip members: auth, OpenAPI, room
listing, mute/unmute and deaf/undeaf measured in what alice heard, kick, hang up, end."""

from __future__ import annotations

import re
import time

import httpx
import numpy as np
import pytest
from support.audio import timeline, tone_pcm, wav_bytes
from support.waiting import wait_until

pytestmark = pytest.mark.e2e
A, B, C, CLIP = 440.0, 1000.0, 1700.0, 2300.0
TOKEN = "ops-token"


def test_control_api_with_real_members(answer_server, node_factory, uas):
    url = answer_server.conference("/answer", "ops")
    node = node_factory(url, extra=["--api-token", TOKEN])
    api = httpx.Client(base_url=node.http_url, headers={"Authorization": f"Bearer {TOKEN}"},
                       timeout=10)
    anon = httpx.Client(base_url=node.http_url, timeout=10)

    a = uas("alice", tone_hz=A).dial(node.uri("ops"), 60)
    assert a.wait_for("Call established", 10)
    t0 = time.monotonic()
    b = uas("bob", tone_hz=B).dial(node.uri("ops"), 60)
    assert b.wait_for("Call established", 10)
    c = uas("carol", tone_hz=C).dial(node.uri("ops"), 60)
    assert c.wait_for("Call established", 10)

    # auth and description
    assert anon.get("/v1/rooms").status_code == 401
    bad = anon.get("/v1/rooms", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
    assert anon.get("/health").json() == {"status": "ok"}
    spec = anon.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.") and "/v1/rooms/{room}/members/{member_id}/mute" in \
        spec["paths"] and "/v1/rooms/{room}/end" in spec["paths"]

    live = node.metrics()
    assert live["sipconf_calls_active"] == 3 and live["sipconf_legs_active"] == 3
    assert live["sipconf_rooms_active"] == 1 and live["sipconf_mixer_ticks_total"] > 0
    # Per-leg RTP figures from pjsua's stream statistics: three legs, each receiving (the
    # newest has been up for a moment), nothing lost on loopback, jitter well under a frame.
    rx = {k: v for k, v in live.items() if k.startswith("sipconf_leg_rtp_received_packets{")}
    assert len(rx) == 3 and all('room="ops"' in k and v > 0 for k, v in rx.items()), rx
    lost = [v for k, v in live.items() if k.startswith("sipconf_leg_rtp_lost_packets{")]
    jitter = [v for k, v in live.items() if k.startswith("sipconf_leg_rtp_jitter_seconds{")]
    assert lost == [0, 0, 0] and len(jitter) == 3 and max(jitter) < 0.02, (lost, jitter)
    assert live["sipconf_rtp_lost_packets"] == 0
    # Room tick durations: a histogram whose buckets add up to every room tick done.
    n_ticks = live["sipconf_mixer_room_tick_seconds_count"]
    buckets = [v for k, v in live.items() if k.startswith("sipconf_mixer_room_tick_seconds_b")]
    assert n_ticks > 0 and buckets == sorted(buckets) and buckets[-1] == n_ticks, buckets
    assert 0 < live["sipconf_mixer_room_tick_seconds_sum"] < n_ticks * 0.02

    rooms = api.get("/v1/rooms").json()
    assert [r["name"] for r in rooms] == ["ops"]
    members = {m["member_id"]: m for m in rooms[0]["members"]}
    assert sorted(members) == ["1", "2", "3"]
    # From as the INVITE wrote it, port included (baresip's local port)
    assert re.fullmatch(r"sip:alice@127\.0\.0\.1:\d+", members["1"]["from"]), members["1"]
    assert not members["2"]["muted"]
    assert abs(members["1"]["joined_at"] - time.time()) < 30
    assert wait_until(lambda: all(m["talking"] for m in api.get("/v1/rooms/ops").json()["members"]),
                 5)
    assert api.get("/v1/rooms/nope").status_code == 404
    assert api.post("/v1/rooms/ops/members/9/mute").status_code == 404

    marks = {}

    def act(name, path):
        marks[name] = time.monotonic() - t0
        r = api.post(path)
        assert r.status_code == 200 and r.json() == {"ok": True}, r.text

    time.sleep(2)
    act("mute", "/v1/rooms/ops/members/2/mute")
    m2 = next(m for m in api.get("/v1/rooms/ops").json()["members"] if m["member_id"] == "2")
    assert m2["muted"]
    time.sleep(3)
    act("unmute", "/v1/rooms/ops/members/2/unmute")
    time.sleep(2.5)
    act("deaf", "/v1/rooms/ops/members/1/deaf")
    time.sleep(3)
    act("undeaf", "/v1/rooms/ops/members/1/undeaf")
    time.sleep(1.0)
    # a sound to the whole room, speech to alice alone, a recording started and stopped
    clip = answer_server.route("/clip.wav", wav_bytes(tone_pcm(CLIP, 1.0, 16000), 16000),
                               content_type="audio/wav")
    marks["play"] = time.monotonic() - t0
    r = api.post("/v1/rooms/ops/play", json={"url": clip})
    assert r.status_code == 200 and r.json()["ok"] and r.json()["seconds"] == 1.0, r.text
    assert api.post("/v1/rooms/ops/play", json={"url": answer_server.url("/nothing")}
                    ).status_code == 400
    assert api.post("/v1/rooms/ops/play", content=b"[1]").status_code == 400
    r = api.post("/v1/rooms/ops/speak", json={"text": "hello alice", "member_id": "1"})
    assert r.status_code == 200 and r.json()["seconds"] > 0.3
    r = api.post("/v1/rooms/ops/record/start", json={"format": "wav"})
    assert r.status_code == 200 and r.json()["RecordUrl"].endswith(".wav"), r.text
    assert api.post("/v1/rooms/ops/record/start", json={}).status_code == 409  # already
    time.sleep(2.0)
    stop = api.post("/v1/rooms/ops/record/stop", json={})
    assert stop.status_code == 200 and stop.json()["RecordUrl"] == r.json()["RecordUrl"]
    assert api.post("/v1/rooms/nope/speak", json={"text": "x"}).status_code == 404
    rec_url = r.json()["RecordUrl"]
    got = wait_until(lambda: (x := httpx.get(rec_url)).status_code == 200 and len(x.content) > 44
                and x, 5)
    assert got and 1.5 <= (len(got.content) - 44) / 32000 <= 3.0, len(got.content)
    act("kick", "/v1/rooms/ops/members/3/kick")
    assert c.wait_for("terminated", 5) or c.terminated  # no next element: hung up
    assert [m["member_id"] for m in api.get("/v1/rooms/ops").json()["members"]] == ["1", "2"]
    act("hangup", "/v1/rooms/ops/members/2/hangup")
    assert b.wait_for("terminated", 5) or b.terminated
    assert wait_until(lambda: [m["member_id"] for m in api.get("/v1/rooms/ops").json()["members"]]
                 == ["1"], 5)
    act("end", "/v1/rooms/ops/end")
    assert a.wait_for("terminated", 5) or a.terminated
    assert wait_until(lambda: api.get("/v1/rooms/ops").status_code == 404, 5)
    for ua in (a, b, c):
        ua.stop()
    done = wait_until(lambda: (m := node.metrics())["sipconf_calls_active"] == 0 and m, 5)
    assert done['sipconf_calls_total{outcome="answered"}'] == 3
    assert done["sipconf_answer_url_seconds_count"] == 3
    assert done['sipconf_answer_url_seconds_bucket{le="+Inf"}'] == 3
    assert done["sipconf_rooms_active"] == 0 and done["sipconf_webhook_queue_depth"] == 0

    levels, rest, fs = timeline(a.heard(), [A, B, C, CLIP])

    def level(tone, t1, t2):
        j = [A, B, C, CLIP].index(tone)
        return float(np.median(levels[int(t1 / fs):int(t2 / fs), j]))

    m = marks
    bob_on = level(B, m["mute"] - 1.5, m["mute"] - 0.3)
    bob_muted = level(B, m["mute"] + 0.5, m["unmute"] - 0.3)
    bob_back = level(B, m["unmute"] + 0.5, m["deaf"] - 0.3)
    carol_while_muted = level(C, m["mute"] + 0.5, m["unmute"] - 0.3)
    assert bob_on - bob_muted >= 30 and bob_back - bob_muted >= 30, (bob_on, bob_muted, bob_back)
    assert carol_while_muted - bob_muted >= 30
    deaf_b = level(B, m["deaf"] + 0.5, m["undeaf"] - 0.3)
    deaf_c = level(C, m["deaf"] + 0.5, m["undeaf"] - 0.3)
    after_c = level(C, m["undeaf"] + 0.5, m["kick"] - 0.3)
    assert bob_back - deaf_b >= 30 and after_c - deaf_c >= 30, (deaf_b, deaf_c, after_c)
    clip_on = float(np.max(levels[int((m["play"] + 0.2) / fs):int((m["play"] + 1.2) / fs), 3]))
    clip_before = float(np.median(levels[int((m["undeaf"] + 0.5) / fs):
                                         int((m["play"] - 0.2) / fs), 3]))
    assert clip_on - clip_before >= 30, (clip_on, clip_before)
    print(f"FIGURE API: mute drops bob at alice by {bob_on - bob_muted:.0f} dB (back "
          f"+{bob_back - bob_muted:.0f}); deaf drops bob/carol at alice by "
          f"{bob_back - deaf_b:.0f}/{after_c - deaf_c:.0f} dB; played clip "
          f"+{clip_on - clip_before:.0f} dB")
