"""A Plivo app's PIN prompt end to end: answer XML built with the official SDK's ``plivoxml``
(GetDigits with a Speak prompt, then the action's Conference with ``sendDigits``), served by a
real HTTP server; real callers key the PIN by RFC 2833 (baresip /sndcode), in-band tones (DTMF
in baresip's mic WAV) and SIP INFO (SIPp), land in the room and hear the member already there.
Also PreAnswer (183 early media) and the DTMF verb, seen on the wire."""

from __future__ import annotations

import time

import numpy as np
import pytest
from support import sipp
from support.audio import dtmf_wav, timeline
from support.pcap import Capture, telephone_events
from support.waiting import wait_until

plivo = pytest.importorskip("plivo")
plivoxml = plivo.plivoxml

pytestmark = pytest.mark.e2e
BOB_HZ = 1000.0


def _doc(*elements) -> str:
    r = plivoxml.ResponseElement()
    for e in elements:
        r.add(e)
    return r.to_string(False)


def _serve(server) -> str:
    cb = server.route("/cb", "ok", content_type="text/plain")
    gd = plivoxml.GetDigitsElement(action=server.url("/pin"), method="POST", num_digits=4,
                                   timeout=15, digit_timeout=3, retries=1, finish_on_key="#",
                                   valid_digits="0123456789")
    gd.add_speak("Please enter your PIN", voice="Polly.Joanna", language="en-US")
    server.route("/pin", _doc(plivoxml.ConferenceElement(
        "team", send_digits="9", callback_url=cb, record_when_alone=True,
        enter_sound="beep:1")))
    gd3 = plivoxml.GetDigitsElement(action=server.url("/pin"), num_digits=3, timeout=10)
    gd3.add_speak("Your three digit code, please")
    return server.per_user("/answer", {
        "pin": _doc(gd, plivoxml.SpeakElement("No PIN. Goodbye."), plivoxml.HangupElement()),
        "pin3": _doc(gd3, plivoxml.HangupElement()),
        "team": _doc(plivoxml.ConferenceElement("team", callback_url=cb, relay_dtmf=False)),
    })


def _entered(server, call_uuid: str) -> bool:
    return any(r.params.get("ConferenceAction") == "enter"
               and r.params.get("CallUUID") == call_uuid
               for r in server.requests_to("/cb", delivered=True))


@pytest.mark.parametrize("how", ["rfc2833", "inband"])
def test_pin_prompt_then_conference_with_send_digits(how, answer_server, node_factory, uas,
                                                     tmp_path):
    url = _serve(answer_server)
    node = node_factory(url)
    bob = uas("bob", tone_hz=BOB_HZ).dial(node.uri("team"), 40)
    assert bob.wait_for("Call established", 10), bob.output()[-2000:]
    assert wait_until(lambda: answer_server.requests_to("/cb", delivered=True), 10)

    if how == "inband":  # the PIN as tones in alice's microphone, 3 s into the call
        alice = uas("alice", mic_wav=dtmf_wav(tmp_path / "pin.wav", "1234", 3.0, 40, gap_s=0.3))
    else:
        alice = uas("alice")
    with Capture(tmp_path / "digits.pcap", "udp") as cap:
        alice.dial(node.uri("pin"), 30)
        assert alice.wait_for("Call established", 10), alice.output()[-2000:]
        t_established = time.monotonic()
        if how == "rfc2833":
            time.sleep(2.0)  # into the prompt: the first key stops it
            for d in "1234":
                alice.command(f"/sndcode {d}")
                time.sleep(0.4)
        assert wait_until(lambda: answer_server.requests_to("/pin", delivered=True), 15), \
            node.log()[-3000:]
        (pin,) = answer_server.requests_to("/pin")
        assert pin.params["Digits"] == "1234", pin.params
        alice_uuid = pin.params["CallUUID"]
        assert wait_until(lambda: _entered(answer_server, alice_uuid), 10), node.log()[-3000:]
        t_joined = time.monotonic()
        time.sleep(4.0)  # alice listens to the room
    alice.stop()
    bob.stop()

    # sendDigits="9" reached alice on the wire, as a telephone-event
    events, summary = telephone_events(cap.packets(), alice.rtp)
    assert events == {"9"}, (summary, [ln for ln in node.log().splitlines()
                                       if "digits" in ln][-8:])

    # in the room, alice hears bob; before it (the prompt), she did not
    levels, rest, frame_s = timeline(alice.heard(), [BOB_HZ])
    start = t_joined - t_established
    room = levels[int((start + 1.0) / frame_s): int((start + 3.5) / frame_s), 0]
    prompt = levels[: int(1.5 / frame_s), 0]
    assert len(room) and np.median(room) - np.median(rest) > 20, (np.median(room),
                                                                   np.median(rest))
    assert np.median(prompt) < np.median(room) - 20
    assert "GetDigits got 1234" in node.log()
    took = pin.at - t_established
    print(f"FIGURE GetDigits PIN by {how}: action request {took:.2f} s after the call was "
          f"established; bob heard {np.median(room) - np.median(rest):.0f} dB over the rest "
          f"in the room; sendDigits seen on the wire: {sorted(events)}")


