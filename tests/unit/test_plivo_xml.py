"""Plivo apps' XML (issue 16, part 1): every attribute the official SDK's ``plivoxml`` emits is
accepted (unknown ones logged, never a refusal), ``sendDigits``/``recordWhenAlone``, Speak
voices by Plivo's names, ``GetDigits`` (the sans-I/O gather, then through the real node),
``PreAnswer``, ``DTMF``, ``Hangup schedule``.

Long on purpose: one case per SDK element and attribute, so the table in the README can be
checked against one file."""

from __future__ import annotations

import logging

import pytest
import trio
from support.node_harness import Harness, WebApp, run_node

from sipconf.core import room as roomstate
from sipconf.core import voices
from sipconf.core.answer import (
    Conference,
    Dtmf,
    GetDigits,
    Hangup,
    Play,
    PreAnswer,
    Speak,
    Wait,
    parse_document,
)
from sipconf.core.callmessages import (
    KeyPressed,
    Listen,
    PlayToCall,
    SoundFinished,
    WaitOver,
)
from sipconf.core.gather import Gather, Gathered

plivoxml = pytest.importorskip("plivo").plivoxml


def sdk(*elements) -> str:
    r = plivoxml.ResponseElement()
    for e in elements:
        r.add(e)
    return r.to_string(False)


# --- every attribute the SDK emits ----------------------------------------------------------------


def full_conference(**over):
    kw = dict(muted=True, enter_sound="beep:1", exit_sound="beep:2",
              start_conference_on_enter=True, end_conference_on_exit=False, stay_alone=True,
              wait_sound="http://x/w.xml", max_members=10, record=True, record_file_format="wav",
              time_limit=600, hangup_on_star=True, action="http://x/a", method="GET",
              callback_url="http://x/cb", callback_method="POST", digits_match="123,#9",
              floor_event=True, redirect=False, relay_dtmf=False, send_digits="w12#",
              record_when_alone=True, transcription_type="auto",
              transcription_url="http://x/t", transcription_method="GET")
    kw.update(over)
    return plivoxml.ConferenceElement("room1", **kw)


def test_every_conference_attribute_of_the_sdk_is_honoured():
    doc = parse_document(sdk(full_conference()))
    (c,) = doc.verbs
    assert c == Conference(
        room="room1", muted=True, enter_sound="beep:1", exit_sound="beep:2", max_members=10,
        time_limit=600, hangup_on_star=True, wait_sound="http://x/w.xml", record=True,
        record_file_format="wav", transcription_type="auto", transcription_url="http://x/t",
        transcription_method="GET", action="http://x/a", method="GET",
        callback_url="http://x/cb", redirect=False, digits_match=("123", "#9"),
        floor_event=True, relay_dtmf=False, send_digits="w12#", record_when_alone=True)
    assert doc.ignored == () and doc.skipped == ()


def test_record_when_alone_as_the_sdk_writes_it():
    # the SDK writes it with str(): "True" / "False"
    xml = sdk(full_conference(record_when_alone=False))
    assert 'recordWhenAlone="False"' in xml
    assert parse_document(xml).verbs[0].record_when_alone is False
    assert parse_document(sdk(plivoxml.ConferenceElement("r"))).verbs[0].record_when_alone is None


