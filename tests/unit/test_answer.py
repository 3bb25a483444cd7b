"""Answer XML parsing: every attribute, the reference's defaults, every validation error."""

import pytest

from sipconf.core.answer import (
    AnswerError,
    Conference,
    Hangup,
    Play,
    Redirect,
    Speak,
    Wait,
    builtin_document,
    parse_document,
    parse_sound_document,
)


def conf(attrs: str = "", room: str = "room1") -> Conference:
    doc = parse_document(f"<Response><Conference {attrs}>{room}</Conference></Response>")
    assert len(doc.verbs) == 1
    return doc.verbs[0]


def test_defaults_are_the_reference_defaults():
    c = conf()
    assert c == Conference(room="room1")
    assert (c.muted, c.enter_sound, c.exit_sound) == (False, "", "")
    assert (c.max_members, c.time_limit, c.hangup_on_star, c.stay_alone) == (20, 86400, False,
                                                                           True)
    assert (c.start_conference_on_enter, c.end_conference_on_exit, c.wait_sound) == (True, False,
                                                                                     None)
    assert (c.record, c.record_file_format) == (False, "mp3")
    assert (c.transcription_type, c.transcription_url, c.transcription_method) == (None, None,
                                                                                   "POST")
    assert (c.action, c.method, c.callback_url, c.callback_method, c.redirect) == (
        None, "POST", None, "POST", True)
    assert (c.digits_match, c.floor_event, c.relay_dtmf) == ((), False, True)


def test_every_attribute():
    c = conf(
        'muted="true" enterSound="beep:1" exitSound="https://ex.com/bye.xml" maxMembers="5" '
        'timeLimit="600" hangupOnStar="true" stayAlone="false" '
        'startConferenceOnEnter="false" endConferenceOnExit="true" '
        'waitSound="https://ex.com/hold.xml" record="true" recordFileFormat="wav" '
        'transcriptionType="auto" transcriptionUrl="https://ex.com/t" transcriptionMethod="GET" '
        'action="https://ex.com/a" method="GET" callbackUrl="https://ex.com/cb" '
        'callbackMethod="GET" redirect="false" digitsMatch="123, *9 ,#" floorEvent="true" '
        'relayDTMF="false" recordTracks="true" coach="3" noiseSuppression="true" agc="false"'
    )
    assert c.muted and c.enter_sound == "beep:1" and c.exit_sound == "https://ex.com/bye.xml"
    assert c.max_members == 5 and c.time_limit == 600 and c.hangup_on_star
    assert not c.stay_alone and not c.start_conference_on_enter and c.end_conference_on_exit
    assert c.wait_sound == "https://ex.com/hold.xml"
    assert c.record and c.record_file_format == "wav"
    assert c.transcription_type == "auto" and c.transcription_url == "https://ex.com/t"
    assert c.transcription_method == "GET"
    assert c.action == "https://ex.com/a" and c.method == "GET"
    assert c.callback_url == "https://ex.com/cb" and c.callback_method == "GET"
    assert c.redirect is False
    assert c.digits_match == ("123", "*9", "#")
    assert c.floor_event and not c.relay_dtmf
    assert c.record_tracks and c.coach == "3"
    assert c.noise_suppression is True and c.agc is False


def test_room_name_is_trimmed_and_case_insensitive_values():
    c = conf('muted="TRUE" method="post" recordFileFormat="MP3" enterSound="BEEP:2"',
             room="\n   my-room  \n")
    assert c.room == "my-room" and c.muted and c.method == "POST"
    assert c.record_file_format == "mp3" and c.enter_sound == "beep:2"


def test_relative_urls_resolve_against_the_answer_url():
    doc = parse_document(
        '<Response><Conference action="/done" waitSound="hold.xml">r</Conference></Response>',
        base_url="http://app.example:8080/voice/answer",
    )
    c = doc.verbs[0]
    assert c.action == "http://app.example:8080/done"
    assert c.wait_sound == "http://app.example:8080/voice/hold.xml"


