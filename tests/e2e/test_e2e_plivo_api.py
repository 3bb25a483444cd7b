"""The Plivo-shaped Conference API driven by the official ``plivo`` SDK's ``RestClient`` against
a live node with two real baresip members, the SDK pointed at the node by the README's one
line: list and get the conference, mute bob (alice stops hearing him), play a clip to alice
alone (bob does not hear it), kick bob (his call goes on with its document: it ends)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from support.audio import timeline, tone_pcm, wav_bytes
from support.waiting import wait_until

pytestmark = pytest.mark.e2e
A, B, CLIP = 440.0, 1000.0, 2300.0
AUTH_ID = "MAZDQ1ZDRKMZDLMDKYZT"  # the SDK takes only 20-character MA.../SA... ids
TOKEN = "sdk-auth-token"


def test_plivo_sdk_mutes_plays_to_and_kicks_live_members(answer_server, node_factory, uas):
    plivo = pytest.importorskip("plivo")
    import plivo.rest.client as plivo_client
    from plivo import exceptions

    url = answer_server.conference("/answer", "sales")
    node = node_factory(url, extra=["--auth-id", AUTH_ID, "--auth-token", TOKEN])
    saved = (plivo_client.API_VOICE_BASE_URI, plivo_client.API_VOICE_BASE_URI_FALLBACK_1,
             plivo_client.API_VOICE_BASE_URI_FALLBACK_2)
    try:
        # the README's one line (the fallbacks too: the SDK retries a 5xx on them)
        plivo_client.API_VOICE_BASE_URI = plivo_client.API_VOICE_BASE_URI_FALLBACK_1 = \
            plivo_client.API_VOICE_BASE_URI_FALLBACK_2 = f"{node.http_url}/v1/Account"
        client = plivo.RestClient(AUTH_ID, TOKEN)

        a = uas("alice", tone_hz=A).dial(node.uri("sales"), 60)
        assert a.wait_for("Call established", 10)
        t0 = time.monotonic()
        b = uas("bob", tone_hz=B).dial(node.uri("sales"), 60)
        assert b.wait_for("Call established", 10)
        assert wait_until(lambda: client.conferences.get("sales").conference_member_count
                          == "2", 5)

        assert client.conferences.list().conferences == ["sales"]
        conf = client.conferences.get("sales")
        assert conf.conference_name == "sales" and int(conf.conference_run_time) >= 0
        members = {m.member_id: m for m in conf.members}
        assert sorted(members) == ["1", "2"]
        assert members["1"]["from"].startswith("sip:alice@127.0.0.1")
        assert members["2"].to == "sales" and not members["2"].muted
        assert members["1"].direction == "inbound" and members["1"].call_uuid
        with pytest.raises(exceptions.ResourceNotFoundError):
            client.conferences.get("nope")
        with pytest.raises(exceptions.AuthenticationError):
            plivo.RestClient(AUTH_ID, "wrong").conferences.list()

        marks: dict[str, float] = {}
        time.sleep(2.5)
        marks["mute"] = time.monotonic() - t0
        r = client.conferences.member_mute("sales", "2")
        assert r.message == "muted" and r.member_id == "2"
        assert [m.muted for m in client.conferences.get("sales").members] == [False, True]
        time.sleep(3)
        marks["unmute"] = time.monotonic() - t0
        assert client.conferences.member_mute_stop("sales", "2") is None  # 204
        time.sleep(2)

        clip = answer_server.route("/clip.wav", wav_bytes(tone_pcm(CLIP, 1.0, 16000), 16000),
                                   content_type="audio/wav")
        marks["play"] = time.monotonic() - t0
        r = client.conferences.member_play("sales", "1", clip)
        assert r.message == "play queued into conference" and r.member_id == "1"
        time.sleep(2)

        marks["kick"] = time.monotonic() - t0
        r = client.conferences.member_kick("sales", "2")
        assert r.message == "kicked"
        assert b.wait_for("terminated", 5) or b.terminated  # no next element: hung up
        assert wait_until(lambda: [m.member_id for m in client.conferences.get("sales").members]
                          == ["1"], 5)
        assert client.conferences.hangup("sales") is None
        assert a.wait_for("terminated", 5) or a.terminated
        assert wait_until(lambda: client.conferences.list().conferences == [], 5)
    finally:
        (plivo_client.API_VOICE_BASE_URI, plivo_client.API_VOICE_BASE_URI_FALLBACK_1,
         plivo_client.API_VOICE_BASE_URI_FALLBACK_2) = saved
    a.stop()
    b.stop()
    assert node.metrics().get('sipconf_faults_total{where="api"}', 0) == 0

    freqs = [A, B, CLIP]
    heard_a, _, fs = timeline(a.heard(), freqs)
    heard_b, _, _ = timeline(b.heard(), freqs)

    def level(levels, tone, t1, t2, fn=np.median):
        j = freqs.index(tone)
        return float(fn(levels[int(t1 / fs):int(t2 / fs), j]))

    m = marks
    bob_on = level(heard_a, B, m["mute"] - 1.5, m["mute"] - 0.3)
    bob_muted = level(heard_a, B, m["mute"] + 0.5, m["unmute"] - 0.3)
    bob_back = level(heard_a, B, m["unmute"] + 0.5, m["play"] - 0.3)
    assert bob_on - bob_muted >= 30 and bob_back - bob_muted >= 30, (bob_on, bob_muted, bob_back)
    clip_a = level(heard_a, CLIP, m["play"] + 0.2, m["play"] + 1.2, np.max)
    clip_a_before = level(heard_a, CLIP, m["unmute"] + 0.5, m["play"] - 0.2)
    assert clip_a - clip_a_before >= 30, (clip_a, clip_a_before)
    # bob's timeline starts a moment after alice's: a generous window, and still silence
    clip_b = level(heard_b, CLIP, m["play"] - 1.0, m["play"] + 2.0, np.max)
    assert clip_a - clip_b >= 30, (clip_a, clip_b)
    print(f"FIGURE PLIVO API: SDK mute drops bob at alice by {bob_on - bob_muted:.0f} dB; "
          f"clip to alice +{clip_a - clip_a_before:.0f} dB, {clip_a - clip_b:.0f} dB under at bob")