def test_every_element_the_sdk_builds_around_a_conference_parses_without_refusal():
    gd = plivoxml.GetDigitsElement(
        action="http://x/pin", method="GET", timeout=7, digit_timeout=3, finish_on_key="*",
        num_digits=4, retries=2, redirect=True, play_beep=True, valid_digits="0123456789",
        invalid_digits_sound="http://x/bad.mp3", log=False)
    gd.add_speak("Enter your PIN", voice="Polly.Joanna", language="en-US", loop=1)
    gd.add_play("http://x/p.wav", loop=2)
    gd.add_wait(length=2, silence=True, min_silence=500, beep=True)
    pre = plivoxml.PreAnswerElement()
    pre.add_speak("Connecting", voice="MAN")
    pre.add_play("http://x/ring.mp3")
    pre.add_wait(length=1)
    speak = plivoxml.SpeakElement("Hello", voice="Polly.Matthew-Neural", language="en-US",
                                  loop=2)
    speak.add_break(time="500ms")
    speak.add_emphasis("there", level="strong")
    xml = sdk(pre, speak, plivoxml.PlayElement("http://x/a.mp3", loop=3),
              plivoxml.WaitElement(length=2, silence=True, min_silence=300, beep=False),
              gd, plivoxml.DTMFElement("12w#", async_=False),
              plivoxml.RedirectElement("http://x/next", method="GET"),
              full_conference(), plivoxml.HangupElement(reason="busy", schedule=30))
    doc = parse_document(xml)
    assert [type(v).__name__ for v in doc.verbs] == [
        "PreAnswer", "Speak", "Play", "Wait", "GetDigits", "Dtmf", "Redirect", "Conference",
        "Hangup"]
    p, s, play, w, g, d, _, _, hang = doc.verbs
    assert p == PreAnswer((Speak("Connecting", voice="MAN"), Play("http://x/ring.mp3"),
                           Wait(1)))
    assert s.text == "Hello there" and s.voice == "Polly.Matthew-Neural" and s.loop == 2
    assert play.loop == 3 and w == Wait(2)
    assert g == GetDigits(action="http://x/pin", method="GET", timeout=7, digit_timeout=3,
                          finish_on_key="*", num_digits=4, retries=2, play_beep=True,
                          valid_digits="0123456789", invalid_digits_sound="http://x/bad.mp3",
                          log=False,
                          prompts=(Speak("Enter your PIN", voice="Polly.Joanna"),
                                   Play("http://x/p.wav", 2), Wait(2)))
    assert d == Dtmf("12w#", async_=False)
    assert hang == Hangup(reason="busy", schedule=30)
    # accepted, not acted on: named once each, element and attribute
    assert "Wait.silence (silence detection is not implemented: the whole length is waited)" \
        in doc.ignored
    assert any(i.startswith("Wait.minSilence") for i in doc.ignored)
    assert any(i.startswith("Speak.<break>") for i in doc.ignored)
    assert len(doc.ignored) == len(set(doc.ignored))


def test_unknown_attributes_are_ignored_and_named_never_refused():
    doc = parse_document('<Response><Conference colour="blue" beep="1">r</Conference>'
                         '<Speak volume="9" colour="red">hi</Speak></Response>')
    assert doc.verbs[0] == Conference(room="r")
    assert doc.ignored == ("Conference.colour (unknown attribute)",
                           "Conference.beep (legacy attribute: use enterSound/exitSound)",
                           "Speak.volume (unknown attribute)", "Speak.colour (unknown attribute)")


def test_a_document_with_unknown_attributes_is_logged_once_and_the_call_goes_on(caplog):
    app = WebApp(answer={"r": '<Response><Conference colour="blue" colour2="x" '
                              'sendDigits="1">team</Conference></Response>'})

    async def body(h: Harness):
        a = await h.call("r")
        await h.joined(a)

    with caplog.at_level(logging.WARNING, logger="sipconf.node"):
        run_node(body, app=app)
    lines = [r.getMessage() for r in caplog.records if "ignored attributes" in r.getMessage()]
    assert len(lines) == 1
    assert "Conference.colour (unknown attribute)" in lines[0] and "colour2" in lines[0]


# --- Speak voices ---------------------------------------------------------------------------------


@pytest.mark.parametrize("voice, language, espeak", [
    ("WOMAN", "en-US", "en-us+f3"),
    ("MAN", "en-GB", "en-gb+m3"),
    ("woman", "fr-FR", "fr-fr+f3"),
    ("MAN", "de-DE", "de+m3"),
    ("WOMAN", "es-US", "es-419+f3"),
    ("Polly.Joanna", "en-US", "en-us+f3"),
    ("Polly.Matthew-Neural", "en-US", "en-us+m3"),
    ("Polly.Brian", "en-US", "en-gb+m3"),  # the voice's own language wins
    ("Polly.Hans", "en-US", "de+m3"),
    ("Polly.Mizuki", "", "ja+f3"),
    ("Polly.Nobody", "it-IT", "it+f3"),  # unknown: the language's woman's voice
    ("robot", "xx-YY", "en-us+f3"),
    ("MAN", "pt-BR", "pt-br+m3"),
    ("WOMAN", "cmn-CN", "cmn+f3"),
])
def test_plivo_voices_map_to_the_closest_espeak_voice(voice, language, espeak):
    assert voices.resolve(voice, language).espeak == espeak