@pytest.mark.parametrize(
    "attrs, message",
    [
        ('muted="yes"', "muted='yes': expected true or false"),
        ('maxMembers="0"', "must be 1-20"),
        ('maxMembers="21"', "must be 1-20"),
        ('maxMembers="ten"', "expected an integer"),
        ('timeLimit="0"', "must be >= 1"),
        ('timeLimit="-5"', "must be >= 1"),
        ('recordFileFormat="ogg"', "expected one of mp3, wav"),
        ('transcriptionType="fast"', "expected one of auto, hybrid, manual"),
        ('method="PUT"', "expected GET or POST"),
        ('callbackMethod="DELETE"', "expected GET or POST"),
        ('transcriptionMethod="x"', "expected GET or POST"),
        ('action="ftp://x/y"', "absolute http(s) URL"),
        ('callbackUrl="not a url"', "absolute http(s) URL"),
        ('waitSound=""', "empty URL"),
        ('enterSound="beep:3"', "absolute http(s) URL"),
        ('digitsMatch="12x"', "is not a digit string"),
        ('hangupOnStar="1"', "expected true or false"),
        ('endConferenceOnExit="maybe"', "expected true or false"),
        ('stayAlone=""', "expected true or false"),
        ('floorEvent="on"', "expected true or false"),
        ('relayDTMF="off"', "expected true or false"),
        ('redirect="no"', "expected true or false"),
        ('record="nope"', "expected true or false"),
        ('startConferenceOnEnter="2"', "expected true or false"),
        ('transcriptionUrl="http://x/t"', "needs record"),
        ('coach="a b"', "ConferenceMemberID or CallUUID"),
        ('recordTracks="2"', "expected true or false"),
        ('agc="loud"', "expected true or false"),
    ],
)
def test_validation_errors(attrs, message):
    with pytest.raises(AnswerError) as err:
        conf(attrs)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "xml, message",
    [
        ("", "empty document"),
        ("<Response><Conference>", "not valid XML"),
        ("<Reply><Conference>r</Conference></Reply>", "root element is <Reply>"),
        ("<Response><Conference>  </Conference></Response>", "empty room name"),
        ("<Response><Conference>" + "x" * 300 + "</Conference></Response>", "longer than"),
        ("<Response><Conference><Play>u</Play></Conference></Response>", "must not contain"),
        ('<!DOCTYPE r [<!ENTITY a "aaaa">]><Response><Speak>&a;</Speak></Response>',
         "forbidden XML construct"),
        ("<Response><Speak/></Response>", "empty text"),
        ('<Response><Wait length="0"/></Response>', "must be >= 1"),
        ('<Response><Play loop="-1">http://x/a.wav</Play></Response>', "must be >= 0"),
        ('<Response><Speak><Play>x</Play></Speak></Response>', "must not contain <Play>"),
        ('<Response><Conference sendDigits="12x">r</Conference></Response>', "w/W waits"),
        ('<Response><GetDigits finishOnKey="##"/></Response>', "expected one of 0-9"),
        ('<Response><GetDigits validDigits="12x"/></Response>', "expected digits"),
        ('<Response><GetDigits numDigits="0"/></Response>', "must be >= 1"),
        ('<Response><DTMF> </DTMF></Response>', "no digits"),
        ('<Response><Redirect method="PATCH">http://x/</Redirect></Response>', "GET or POST"),
    ],
)
def test_document_errors(xml, message):
    with pytest.raises(AnswerError) as err:
        parse_document(xml)
    assert message in str(err.value)


def test_document_model_keeps_order_and_skips_unknown_elements():
    doc = parse_document(
        "<Response>"
        '<Speak voice="MAN" loop="2">Welcome</Speak>'
        '<Play loop="0">http://x/music.mp3</Play>'
        '<Wait length="3"/>'
        "<GetInput/>"
        "<Conference>r</Conference>"
        '<Redirect method="GET">http://x/next</Redirect>'
        '<Hangup reason="busy"/>'
        "</Response>"
    )
    assert doc.verbs == (
        Speak(text="Welcome", voice="MAN", loop=2),
        Play(url="http://x/music.mp3", loop=0),
        Wait(length=3),
        Conference(room="r"),
        Redirect(url="http://x/next", method="GET"),
        Hangup(reason="busy"),
    )
    assert doc.skipped == ("GetInput",)


def test_sound_documents_keep_only_play_speak_wait():
    doc = parse_sound_document(
        "<Response><Play>http://x/a.wav</Play><Conference>r</Conference><Wait/></Response>"
    )
    assert doc.verbs == (Play(url="http://x/a.wav"), Wait())
    assert doc.skipped == ("Conference",)


def test_builtin_document_joins_the_dialled_room():
    assert builtin_document("sales").verbs == (Conference(room="sales"),)


# --- limits and URLs checked when the document is read -----------------------------------------

from sipconf.core.answer import Limits  # noqa: E402


@pytest.mark.parametrize("attr", ["callbackUrl", "action", "transcriptionUrl", "enterSound",
                                  "exitSound", "waitSound"])
