"""Rooms that behave like a conference service, with real softphones and measured audio.

Each baresip UA sends its own tone; what it decoded is analysed per frame (FFT band levels).
Tones: callers 440 / 1000 / 1700 Hz, beeps 700 Hz, wait music 2300 Hz (an mp3), a Play
clip 600 Hz (a wav).
"""

import time

import numpy as np
import pytest
from support.audio import (
    bursts,
    encode_mp3,
    read_wav,
    timeline,
    tone_pcm,
    tone_report,
    wav_bytes,
)
from support.waiting import wait_until

pytestmark = pytest.mark.e2e

A, B, C = 440.0, 1000.0, 1700.0
BEEP, MUSIC, CLIP = 700.0, 2300.0, 600.0
FREQS = [A, B, C, BEEP, MUSIC, CLIP]


def figure(test: str, **values) -> None:
    """Measured figures, printed for the record (pytest -s shows them)."""
    print(f"FIGURE {test}: " + ", ".join(f"{k}={v:.2f}" if isinstance(v, float) else
                                          f"{k}={v}" for k, v in values.items()))


def conf_doc(room: str, before: str = "", after: str = "", **attrs: str) -> str:
    a = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return f"<Response>{before}<Conference{a}>{room}</Conference>{after}</Response>"


def established(*phones, timeout=10):
    for ua in phones:
        assert ua.wait_for("Call established", timeout), ua.output()[-2000:]