def test_a_voice_mapping_is_logged_once_per_name(caplog):
    voices._noted.clear()
    with caplog.at_level(logging.INFO, logger="sipconf.sounds"):
        for _ in range(3):
            assert voices.espeak_voice("Polly.Joanna-Neural", "en-US") == "en-us+f3"
        assert voices.espeak_voice("WOMAN", "en-US") == "en-us+f3"  # exact: nothing to say
    notes = [r.getMessage() for r in caplog.records if "voice mapping" in r.getMessage()]
    assert notes == ["Speak voice mapping: Polly.Joanna-Neural (en-us) spoken as espeak-ng "
                     "en-us+f3"]


def test_a_polly_voice_is_spoken_not_refused():
    app = WebApp(answer={"r": sdk(plivoxml.SpeakElement("Hello", voice="Polly.Joanna"),
                                  plivoxml.ConferenceElement("team"))})

    async def body(h: Harness):
        a = await h.call("r")
        await h.joined(a)
        call = h.engine.calls[a]
        assert call.final == 200 and len(call.played) == 1  # the speech, then the room

    run_node(body, app=app)


# --- recordWhenAlone, in the room's state ---------------------------------------------------------


def test_record_when_alone_false_starts_the_recording_with_a_second_member():
    room = roomstate.Room("r", clock=lambda: 0.0)
    rec = Conference("r", record=True, record_when_alone=False)
    ev = room.join("a", rec)
    assert not [e for e in ev if isinstance(e, roomstate.Record)]
    ev = room.join("b", Conference("r"))
    (r,) = [e for e in ev if isinstance(e, roomstate.Record)]
    assert r.member.call_uuid == "a"
    assert not [e for e in room.join("c", Conference("r")) if isinstance(e, roomstate.Record)]


def test_record_when_alone_false_waits_for_live_members_not_waiting_ones():
    room = roomstate.Room("r", clock=lambda: 0.0)
    ev = room.join("a", Conference("r", start_conference_on_enter=False, record=True,
                                   record_when_alone=False))
    ev += room.join("b", Conference("r", start_conference_on_enter=False))
    assert not [e for e in ev if isinstance(e, roomstate.Record)]  # both wait
    ev = room.join("m", Conference("r"))  # the moderator starts it: three live
    assert [e.member.call_uuid for e in ev if isinstance(e, roomstate.Record)] == ["a"]


def test_record_when_alone_false_owner_leaving_alone_records_nothing():
    room = roomstate.Room("r", clock=lambda: 0.0)
    room.join("a", Conference("r", record=True, record_when_alone=False))
    room.leave("a")
    ev = room.join("b", Conference("r"))
    ev += room.join("c", Conference("r"))
    assert not [e for e in ev if isinstance(e, roomstate.Record)]


@pytest.mark.parametrize("alone", [None, True])
def test_record_when_alone_true_or_absent_records_from_the_first_member(alone):
    room = roomstate.Room("r", clock=lambda: 0.0)
    ev = room.join("a", Conference("r", record=True, record_when_alone=alone))
    assert [e.member.call_uuid for e in ev if isinstance(e, roomstate.Record)] == ["a"]


def test_recording_waits_for_a_second_member_through_the_node():
    doc = sdk(plivoxml.ConferenceElement("team", record=True, record_when_alone=False,
                                         callback_url="/cb"))
    app = WebApp(answer={"r": doc, "p": sdk(plivoxml.ConferenceElement("team"))})

    async def body(h: Harness):
        a = await h.call("r")
        await h.joined(a)
        await trio.sleep(5)
        assert not h.engine.commands("tap_room")
        b = await h.call("p")
        await h.joined(b)
        await h.wait_until(lambda: h.engine.commands("tap_room"), what="the recording")

    run_node(body, app=app)


# --- sendDigits -----------------------------------------------------------------------------------


