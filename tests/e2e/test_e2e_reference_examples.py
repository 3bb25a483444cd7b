"""Every example of the reference (``../shared/seeds``: Join Muted, Entry/Exit Sounds with
beeps and with a sound URL, Moderated Conference, Record Conference, With Transcription, Exit
with Action URL, Bridge Two Callers), built with the official SDK's ``plivoxml``, served by a
real HTTP server, called by baresip phones, and the behaviour checked: who hears whom (FFT),
beeps and music in the right ear, the API's member state, the callbacks. Every request the
node makes here validates with the SDK's own signature validators."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
from support.audio import (
    band_levels,
    bursts,
    decode_audio,
    timeline,
    tone_pcm,
    tone_report,
    wav_bytes,
)
from support.waiting import wait_until

plivo = pytest.importorskip("plivo")
plivoxml = plivo.plivoxml

pytestmark = pytest.mark.e2e
TOKEN = "reference-token"
API = "reference-api"
A, B, C = 440.0, 1000.0, 1700.0
BEEP, MUSIC = 700.0, 2300.0


def _doc(element) -> str:
    r = plivoxml.ResponseElement()
    r.add(element)
    return r.to_string(False)


def _sound_doc(server, name: str, hz: float, seconds: float = 30.0) -> str:
    """A sound document (Play of a wav) as enterSound/waitSound URLs return them."""
    wav = server.route(f"/{name}.wav", wav_bytes(tone_pcm(hz, seconds, 16000), 16000),
                       content_type="audio/wav")
    return server.route(f"/{name}.xml", _doc(plivoxml.PlayElement(wav)))


def _node(node_factory, server, docs: dict[str, str]):
    return node_factory(server.per_user("/answer", docs),
                        extra=["--auth-token", TOKEN, "--api-token", API])




def _signed(server) -> None:
    base = f"http://127.0.0.1:{server.port}"
    bad = [(r.method, r.path) for r in server.requests if not r.plivo_valid(TOKEN, base)]
    assert not bad, bad


def _up(ua) -> None:
    assert ua.wait_for("Call established", 10), ua.output()[-2000:]


def test_join_muted(answer_server, node_factory, uas):
    room = "my-conference-room"
    node = _node(node_factory, answer_server, {
        "listener": _doc(plivoxml.ConferenceElement(room, muted=True)),
        "talker": _doc(plivoxml.ConferenceElement(room))})
    alice = uas("alice", tone_hz=A).dial(node.uri("listener"), 30)
    _up(alice)
    bob = uas("bob", tone_hz=B).dial(node.uri("talker"), 30)
    _up(bob)
    assert wait_until(lambda: len(node.members(API, room)) == 2, 5)
    assert sorted(m["muted"] for m in node.members(API, room)) == [False, True]
    time.sleep(3)
    alice.stop()
    bob.stop()
    a = tone_report(alice.heard(), [A, B])
    b = tone_report(bob.heard(), [A, B])
    assert a[B] - a["rest"] >= 20, a  # the muted member hears ...
    assert b[A] - b["rest"] <= 3, b  # ... and is not heard
    _signed(answer_server)


def test_entry_and_exit_sounds_beeps_and_a_sound_url(answer_server, node_factory, uas):
    room = "my-conference-room"
    chime = _sound_doc(answer_server, "join-sound", C, 1.0)
    node = _node(node_factory, answer_server, {
        "beeps": _doc(plivoxml.ConferenceElement(room, enter_sound="beep:1",
                                                 exit_sound="beep:2")),
        "url": _doc(plivoxml.ConferenceElement(room, enter_sound=chime))})
    host = uas("host", tone_hz=0.0).dial(node.uri("beeps"), 40)
    _up(host)
    time.sleep(1.5)
    guest = uas("guest", tone_hz=0.0).dial(node.uri("beeps"), 40)
    _up(guest)
    time.sleep(2.0)
    guest.stop()  # exit: beep:2
    time.sleep(2.0)
    third = uas("third", tone_hz=0.0).dial(node.uri("url"), 40)
    _up(third)
    time.sleep(2.5)
    third.stop()
    host.stop()
    levels, rest, frame = timeline(host.heard(), [BEEP, C])
    beeps = bursts(levels[:, 0] - rest > 20, frame)
    chimes = bursts(levels[:, 1] - rest > 20, frame)
    # host: its own entry beep, the guest's, then beep:2 for the guest's exit (two beeps
    # half a second apart), then the third caller's chime from the sound URL
    assert len(beeps) >= 4, beeps
    (exit1, _), (exit2, _) = beeps[-2:]
    assert 0.35 <= exit2 - exit1 <= 0.65, beeps
    assert len(chimes) == 1 and chimes[0][0] > exit2 and 0.7 <= chimes[0][1] <= 1.3, chimes
    assert answer_server.requests_to("/join-sound.xml")
    _signed(answer_server)  # the sound document request too


def test_moderated_conference(answer_server, node_factory, uas):
    room = "moderated-meeting"
    hold = _sound_doc(answer_server, "hold-music", MUSIC)
    node = _node(node_factory, answer_server, {
        "participant": _doc(plivoxml.ConferenceElement(
            room, start_conference_on_enter=False, wait_sound=hold)),
        "moderator": _doc(plivoxml.ConferenceElement(
            room, start_conference_on_enter=True, end_conference_on_exit=True))})
    api = node.api(API)
    p1 = uas("p1", tone_hz=A).dial(node.uri("participant"), 40)
    _up(p1)
    p2 = uas("p2", tone_hz=B).dial(node.uri("participant"), 40)
    _up(p2)
    assert wait_until(lambda: len(node.members(API, room)) == 2, 5)
    assert all(m["waiting"] for m in node.members(API, room))
    time.sleep(2.5)  # both wait: music, and they do not hear each other
    mod = uas("mod", tone_hz=C).dial(node.uri("moderator"), 40)
    _up(mod)
    assert wait_until(lambda: len(node.members(API, room)) == 3
                      and not any(m["waiting"] for m in node.members(API, room)), 5)
    time.sleep(2.5)
    mod.stop()  # the moderator leaves: everyone is disconnected
    assert p1.wait_for("terminated", 10) or p1.terminated, p1.output()[-2000:]
    assert p2.wait_for("terminated", 10) or p2.terminated, p2.output()[-2000:]
    assert api.get(f"/v1/rooms/{room}").status_code == 404
    p1.stop()
    p2.stop()
    levels, rest, frame = timeline(p1.heard(), [A, B, C, MUSIC])
    over = levels - rest[:, None]
    waiting, started = over[5:20], over[-20:-3]  # 0.5-2 s in; the last seconds with the mod
    assert np.median(waiting[:, 3]) > 20 and np.median(waiting[:, 1]) < 3, waiting.mean(0)
    assert np.median(started[:, 2]) > 20 and np.median(started[:, 1]) > 20, started.mean(0)
    assert np.median(started[:, 3]) < 3, started.mean(0)  # the music stopped


def test_record_conference_with_transcription(answer_server, node_factory, uas):
    ready = answer_server.route("/recording-ready/", "ok", content_type="text/plain")
    text = answer_server.route("/transcription/", "ok", content_type="text/plain")
    node = _node(node_factory, answer_server, {
        "rec": _doc(plivoxml.ConferenceElement("recorded-meeting", record=True,
                                               record_file_format="mp3", callback_url=ready)),
        "txt": _doc(plivoxml.ConferenceElement("transcribed-meeting", record=True,
                                               transcription_type="auto",
                                               transcription_url=text))})
    a = uas("alice", tone_hz=A).dial(node.uri("rec"), 30)
    b = uas("bob", tone_hz=B).dial(node.uri("rec"), 30)
    t = uas("tom", tone_hz=C).dial(node.uri("txt"), 30)
    for ua in (a, b, t):
        _up(ua)
    time.sleep(3)
    for ua in (a, b, t):
        ua.stop()

    def record_event():
        return next((r for r in answer_server.requests_to("/recording-ready/")
                     if r.params.get("ConferenceAction") == "record"), None)

    assert wait_until(record_event, 10), answer_server.requests_to("/recording-ready/")
    ev = record_event().params
    assert ev["ConferenceName"] == "recorded-meeting" and ev["RecordUrl"].endswith(".mp3")
    assert int(ev["RecordingDurationMs"]) >= 2000
    got = httpx.get(ev["RecordUrl"], timeout=10)
    levels, rest = band_levels(decode_audio(got.content), 16000, [A, B])
    body = np.median(levels[10:-5] - rest[10:-5, None], axis=0)
    assert body.min() > 20, body  # both callers in the file
    assert wait_until(lambda: answer_server.requests_to("/transcription/"), 30)
    tr = answer_server.requests_to("/transcription/")[0].params
    assert tr["recording_id"] and tr["call_uuid"] and "error" in tr
    _signed(answer_server)


def test_exit_with_action_url_on_star(answer_server, node_factory, uas):
    act = answer_server.route("/conference-ended/", "<Response/>")
    node = _node(node_factory, answer_server, {
        "star": _doc(plivoxml.ConferenceElement("my-conference", action=act,
                                                hangup_on_star=True))})
    alice = uas("alice", tone_hz=A).dial(node.uri("star"), 30)
    _up(alice)
    time.sleep(1.5)
    alice.command("/sndcode *")
    assert wait_until(lambda: answer_server.requests_to("/conference-ended/"), 5), \
        node.log()[-2000:]
    p = answer_server.requests_to("/conference-ended/")[0].params
    assert p["ConferenceName"] == "my-conference" and p["ConferenceMemberID"] == "1"
    assert p["ConferenceUUID"] and p["CallUUID"]
    assert alice.wait_for("terminated", 10), alice.output()[-2000:]  # the reply: hang up
    alice.stop()
    _signed(answer_server)


def test_bridge_two_callers(answer_server, node_factory, uas):
    hold = _sound_doc(answer_server, "hold", MUSIC)
    node = _node(node_factory, answer_server, {
        "first": _doc(plivoxml.ConferenceElement("private-bridge-123", wait_sound=hold)),
        "second": _doc(plivoxml.ConferenceElement("private-bridge-123"))})
    first = uas("first", tone_hz=A).dial(node.uri("first"), 30)
    _up(first)
    time.sleep(2.5)  # alone: hold music
    second = uas("second", tone_hz=B).dial(node.uri("second"), 30)
    _up(second)
    time.sleep(3)
    first.stop()
    second.stop()
    levels, rest, frame = timeline(first.heard(), [B, MUSIC])
    over = levels - rest[:, None]
    assert np.median(over[5:20, 1]) > 20, over[5:20].mean(0)  # music while alone
    assert np.median(over[-15:-3, 0]) > 20 and np.median(over[-15:-3, 1]) < 3, \
        over[-15:-3].mean(0)  # then the second caller, and no music
    s = tone_report(second.heard(), [A, B, MUSIC])
    assert s[A] - s["rest"] > 20 and s[MUSIC] - s["rest"] < 3, s