def wait_terminated(ua, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ua.terminated:
            return time.monotonic()
        time.sleep(0.05)
    return None


def test_muted_member_hears_and_is_not_heard(answer_server, node_factory, uas):
    url = answer_server.per_user("/answer", {
        "alice": conf_doc("m"), "bob": conf_doc("m", muted="true"), "carol": conf_doc("m")})
    node = node_factory(url)
    phones = {n: uas(n, tone_hz=f).dial(node.uri(n), 30)
              for n, f in (("alice", A), ("bob", B), ("carol", C))}
    established(*phones.values())
    time.sleep(6)
    for ua in phones.values():
        ua.stop()
    ra = tone_report(phones["alice"].heard(), [A, B, C])
    rc = tone_report(phones["carol"].heard(), [A, B, C])
    rb = tone_report(phones["bob"].heard(), [A, B, C])
    figure("muted", alice_hears_bob_below_carol_db=ra[C] - ra[B],
           carol_hears_bob_below_alice_db=rc[A] - rc[B],
           bob_hears_alice_snr_db=rb[A] - rb["rest"], bob_hears_carol_snr_db=rb[C] - rb["rest"])
    # Nobody hears bob: his tone >= 50 dB below what alice and carol hear of each other.
    assert ra[C] - ra[B] >= 50, ra
    assert rc[A] - rc[B] >= 50, rc
    # Bob hears both.
    assert rb[A] - rb["rest"] >= 20 and rb[C] - rb["rest"] >= 20, rb


def test_waiting_room_music_then_moderator_then_end(answer_server, node_factory, uas):
    music = answer_server.route("/music.mp3", encode_mp3(tone_pcm(MUSIC, 4.0, 16000), 16000),
                                content_type="audio/mpeg")
    hold = answer_server.route("/hold.xml", f"<Response><Play>{music}</Play></Response>")
    url = answer_server.per_user("/answer", {
        "waiter": conf_doc("mod", startConferenceOnEnter="false", waitSound=hold),
        "boss": conf_doc("mod", startConferenceOnEnter="true", endConferenceOnExit="true"),
    })
    node = node_factory(url)
    waiter = uas("waiter", tone_hz=A).dial(node.uri("waiter"), 40)
    established(waiter)
    t_waiter = time.monotonic()
    time.sleep(4)
    boss = uas("boss", tone_hz=B).dial(node.uri("boss"), 40)
    established(boss)
    t_boss = time.monotonic() - t_waiter
    time.sleep(4)
    boss.hangup()
    t_bye = time.monotonic()
    ended = wait_terminated(waiter, 6)
    assert ended is not None, waiter.output()[-2000:]
    assert ended - t_bye <= 3.0, f"waiter's call ended {ended - t_bye:.1f} s after the moderator"
    waiter.stop()
    boss.stop()
    levels, rest, fs = timeline(waiter.heard(), FREQS)
    music, mod = levels[:, FREQS.index(MUSIC)], levels[:, FREQS.index(B)]
    before = slice(int(1.0 / fs), int((t_boss - 0.5) / fs))
    after = slice(int((t_boss + 1.0) / fs), int((t_boss + 3.5) / fs))
    figure("waiting", music_snr_waiting_db=float(np.median(music[before] - rest[before])),
           moderator_snr_live_db=float(np.median(mod[after] - rest[after])),
           music_drop_db=float(np.median(music[before]) - np.median(music[after])),
           call_end_after_moderator_s=ended - t_bye)
    # Waiting: the music, and not the moderator (who is not there) nor anything else.
    assert np.median(music[before]) - np.median(rest[before]) >= 20
    # Live: the moderator, loud; the music stopped (>= 30 dB down from while waiting).
    assert np.median(mod[after]) - np.median(rest[after]) >= 20
    assert np.median(music[before]) - np.median(music[after]) >= 30
    # The moderator never heard the music and heard the waiter once live.
    rb = tone_report(boss.heard(), FREQS, skip_s=1.0)
    assert rb[A] - rb["rest"] >= 20 and rb[A] - rb[MUSIC] >= 30, rb


@pytest.mark.parametrize("enter, exit_, n_enter, n_exit",
                         [("beep:1", "beep:2", 1, 2), ("beep:2", "beep:1", 2, 1)])
def test_enter_and_exit_beeps(answer_server, node_factory, uas, enter, exit_, n_enter, n_exit):
    url = answer_server.per_user("/answer", {
        "listener": conf_doc("beeps"),
        "joiner": conf_doc("beeps", enterSound=enter, exitSound=exit_),
    })
    node = node_factory(url)
    listener = uas("listener", tone_hz=0.0).dial(node.uri("listener"), 40)
    established(listener)
    time.sleep(1.5)
    joiner = uas("joiner", tone_hz=0.0).dial(node.uri("joiner"), 40)
    established(joiner)
    time.sleep(3)
    joiner.hangup()
    time.sleep(2.5)
    listener.stop()
    joiner.stop()
    levels, rest, fs = timeline(listener.heard(), [BEEP], frame_s=0.02)
    beep = levels[:, 0]
    on = beep - np.median(beep) > 30
    found = bursts(on, fs)
    figure(f"beeps {enter}/{exit_}", bursts=len(found),
           lengths_ms=[round(length * 1000) for _, length in found])
    assert len(found) == n_enter + n_exit, found
    for _start, length in found:
        assert 0.24 <= length <= 0.36, found  # 300 ms each
    gap = found[n_enter][0] - found[n_enter - 1][0]
    assert gap > 2.0, found  # the enter group, then (after the call) the exit group
    if n_enter == 2:
        assert 0.45 <= found[1][0] - found[0][0] <= 0.55, found  # 300 ms on + 200 ms off


def test_max_members_refuses_the_third_caller(answer_server, node_factory, uas):
    url = answer_server.conference("/answer", "full", maxMembers="2",
                                   action=answer_server.url("/action"), redirect="false")
    answer_server.route("/action", "<Response/>")
    node = node_factory(url)
    a = uas("alice", tone_hz=A).dial(node.uri("full"), 30)
    b = uas("bob", tone_hz=B).dial(node.uri("full"), 30)
    established(a, b)
    c = uas("carol", tone_hz=C).dial(node.uri("full"), 30)
    t_dial = time.monotonic()
    ended = wait_terminated(c, 8)
    assert ended is not None, c.output()[-2000:]
    time.sleep(4)
    for ua in (a, b, c):
        ua.stop()
    assert "refused by room full" in node.log()
    figure("maxMembers=2", third_call_ended_s=ended - t_dial)
    ra = tone_report(a.heard(), [A, B, C])
    assert ra[B] - ra["rest"] >= 20 and ra[B] - ra[C] >= 40, ra  # carol never got in
    dumps = sorted(c.dir.glob("dump-*-dec.wav"))
    if dumps:  # answered, then hung up at once: whatever carol got holds no member's tone
        pcm, _ = read_wav(dumps[-1])
        assert len(pcm) == 0 or np.abs(pcm).max() < 300, np.abs(pcm).max()
    action = answer_server.requests_to("/action")
    refused = [r for r in action if r.params["ConferenceUUID"] == ""]
    assert len(refused) == 1  # the members' own actions come when they hang up
    assert refused[0].params["ConferenceName"] == "full"
    assert refused[0].params["ConferenceMemberID"] == ""
    assert all(r.params["ConferenceMemberID"] in ("1", "2") for r in action if r not in refused)


def test_time_limit_ends_every_call(answer_server, node_factory, uas):
    url = answer_server.conference("/answer", "short", timeLimit="6")
    node = node_factory(url)
    a = uas("alice", tone_hz=A).dial(node.uri("short"), 40)
    b = uas("bob", tone_hz=B).dial(node.uri("short"), 40)
    established(a, b)
    t0 = time.monotonic()
    ends = [wait_terminated(ua, 15) for ua in (a, b)]
    for ua in (a, b):
        ua.stop()
    figure("timeLimit=6", ended_after_s=[round(e - t0, 2) for e in ends if e])
    for ua, end in zip((a, b), ends, strict=True):
        assert end is not None, ua.output()[-2000:]
        assert 4.0 <= end - t0 <= 8.0, f"{ua.name} ended after {end - t0:.1f} s"


def test_stay_alone_false_ends_the_last_members_call(answer_server, node_factory, uas):
    url = answer_server.conference("/answer", "pair", stayAlone="false")
    node = node_factory(url)
    a = uas("alice", tone_hz=A).dial(node.uri("pair"), 40)
    established(a)
    time.sleep(2)
    assert not a.terminated  # alone from the start: stays
    b = uas("bob", tone_hz=B).dial(node.uri("pair"), 40)
    established(b)
    time.sleep(2)
    b.hangup()
    t_bye = time.monotonic()
    end = wait_terminated(a, 6)
    a.stop()
    b.stop()
    assert end is not None and end - t_bye <= 3.0, a.output()[-2000:]
    figure("stayAlone=false", last_call_ended_after_s=end - t_bye)
    assert "stay-alone" in node.log()


def test_hangup_on_star_leaves_the_room_and_runs_the_action(answer_server, node_factory, uas):
    action_doc = "<Response><Wait length=\"1\"/></Response>"
    url = answer_server.per_user("/answer", {
        "alice": conf_doc("star", hangupOnStar="true", action=answer_server.url("/after")),
        "bob": conf_doc("star"),
    })
    answer_server.route("/after", action_doc)
    node = node_factory(url)
    a = uas("alice", tone_hz=A).dial(node.uri("alice"), 40)
    established(a)  # alice first, so she is member 1
    b = uas("bob", tone_hz=B).dial(node.uri("bob"), 40)
    established(b)
    time.sleep(2)
    a.command("/sndcode *")
    t_star = time.monotonic()
    end = wait_terminated(a, 8)
    time.sleep(1)
    assert not b.terminated  # bob stays in the room
    a.stop()
    b.stop()
    assert end is not None, a.output()[-2000:]
    figure("hangupOnStar", call_ended_after_star_s=end - t_star)
    # Left on *, the action URL answered <Wait 1>, then the document ran out: BYE.
    assert 0.8 <= end - t_star <= 4.0, f"{end - t_star:.1f} s"
    assert "hangup-on-star" in node.log()
    after = answer_server.requests_to("/after")
    assert len(after) == 1
    p = after[0].params
    assert p["ConferenceName"] == "star" and p["ConferenceMemberID"] == "1"
    assert p["ConferenceUUID"] and p["CallUUID"]


def test_play_wait_speak_before_the_conference_are_heard_in_order(answer_server, node_factory,
                                                                    uas):
    clip = answer_server.route("/clip.wav", wav_bytes(tone_pcm(CLIP, 1.5, 8000), 8000),
                               content_type="audio/wav")
    before = (f"<Play>{clip}</Play><Wait length=\"2\"/>"
              "<Speak>Welcome to the conference. Please wait.</Speak>")
    url = answer_server.per_user("/answer", {
        "alice": conf_doc("intro", before=before), "bob": conf_doc("intro")})
    node = node_factory(url)
    b = uas("bob", tone_hz=B).dial(node.uri("bob"), 40)
    a = uas("alice", tone_hz=0.0).dial(node.uri("alice"), 40)
    established(a, b)
    time.sleep(10)
    a.stop()
    b.stop()
    levels, rest, fs = timeline(a.heard(), [CLIP, B])
    clip_lv, bob_lv = levels[:, 0], levels[:, 1]
    total = 10 * np.log10(10 ** (levels / 10).sum(axis=1) + 10 ** (rest / 10))
    floor = np.median(total[int(2.0 / fs):int(3.3 / fs)])  # inside the Wait: silence
    # 1. the clip, from the start for 1.5 s
    assert np.median(clip_lv[int(0.2 / fs):int(1.3 / fs)]) - floor >= 30
    # 2. the Wait: quiet, no clip, no bob yet
    assert np.max(clip_lv[int(1.8 / fs):int(3.3 / fs)]) < np.median(clip_lv[:int(1.3 / fs)]) - 30
    # 3. speech (broadband, after the Wait), 4. then bob in the conference
    speech = total[int(3.6 / fs):int(5.0 / fs)]
    assert np.median(speech) - floor >= 20
    full = np.max(bob_lv)
    joined = np.argmax(bob_lv > full - 10) * fs
    figure("Play/Wait/Speak order", clip_db_over_silence=float(
        np.median(clip_lv[int(0.2 / fs):int(1.3 / fs)]) - floor),
        speech_db_over_silence=float(np.median(speech) - floor), conference_heard_at_s=joined)
    assert joined > 4.0, f"bob heard at {joined:.1f} s, before the Speak was over"
    steady = slice(int((joined + 0.5) / fs), len(bob_lv) - int(0.5 / fs))
    assert np.median(bob_lv[steady] - rest[steady]) >= 20


def test_redirect_then_enter_sound_from_a_url(answer_server, node_factory, uas):
    """... and every request the node made (answer, Redirect, the sound document and its
    audio, callbacks, action, hangup) carries Plivo's parameters and signatures, accepted by
    the official plivo SDK's validators as the web app received it."""
    token = "e2e-plivo-auth-token"
    clip = answer_server.route("/chime.wav", wav_bytes(tone_pcm(CLIP, 0.6, 16000), 16000),
                               content_type="audio/wav")
    chime = answer_server.route("/chime.xml", f"<Response><Play>{clip}</Play></Response>")
    cb = answer_server.route("/cb", "ok", content_type="text/plain")
    act = answer_server.route("/act", "<Response/>")
    hangup = answer_server.route("/hangup", "ok", content_type="text/plain")
    answer_server.route("/next", conf_doc("redir", enterSound=chime, callbackUrl=cb,
                                          action=f"{act}?from=next", method="GET"))
    url = answer_server.per_user("/answer", {
        "listener": conf_doc("redir"),
        "joiner": f"<Response><Redirect>{answer_server.url('/next')}</Redirect></Response>",
    })
    node = node_factory(url, extra=["--auth-token", token, "--hangup-url", hangup])
    listener = uas("listener", tone_hz=0.0).dial(node.uri("listener"), 30)
    established(listener)
    time.sleep(1.5)
    joiner = uas("joiner", tone_hz=B).dial(node.uri("joiner"), 30)
    established(joiner)
    time.sleep(3)
    listener.stop()
    joiner.stop()
    assert len(answer_server.requests_to("/next")) == 1

    # Plivo's requests, signed as Plivo signs them
    assert wait_until(lambda: len(answer_server.requests_to("/hangup")) == 2, 15)
    base = f"http://127.0.0.1:{answer_server.port}"
    bad = [(r.method, r.path, r.query, r.headers) for r in answer_server.requests
           if not r.plivo_valid(token, base)]
    assert not bad, bad
    assert {r.path for r in answer_server.requests} >= {
        "/answer", "/next", "/chime.xml", "/chime.wav", "/cb", "/act", "/hangup"}
    joined = next(r for r in answer_server.requests_to("/answer") if r.params["To"] == "joiner")
    assert joined.params["Event"] == "StartApp" and joined.params["BillRate"] == "0"
    assert joined.params["From"] == f"sip:joiner@127.0.0.1:{joiner.sip_port}"  # port kept
    (nxt,) = answer_server.requests_to("/next")
    assert nxt.params["Event"] == "Redirect" and nxt.params["CallUUID"] == joined.params[
        "CallUUID"]
    (doc,) = answer_server.requests_to("/chime.xml")
    assert doc.method == "POST" and doc.form["CallUUID"] == joined.params["CallUUID"]
    (action,) = answer_server.requests_to("/act")
    assert action.method == "GET" and action.params["from"] == "next"
    hup = {r.params["CallUUID"]: r.form for r in answer_server.requests_to("/hangup")}
    h = hup[joined.params["CallUUID"]]
    assert (h["Event"], h["CallStatus"], h["HangupCause"], h["HangupSource"]) == (
        "Hangup", "completed", "NORMAL_CLEARING", "Caller")
    assert 3 <= int(h["Duration"]) <= 6 and h["BillDuration"] == h["Duration"]
    print(f"FIGURE plivo requests: {len(answer_server.requests)} requests, every one accepted "
          "by plivo's validate_v3_signature and validate_signature")
    levels, rest, fs = timeline(listener.heard(), [CLIP, B], frame_s=0.02)
    on = levels[:, 0] - np.median(levels[:, 0]) > 30
    # a single 20 ms frame is the click of the joiner's audio starting, not a sound
    found = [b for b in bursts(on, fs) if b[1] > 0.05]
    assert len(found) == 1 and 0.5 <= found[0][1] <= 0.7, bursts(on, fs)
    heard = tone_report(listener.heard(), [CLIP, B], skip_s=3.0)  # and then the joiner
    assert heard[B] - heard["rest"] >= 20, heard


def test_clip_to_a_waiting_member_then_the_music_comes_back(answer_server, node_factory, uas):
    import httpx

    music = answer_server.route("/music.mp3", encode_mp3(tone_pcm(MUSIC, 4.0, 16000), 16000),
                                content_type="audio/mpeg")
    hold = answer_server.route("/hold.xml", f"<Response><Play>{music}</Play></Response>")
    clip = answer_server.route("/clip.wav", wav_bytes(tone_pcm(CLIP, 1.5, 16000), 16000),
                               content_type="audio/wav")
    url = answer_server.per_user("/answer", {
        "waiter": conf_doc("lobby", startConferenceOnEnter="false", waitSound=hold)})
    node = node_factory(url, extra=["--api-token", "t"])
    waiter = uas("waiter", tone_hz=A).dial(node.uri("waiter"), 30)
    established(waiter)
    time.sleep(2.5)
    r = httpx.post(f"{node.http_url}/v1/rooms/lobby/play", timeout=10,
                   headers={"Authorization": "Bearer t"}, json={"url": clip, "member_id": "1"})
    assert r.status_code == 200 and r.json()["ok"], r.text
    time.sleep(4.5)
    waiter.stop()
    levels, rest, fs = timeline(waiter.heard(), FREQS)
    clip_db, music_db = levels[:, FREQS.index(CLIP)], levels[:, FREQS.index(MUSIC)]
    t = np.arange(len(rest)) * fs
    clip_at = np.nonzero(clip_db - rest >= 20)[0]
    assert len(clip_at), "the clip was not heard"
    c0, c1 = t[clip_at[0]], t[clip_at[-1]]
    assert 1.2 <= c1 - c0 <= 1.9, (c0, c1)
    before = (t > 0.5) & (t < c0 - 0.3)
    after = (t > c1 + 0.5) & (t < t.max() - 0.3)
    music_before = float(np.median(music_db[before] - rest[before]))
    music_after = float(np.median(music_db[after] - rest[after]))
    figure("clip-to-waiter", clip_s=float(c1 - c0), music_before_db=music_before,
           music_after_db=music_after, music_after_s=float(t.max() - c1))
    assert music_before >= 20 and music_after >= 20, (music_before, music_after)