def test_send_digits_go_to_the_member_after_its_join_with_pauses():
    app = WebApp(answer={"r": sdk(plivoxml.ConferenceElement("team", send_digits="12W#"))})

    async def body(h: Harness):
        a = await h.call("r")
        await h.joined(a)
        await h.wait_until(lambda: len(h.engine.calls[a].digits_sent) == 2, what="digits")
        names = [c[0] for c in h.engine.log if c[0] in ("join", "send_digits")]
        assert names[:1] == ["join"]
        sent = h.engine.commands("send_digits")
        assert [c[1:] for c in sent] == [(a, "12", True), (a, "#", True)]
        assert h.engine.calls[a].digits_sent == [("12", True), ("#", True)]

    run_node(body, app=app)


# --- GetDigits: the sans-I/O gather ---------------------------------------------------------------


def gather(**kw) -> tuple[Gather, object]:
    g = Gather(GetDigits(**kw))
    return g, g.start(0.0)


def test_gather_plays_prompts_then_waits_timeout_for_the_first_key():
    g, step = gather(prompts=(Speak("hi"), Wait(2)), play_beep=True, timeout=7)
    assert step == Listen(Speak("hi"), 1, None, flush=True)
    assert g.handle(SoundFinished(), 1.0) == Listen(None, until=3.0)
    assert g.handle(WaitOver(), 3.0) == Listen("beep:1")
    assert g.handle(SoundFinished(), 3.5) == Listen(None, until=10.5)


def test_gather_a_key_stops_the_prompts_and_digit_timeout_applies():
    g, _ = gather(prompts=(Speak("a"), Speak("b")), digit_timeout=3)
    assert g.handle(KeyPressed("1"), 0.5) == Listen(None, until=3.5)  # "b" never plays
    assert g.handle(KeyPressed("2"), 1.0) == Listen(None, until=4.0)
    assert g.handle(WaitOver(), 4.0) == Gathered("12", 1)


def test_gather_ends_on_num_digits_or_finish_key_which_is_not_a_digit():
    g, _ = gather(num_digits=2)
    g.handle(KeyPressed("4"), 0.1)
    assert g.handle(KeyPressed("2"), 0.2) == Gathered("42", 1)
    g, _ = gather()
    g.handle(KeyPressed("4"), 0.1)
    assert g.handle(KeyPressed("#"), 0.2) == Gathered("4", 1)
    g, _ = gather(finish_on_key="")
    g.handle(KeyPressed("4"), 0.1)
    assert g.handle(KeyPressed("#"), 0.2) == Listen(None, until=2.2)  # "#" is a digit then


def test_gather_retries_without_input_then_gives_up():
    g, step = gather(prompts=(Speak("pin?"),), retries=2, timeout=5)
    assert g.handle(SoundFinished(), 1.0) == Listen(None, until=6.0)
    assert g.handle(WaitOver(), 6.0) == Listen(Speak("pin?"), 1, None, flush=True)
    g.handle(SoundFinished(), 7.0)
    assert g.handle(WaitOver(), 12.0) == Gathered(None, 2)


def test_gather_an_invalid_key_plays_the_sound_and_ends_the_attempt():
    g, _ = gather(valid_digits="123", invalid_digits_sound="http://x/bad.wav", retries=2)
    assert g.handle(KeyPressed("9"), 0.1) == PlayToCall(Play("http://x/bad.wav"), 1)
    assert g.handle(SoundFinished(), 1.0) == Listen(None, until=6.0, flush=True)
    g.handle(KeyPressed("1"), 2.0)
    assert g.handle(WaitOver(), 4.0) == Gathered("1", 2, invalid=1)


def test_gather_the_finish_key_alone_is_no_input():
    g, _ = gather(retries=1)
    assert g.handle(KeyPressed("#"), 0.1) == Gathered(None, 1)


# --- GetDigits through the node -------------------------------------------------------------------


def pin_prompt(**kw) -> str:
    gd = plivoxml.GetDigitsElement(action="/pin", method="POST", num_digits=4, timeout=5,
                                   retries=2, **kw)
    gd.add_speak("Please enter your PIN", voice="WOMAN")
    return sdk(gd, plivoxml.SpeakElement("No PIN, goodbye"), plivoxml.HangupElement())