def test_a_url_the_client_cannot_send_refuses_the_conference_naming_it(attr):
    extra = ' record="true"' if attr == "transcriptionUrl" else ""
    with pytest.raises(AnswerError) as err:
        conf(f'{attr}="http://x/cb&#9;tab"{extra}')
    assert f"Conference.{attr}=" in str(err.value) and "control character" in str(err.value)


def test_numbers_past_the_limits_are_cut_and_noted():
    doc = parse_document('<Response><Wait length="99999999999"/>'
                         '<Play loop="5000">http://x/a.wav</Play>'
                         '<Conference timeLimit="999999">r</Conference></Response>',
                         limits=Limits(max_wait=60, max_loops=10))
    assert doc.verbs[0] == Wait(length=60) and doc.verbs[1].loop == 10
    assert doc.verbs[2].time_limit == 86400
    assert [opt for opt, _ in doc.clamped] == ["max_wait_seconds", "max_play_loops",
                                               "timeLimit"]


@pytest.mark.parametrize("xml, message", [
    ("<Response>" + "<Wait/>" * 101 + "</Response>", "more than 100 (max_document_elements)"),
    ("<Response><Speak>" + "a" * 3001 + "</Speak></Response>", "longer than 3000"),
    ("<Response>" + " " * 300_000 + "</Response>", "(max_document_bytes)"),
    ('<Response><Speak language="../../x">hi</Speak></Response>', "language tag"),
    ('<Response><Conference digitsMatch="' + ",".join(["1"] * 101) + '">r</Conference>'
     "</Response>", "more than 100 patterns"),
])
def test_sizes_past_the_limits_refuse_the_document(xml, message):
    with pytest.raises(AnswerError) as err:
        parse_document(xml)
    assert message in str(err.value)


def test_a_play_whose_url_cannot_be_fetched_is_skipped_not_the_call():
    doc = parse_document("<Response><Play>nothing</Play><Play>http://x/a\tb.wav</Play>"
                         "<Conference>r</Conference></Response>")
    assert doc.verbs == (Conference(room="r"),)
    assert [s.split(" (")[0] for s in doc.skipped] == ["Play", "Play"]
    assert "absolute http(s) URL" in doc.skipped[0] and "control character" in doc.skipped[1]
    with pytest.raises(AnswerError):  # its loop is still the document's business
        parse_document('<Response><Play loop="-1">http://x/a.wav</Play></Response>')


def test_a_bad_element_in_a_sound_document_is_skipped_not_the_sound():
    doc = parse_sound_document("<Response><Play>http://[::1/x</Play><Wait length=\"2\"/>"
                               "<Play>http://x/ok.wav</Play></Response>")
    assert doc.verbs == (Wait(length=2), Play(url="http://x/ok.wav"))
    assert len(doc.skipped) == 1 and doc.skipped[0].startswith("Play (Play=")


def test_a_stream_in_twilios_dialect_carries_mulaw_only():
    url = "wss://agents.example/a"
    s = parse_document(f'<Response><Stream protocol="twilio">{url}</Stream></Response>').verbs[0]
    assert (s.protocol, s.content_type) == ("twilio", "audio/x-mulaw;rate=8000")
    assert parse_document(f"<Response><Stream>{url}</Stream></Response>").verbs[0].protocol \
        == "plivo"
    with pytest.raises(AnswerError, match="twilio carries audio/x-mulaw;rate=8000 only"):
        parse_document(f'<Response><Stream protocol="twilio" contentType="audio/x-l16;rate=16000"'
                       f">{url}</Stream></Response>")
    with pytest.raises(AnswerError, match="protocol"):
        parse_document(f'<Response><Stream protocol="sip">{url}</Stream></Response>')
    assert conf('agentUrl="wss://a.example/x" agentProtocol="twilio"').agent_protocol == "twilio"


def test_an_agent_request_picks_its_dialect():
    from types import SimpleNamespace

    from sipconf import agents
    from sipconf.core.answer import DEFAULT_LIMITS

    node = SimpleNamespace(limits=DEFAULT_LIMITS)
    spec, _doc, _name = agents.parse("r", {"url": "ws://a.example/x", "protocol": "twilio"},
                                     node)
    assert (spec.protocol, spec.content_type) == ("twilio", "audio/x-mulaw;rate=8000")
    assert agents.parse("r", {"url": "ws://a.example/x"}, node)[0].content_type \
        == "audio/x-l16;rate=16000"
    for body, why in (({"protocol": "sip"}, "protocol must be"),
                      ({"protocol": "twilio", "contentType": "audio/x-l16;rate=16000"},
                       "twilio carries")):
        with pytest.raises(ValueError, match=why):
            agents.parse("r", {"url": "ws://a.example/x", **body}, node)