def test_pre_answer_early_media_then_dtmf_to_the_caller(answer_server, node_factory, uas,
                                                         tmp_path):
    from support.audio import tone_pcm, wav_bytes

    answer_server.route("/ring.wav", wav_bytes(tone_pcm(700.0, 2.0, 8000), 8000),
                        content_type="audio/wav")
    pre = plivoxml.PreAnswerElement()
    pre.add_play(answer_server.url("/ring.wav"))
    url = answer_server.route("/answer", _doc(
        pre, plivoxml.DTMFElement("5w7", async_=False), plivoxml.WaitElement(length=2),
        plivoxml.HangupElement()))
    node = node_factory(url)
    alice = uas("alice")
    with Capture(tmp_path / "dtmf.pcap", "udp") as cap:
        alice.dial(node.uri("early"), 20)
        assert alice.wait_for("Call established", 15), alice.output()[-3000:]
        assert alice.wait_for("terminated", 15) or alice.wait_for("closed", 1)
    alice.stop()
    out = alice.output()
    assert "183 Session Progress" in out and out.index("183 Session Progress") < out.index(
        "200 OK"), out[-3000:]
    levels, rest, frame_s = timeline(alice.heard(), [700.0])
    on = levels[:, 0] - np.median(rest) > 20
    assert on.sum() * frame_s > 1.0, "the early media was not heard"
    events = []
    for p in cap.packets():
        if alice.rtp[0] <= p.dst[1] <= alice.rtp[1] and len(p.payload) == 16 \
                and (p.payload[1] & 0x7F) not in (0, 8):
            code = "0123456789*#"[p.payload[12]] if p.payload[12] < 12 else "?"
            if not events or events[-1] != code:
                events.append(code)
    assert events == ["5", "7"], events
    print(f"FIGURE PreAnswer: {on.sum() * frame_s:.1f} s of early media heard before the "
          f"answer; DTMF verb digits on the wire: {events}")


def test_pin_by_sip_info(answer_server, node_factory, tmp_path):
    """The third keypad source: SIP INFO (SIPp, application/dtmf-relay and application/dtmf)."""
    node = node_factory(_serve(answer_server))
    res = sipp.run(tmp_path, f"127.0.0.1:{node.sip_port}", "uac_info_dtmf.xml", [["pin3"]],
                   calls=1, subs={"D1": "4", "D2": "5", "D3": "6", "HOLD_MS": "3000"},
                   timeout=30)
    assert res.successful == 1, res.output[-3000:]
    (pin,) = answer_server.requests_to("/pin")
    assert pin.params["Digits"] == "456", pin.params
    assert wait_until(lambda: _entered(answer_server, pin.params["CallUUID"]), 5)