def pin_app(**kw) -> WebApp:
    def check(req):
        if req.params.get("Digits") == "1234":
            return sdk(plivoxml.ConferenceElement("team", send_digits="9",
                                                  callback_url="/cb"))
        return sdk(plivoxml.SpeakElement("Wrong PIN"), plivoxml.HangupElement())

    return WebApp(answer={"r": pin_prompt(**kw)}, routes={"/pin": check})


def test_a_pin_prompt_then_the_conference():
    app = pin_app()

    async def body(h: Harness):
        a = await h.call("r")
        await h.wait_until(lambda: h.engine.commands("play_to_call"), what="the prompt")
        await trio.sleep(0.3)
        for d in "12":  # pressed during the prompt: it stops
            h.engine.digit(a, d)
            await trio.sleep(0.2)
        for d in "34":  # one press sent twice (RFC 2833 and in-band): one digit
            h.engine.digit(a, d, "rfc2833")
            h.engine.digit(a, d, "inband")
            await trio.sleep(0.3)
        await h.joined(a)
        (pin,) = h.app.to("/pin")
        assert pin.params["Digits"] == "1234" and pin.params["CallUUID"] == a
        assert pin.params["CallStatus"] == "in-progress"
        await h.wait_until(lambda: h.engine.calls[a].digits_sent, what="sendDigits")
        assert h.engine.calls[a].digits_sent == [("9", True)]
        assert [r.params["ConferenceAction"] for r in h.app.events()] == ["enter"]
        assert h.engine.calls[a].final == 200

    h = run_node(body, app=app)
    assert dict(h.node.faults.counts) == {}


def test_digits_in_a_room_after_a_get_digits_go_to_the_room_again():
    app = pin_app()
    app.routes["/pin"] = sdk(plivoxml.ConferenceElement("team", digits_match="77",
                                                        callback_url="/cb"))

    async def body(h: Harness):
        a = await h.call("r")
        await trio.sleep(1)
        for d in "0000":
            h.engine.digit(a, d)
            await trio.sleep(0.1)
        await h.joined(a)
        for d in "77":
            h.engine.digit(a, d)
            await trio.sleep(0.1)
        await h.wait_until(lambda: any(r.params["ConferenceAction"] == "digits"
                                       for r in h.app.events()), what="the digits event")

    run_node(body, app=app)


def test_no_input_after_the_retries_goes_on_with_the_next_element():
    app = pin_app()

    async def body(h: Harness):
        t0 = trio.current_time()
        a = await h.call("r")
        await h.ended(a)
        assert not h.app.to("/pin")
        # two attempts of prompt + 5 s, then "No PIN, goodbye", then the hang-up
        assert trio.current_time() - t0 >= 10
        assert len(h.engine.calls[a].played) == 3
        assert h.engine.calls[a].final == 200 and h.engine.commands("hangup")

    run_node(body, app=app)


def test_redirect_false_posts_the_digits_and_goes_on():
    gd = plivoxml.GetDigitsElement(action="/pin", num_digits=1, redirect=False)
    app = WebApp(answer={"r": sdk(gd, plivoxml.ConferenceElement("team"))})

    async def body(h: Harness):
        a = await h.call("r")
        await trio.sleep(0.5)
        h.engine.digit(a, "5")
        await h.joined(a)
        await h.wait_until(lambda: h.app.to("/pin"), what="the digits request")
        assert h.app.to("/pin")[0].params["Digits"] == "5"

    run_node(body, app=app)


@pytest.mark.parametrize("reply", [(500, "oops"), "<Response><Nonsense", (404, "")])
def test_a_failing_action_goes_on_with_the_next_element(reply):
    app = pin_app()
    app.routes["/pin"] = reply

    async def body(h: Harness):
        a = await h.call("r")
        await trio.sleep(0.5)
        for d in "1234":
            h.engine.digit(a, d)
        await h.ended(a)
        assert len(h.engine.calls[a].played) == 2  # the prompt, then "No PIN, goodbye"

    h = run_node(body, app=app)
    assert dict(h.node.faults.counts) == {}


def test_an_invalid_key_plays_the_invalid_sound_and_retries():
    app = pin_app(valid_digits="0123456789", invalid_digits_sound="/s.wav")

    async def body(h: Harness):
        a = await h.call("r")
        await trio.sleep(0.5)
        h.engine.digit(a, "*")
        await h.wait_until(lambda: h.app.to("/s.wav"), what="the invalid-digits sound")
        await trio.sleep(2)
        for d in "1234":
            h.engine.digit(a, d)
            await trio.sleep(0.1)
        await h.joined(a)

    run_node(body, app=app)


def test_log_false_keeps_the_digits_out_of_the_log(caplog):
    app = pin_app(log=False)

    async def body(h: Harness):
        a = await h.call("r")
        await trio.sleep(0.5)
        for d in "1234":
            h.engine.digit(a, d)
        await h.joined(a)

    with caplog.at_level(logging.INFO):
        run_node(body, app=app)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "GetDigits got 4 digit(s), not logged" in text and "1234" not in text


def test_a_caller_hanging_up_during_get_digits_ends_cleanly():
    app = pin_app()

    async def body(h: Harness):
        a = await h.call("r")
        await trio.sleep(1)
        h.engine.digit(a, "1")
        h.engine.hang_up(a)
        await h.ended(a)
        assert not h.app.to("/pin")

    h = run_node(body, app=app)
    assert dict(h.node.faults.counts) == {}


# --- DTMF, PreAnswer, Hangup schedule -------------------------------------------------------------


def test_dtmf_verb_sends_digits_to_the_caller():
    app = WebApp(answer={"r": sdk(plivoxml.DTMFElement("1w2", async_=False),
                                  plivoxml.ConferenceElement("team"))})

    async def body(h: Harness):
        a = await h.call("r")
        await h.joined(a)
        assert h.engine.calls[a].digits_sent == [("1", True), ("2", True)]

    run_node(body, app=app)


def test_pre_answer_plays_early_media_before_the_answer():
    pre = plivoxml.PreAnswerElement()
    pre.add_play("/s.wav")
    app = WebApp(answer={"r": sdk(pre, plivoxml.ConferenceElement("team"))})

    async def body(h: Harness):
        a = await h.call("r")
        await h.joined(a)
        call = h.engine.calls[a]
        assert [r[0] for r in call.responses] == [183, 200]
        answers = [i for i, c in enumerate(h.engine.log) if c[0] == "answer"]
        plays = [i for i, c in enumerate(h.engine.log) if c[0] == "play_to_call"]
        assert answers[0] < plays[0] < answers[1]

    run_node(body, app=app)


def test_hangup_schedule_ends_the_call_later_while_the_document_goes_on():
    app = WebApp(answer={"r": sdk(plivoxml.HangupElement(schedule=20),
                                  plivoxml.ConferenceElement("team"))})

    async def body(h: Harness):
        t0 = trio.current_time()
        a = await h.call("r")
        await h.joined(a)
        await h.ended(a)
        assert 20 <= trio.current_time() - t0 < 22

    run_node(body, app=app)


# --- properties: whatever a GetDigits holds and whatever keys come, no fault ----------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sipconf.core.callmessages import SoundFailed  # noqa: E402

NUMS = st.one_of(st.integers(-2, 150).map(str),
                 st.sampled_from(["", " ", "1.5", "x", "99999999999999999999", "٣"]))
KEYS = st.sampled_from(list("0123456789*#ABCD"))
PROPS = settings(max_examples=60, deadline=None, database=None, derandomize=True,
                 suppress_health_check=[HealthCheck.too_slow])


@st.composite
def get_digits_verbs(draw) -> GetDigits:
    return GetDigits(
        timeout=draw(st.integers(1, 20)), digit_timeout=draw(st.integers(1, 10)),
        finish_on_key=draw(st.sampled_from(["", "#", "*", "5"])),
        num_digits=draw(st.integers(1, 99)), retries=draw(st.integers(1, 10)),
        valid_digits=draw(st.sampled_from(["1234567890*#", "123", "#", "ABCD9"])),
        invalid_digits_sound=draw(st.sampled_from([None, "http://x/bad.wav"])),
        play_beep=draw(st.booleans()),
        prompts=tuple(draw(st.lists(st.sampled_from([Speak("a"), Play("http://x/p.wav"),
                                                     Wait(2)]), max_size=3))))


@PROPS
@given(verb=get_digits_verbs(),
       events=st.lists(st.one_of(KEYS.map(KeyPressed), st.just(SoundFinished()),
                                 st.just(SoundFailed("x")), st.just(WaitOver())),
                       max_size=60))
def test_gather_only_ever_listens_plays_or_ends_with_valid_digits(verb, events):
    g = Gather(verb)
    step = g.start(0.0)
    now = 0.0
    for ev in events:
        if isinstance(step, Gathered):
            break
        assert isinstance(step, (Listen, PlayToCall))
        if isinstance(step, PlayToCall) and isinstance(ev, KeyPressed):
            continue  # (a sound without keys: no key can be its result)
        if isinstance(step, Listen) and step.prompt is None and not isinstance(
                ev, (KeyPressed, WaitOver)):
            continue  # (silence ends by a key or its deadline only)
        now += 0.5
        step = g.handle(ev, now)
    if isinstance(step, Gathered):
        assert 1 <= step.attempts <= verb.retries
        if step.digits is not None:
            assert 1 <= len(step.digits) <= verb.num_digits
            assert set(step.digits) <= set(verb.valid_digits)
            assert not verb.finish_on_key or verb.finish_on_key not in step.digits


ATTR_VALUES = {
    "timeout": NUMS, "digitTimeout": NUMS, "numDigits": NUMS, "retries": NUMS,
    "finishOnKey": st.sampled_from(["", "#", "none", "**", "x", "5"]),
    "validDigits": st.sampled_from(["", "123", "12x", "1234567890*#", "#"]),
    "invalidDigitsSound": st.sampled_from(["/s.wav", "/missing.wav", "nope", ""]),
    "playBeep": st.sampled_from(["true", "false", "maybe"]),
    "redirect": st.sampled_from(["true", "false", ""]),
    "log": st.sampled_from(["true", "false"]),
    "method": st.sampled_from(["GET", "POST", "PUT"]),
    "action": st.sampled_from(["/pin", "/bad", "/slow", "http://[::1", ""]),
    "colour": st.just("blue"),
}


@st.composite
def get_digits_documents(draw) -> str:
    names = draw(st.lists(st.sampled_from(sorted(ATTR_VALUES)), unique=True, max_size=8))
    attrs = "".join(f' {n}="{draw(ATTR_VALUES[n])}"' for n in names)
    prompts = draw(st.sampled_from(["", "<Speak>pin?</Speak>", '<Play loop="0">/s.wav</Play>',
                                    '<Wait length="2"/><Play>/s.wav</Play>']))
    return (f"<Response><GetDigits{attrs}>{prompts}</GetDigits><Speak>bye</Speak>"
            "<Conference>r1</Conference></Response>")


@settings(max_examples=30, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(doc=get_digits_documents(),
       presses=st.lists(st.tuples(st.floats(0, 30), KEYS,
                                  st.sampled_from(["rfc2833", "inband", "info"])), max_size=12),
       bye=st.one_of(st.none(), st.floats(0, 40)))
def test_any_get_digits_document_and_any_keys_never_fault(doc, presses, bye):
    async def slow(req):
        await trio.sleep(30)
        return "<Response/>"

    app = WebApp(answer={"r": doc}, routes={
        "/pin": "<Response><Conference>r1</Conference></Response>",
        "/bad": (500, "no"), "/slow": slow, "/s.wav": pytest.importorskip(
            "support.node_harness").wav_bytes(0.3)})

    async def body(h: Harness):
        t0 = trio.current_time()
        a = await h.call("r")
        plan = sorted([(at, "key", d, src) for at, d, src in presses]
                      + ([(bye, "bye", "", "")] if bye is not None else []))
        for at, what, d, src in plan:
            await trio.sleep_until(t0 + at)
            if h.engine.calls[a].ended:
                break
            if what == "key":
                h.engine.digit(a, d, src)
            else:
                h.engine.hang_up(a)
        await trio.sleep(60)
        call = h.engine.calls[a]
        assert call.final is not None  # answered or refused: never half-open
        h.engine.hang_up(a)
        await h.ended(a)

    h = run_node(body, app=app)
    assert dict(h.node.faults.counts) == {}
    assert not h.node.calls


def test_ssml_in_speak_is_read_as_text_sub_by_its_alias_and_depth_is_bounded():
    from sipconf.core.answer import AnswerError

    doc = parse_document('<Response><Speak>Hi<break time="1s"/>the <sub alias="World Wide '
                         'Web">WWW</sub> is <emphasis level="strong">big</emphasis></Speak>'
                         '</Response>')
    assert doc.verbs[0].text == "Hi the World Wide Web is big"
    with pytest.raises(AnswerError, match="nested deeper"):
        parse_document("<Response><Speak>" + "<s>" * 50 + "a" + "</s>" * 50 +
                       "</Speak></Response>")


# --- the call flow alone (sans-I/O): GetDigits, PreAnswer, DTMF, Hangup schedule ------------------

from sipconf.core.callflow import CallFlow, CallInfo, FlowSettings  # noqa: E402
from sipconf.core.callmessages import (  # noqa: E402
    Answer,
    Answered,
    CollectKeys,
    DigitsSent,
    Fetch,
    Fetched,
    JoinRoom,
    ScheduleHangup,
    SendDigits,
    Sleep,
    has_result,
)


def flow_with(body: str) -> tuple[CallFlow, list]:
    flow = CallFlow(CallInfo("c1", "sip:alice@10.0.0.1", "team", "sip:team@10.0.0.2", "Alice"),
                    FlowSettings(answer_url="http://app.test/answer"))
    flow.start(0.0)
    return flow, flow.handle(Fetched(f"<Response>{body}</Response>".encode()), 0.0)


def step(flow: CallFlow, event, now: float = 0.0) -> list:
    cmds = flow.handle(event, now)
    assert all(not has_result(c) for c in cmds[:-1]), cmds
    return cmds


def test_flow_get_digits_collects_keys_then_fetches_the_action_with_digits():
    flow, cmds = flow_with('<GetDigits action="/pin" numDigits="2"><Speak>pin</Speak>'
                           '</GetDigits><Hangup/>')
    assert cmds == [Answer(200)]
    assert step(flow, Answered()) == [CollectKeys(True), Listen(Speak("pin"), 1, flush=True)]
    assert step(flow, KeyPressed("4"), 1.0) == [Listen(None, until=3.0)]
    (off, fetch) = step(flow, KeyPressed("2"), 1.5)
    assert off == CollectKeys(False)
    assert isinstance(fetch, Fetch) and fetch.purpose == "digits"
    assert fetch.url == "http://app.test/pin" and fetch.params["Digits"] == "42"
    cmds = step(flow, Fetched(b"<Response><Conference>r</Conference></Response>"), 2.0)
    assert [type(c) for c in cmds] == [JoinRoom]  # the reply replaced the document


def test_flow_get_digits_without_input_goes_on_with_the_next_element():
    flow, _ = flow_with('<GetDigits action="/pin" timeout="3"/><Wait length="2"/>')
    assert step(flow, Answered()) == [CollectKeys(True), Listen(None, until=3.0, flush=True)]
    assert step(flow, WaitOver(), 3.0) == [CollectKeys(False), Sleep(5.0)]


def test_flow_pre_answer_sends_183_and_plays_before_the_200():
    flow, cmds = flow_with('<PreAnswer><Play>/a.wav</Play><Wait length="1"/></PreAnswer>'
                           '<Conference>r</Conference>')
    assert cmds == [Answer(183, "Session Progress"),
                    PlayToCall(Play("http://app.test/a.wav"), 1)]
    assert step(flow, SoundFinished(), 1.0) == [Sleep(2.0)]
    assert step(flow, WaitOver(), 2.0) == [Answer(200)]
    assert [type(c) for c in step(flow, Answered(), 2.0)] == [JoinRoom]


def test_flow_dtmf_and_a_scheduled_hangup():
    flow, _ = flow_with('<Hangup schedule="30"/><DTMF async="false">12</DTMF><DTMF>3</DTMF>'
                        '<Wait length="1"/>')
    assert step(flow, Answered(), 0.0) == [SendDigits("12", wait=True)]
    assert step(flow, DigitsSent(), 1.0) == [SendDigits("3"), Sleep(2.0)]
    flow, cmds = flow_with('<Hangup schedule="30"/><Wait length="1"/>')
    assert cmds == [ScheduleHangup(30.0), Answer(200)]
