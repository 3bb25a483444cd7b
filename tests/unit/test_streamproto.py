"""Plivo's Audio Streaming protocol (and Twilio's Media Streams) as plain functions: formats,
μ-law and L16 both ways, 8 <-> 16 kHz, the node's messages and the app's messages checked."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from sipconf.core import streamproto as sp


def tone(hz: float, rate: int, seconds: float = 0.2, amp: float = 8000) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * hz * t)).astype(np.int16)


@pytest.mark.parametrize("ctype, rate", [("audio/x-mulaw;rate=8000", 16000),
                                         ("audio/x-l16;rate=8000", 16000),
                                         ("audio/x-l16;rate=16000", 8000),
                                         ("audio/x-l16;rate=16000", 16000)])
def test_audio_survives_the_round_trip(ctype, rate):
    fmt = sp.Format.parse(ctype)
    x = tone(440, rate)
    y = sp.decode(sp.encode(x, rate, fmt), fmt, rate)
    assert len(y) == len(x)
    assert np.corrcoef(x[100:-100], y[100:-100])[0, 1] > 0.99


def test_wire_sizes_and_byte_order():
    x = tone(440, 8000, 0.02)
    assert len(sp.encode(x, 8000, sp.Format.parse("audio/x-mulaw;rate=8000"))) == 160
    l16 = sp.encode(x, 8000, sp.Format.parse("audio/x-l16;rate=8000"))
    assert len(l16) == 320 and np.array_equal(np.frombuffer(l16, "<i2"), x)
    assert len(sp.encode(x, 8000, sp.Format.parse("audio/x-l16;rate=16000"))) == 640


@pytest.mark.parametrize("bad", ["audio/x-mulaw;rate=16000", "audio/pcm;rate=8000",
                                 "audio/x-l16;rate=44100"])
def test_unsupported_formats(bad):
    with pytest.raises(ValueError):
        sp.Format.parse(bad)


def test_the_nodes_messages_are_numbered_and_counted_per_track():
    out = sp.Outgoing("s1", "c1", ("inbound", "outbound"), sp.Format("audio/x-mulaw", 8000),
                      "a=1")
    msgs = [json.loads(m) for m in (out.start(), out.media("inbound", b"\xff" * 160, 5),
                                    out.media("outbound", b"\x7f", 6),
                                    out.media("inbound", b"\xff", 7), out.dtmf("5", 8),
                                    out.played("x"), *out.cleared(["y"]), out.stop("done"))]
    assert [m["sequenceNumber"] for m in msgs] == list(range(1, 9))
    assert msgs[0]["start"] == {"callId": "c1", "streamId": "s1", "accountId": "",
                                "tracks": ["inbound", "outbound"],
                                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}
    assert [m["media"]["chunk"] for m in msgs[1:4]] == [1, 1, 2]
    assert base64.b64decode(msgs[1]["media"]["payload"]) == b"\xff" * 160
    assert msgs[1]["media"]["timestamp"] == "5" and msgs[4]["dtmf"]["digit"] == "5"
    assert [m["event"] for m in msgs[5:]] == ["playedStream", "clearedAudio", "stop"]
    assert all(m["extra_headers"] == "a=1" and m["streamId"] == "s1" for m in msgs)


def test_twilio_dialect_the_nodes_messages():
    """Twilio's Media Streams (docs: voice/media-streams/websocket-messages): connected first,
    string counters, streamSid on every message after it, marks for played or cleared audio."""
    out = sp.outgoing("twilio", "MZ1", "CA1", ("inbound",), sp.Format("audio/x-mulaw", 8000),
                      "tenant=acme", "AC1")
    msgs = [json.loads(m) for m in (*out.opening(), out.media("inbound", b"\xff" * 160, 20),
                                    out.media("inbound", b"\xff", 40), out.dtmf("7", 50),
                                    out.played("hello"), *out.cleared(["a", "b"]),
                                    out.stop("done"))]
    assert msgs[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    assert [m["sequenceNumber"] for m in msgs[1:]] == [str(i) for i in range(1, 9)]
    assert all(m["streamSid"] == "MZ1" for m in msgs[1:])
    assert msgs[1]["start"] == {"accountSid": "AC1", "streamSid": "MZ1", "callSid": "CA1",
                                "tracks": ["inbound"], "customParameters": {"tenant": "acme"},
                                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                                "channels": 1}}
    assert [m["media"]["chunk"] for m in msgs[2:4]] == ["1", "2"]
    assert msgs[2]["media"]["timestamp"] == "20" and msgs[2]["media"]["track"] == "inbound"
    assert msgs[4]["dtmf"] == {"track": "inbound_track", "digit": "7"}
    assert [(m["event"], m["mark"]["name"]) for m in msgs[5:8]] == [
        ("mark", "hello"), ("mark", "a"), ("mark", "b")]
    assert msgs[8]["stop"] == {"accountSid": "AC1", "callSid": "CA1"}


def test_twilio_dialect_the_apps_messages():
    default = sp.Format("audio/x-mulaw", 8000)
    ev = sp.parse(json.dumps({"event": "media", "streamSid": "MZ1", "media": {
        "payload": base64.b64encode(b"\xff\x7f").decode()}}), default, "twilio")
    assert ev == sp.PlayAudio(b"\xff\x7f", sp.Format("audio/x-mulaw", 8000))
    assert sp.parse('{"event": "mark", "streamSid": "MZ1", "mark": {"name": "m"}}', default,
                    "twilio") == sp.Checkpoint("m")
    assert sp.parse('{"event": "clear", "streamSid": "MZ1"}', default, "twilio") \
        == sp.ClearAudio()
    assert sp.parse('{"event": "playAudio", "media": {"payload": ""}}', default,
                    "twilio") is None  # Plivo's: not Twilio's, ignored
    for bad in ('{"event": "media"}', '{"event": "media", "media": {"payload": "***"}}',
                '{"event": "mark", "mark": {}}', '{"event": "mark"}'):
        with pytest.raises(ValueError):
            sp.parse(bad, default, "twilio")


def test_the_apps_messages():
    default = sp.Format("audio/x-l16", 16000)
    pcm = base64.b64encode(b"\x01\x00\x02\x00").decode()
    ev = sp.parse(json.dumps({"event": "playAudio", "media": {
        "contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": pcm}}), default)
    assert ev == sp.PlayAudio(b"\x01\x00\x02\x00", sp.Format("audio/x-mulaw", 8000))
    assert sp.parse('{"event": "playAudio", "media": {"payload": ""}}', default).fmt == default
    assert sp.parse('{"event": "clearAudio", "streamId": "x"}', default) == sp.ClearAudio()
    assert sp.parse('{"event": "checkpoint", "name": "n"}', default) == sp.Checkpoint("n")
    assert sp.parse('{"event": "sendDTMF", "dtmf": "12#"}', default) == sp.SendDtmf("12#")
    assert sp.parse('{"event": "mark", "mark": {}}', default) is None  # not ours: ignored


@pytest.mark.parametrize("bad", [
    "not json", "[]", '{"event": 1}', '{"event": "playAudio"}',
    '{"event": "playAudio", "media": {"payload": "***"}}',
    '{"event": "playAudio", "media": {"payload": "", "sampleRate": "x"}}',
    '{"event": "playAudio", "media": {"payload": "", "contentType": "audio/x-mulaw", '
    '"sampleRate": 16000}}',
    '{"event": "checkpoint"}', '{"event": "sendDTMF", "dtmf": "12x"}',
    '{"event": "sendDTMF", "dtmf": ""}', "[" * 100000,
])
def test_messages_the_node_cannot_read_say_why(bad):
    with pytest.raises(ValueError):
        sp.parse(bad, sp.Format("audio/x-l16", 8000))


def test_a_message_too_large_is_refused_before_it_is_parsed():
    big = json.dumps({"event": "playAudio", "media": {"payload": "A" * sp.MAX_MESSAGE}})
    with pytest.raises(ValueError, match="more than"):
        sp.parse(big, sp.Format("audio/x-l16", 8000))


def _closed(code):
    from trio_websocket import CloseReason, ConnectionClosed

    return ConnectionClosed(CloseReason(code, None))


@pytest.mark.parametrize("exc, reason, dropped", [
    (_closed(1000), "closed by the app (1000)", False),
    # sender and receiver both saw the close in the same turn: still a normal close
    (ExceptionGroup("", [_closed(1000), _closed(1000)]), "closed by the app (1000)", False),
    (ExceptionGroup("", [ExceptionGroup("", [_closed(1011)]), _closed(1011)]),
     "closed by the app (1011)", True),
])
def test_how_the_app_closed_its_socket_decides_whether_an_agent_reconnects(exc, reason, dropped):
    from sipconf import audio_stream

    st = audio_stream.StreamRun("call", None, None)
    assert audio_stream._ended(st, exc)
    assert (st.reason, st.dropped) == (reason, dropped)


def test_a_fault_beside_a_close_is_not_taken_for_the_close():
    from sipconf import audio_stream

    st = audio_stream.StreamRun("call", None, None)
    assert not audio_stream._ended(st, ExceptionGroup("", [_closed(1000), KeyError("x")]))


def test_a_message_the_calls_end_cancelled_gives_its_number_back():
    """The call ended while a media chunk waited for the socket: it never went out, so the
    stop takes its number and chunk count (the app sees 1, 2, 3 without a gap)."""
    import trio

    from sipconf import audio_stream

    class Socket:
        def __init__(self):
            self.sent: list[dict] = []
            self.block = False

        async def send_message(self, message: str) -> None:
            if self.block:
                await trio.sleep_forever()
            self.sent.append(json.loads(message))

    ws = Socket()
    out = sp.Outgoing("s1", "c1", ("inbound",), sp.Format("audio/x-mulaw", 8000))
    tx = audio_stream._Sender(ws, out)

    async def main():
        await tx.send(out.opening)
        await tx.send(out.media, "inbound", b"\xff", 1)
        ws.block = True
        with trio.move_on_after(0.05):
            await tx.send(out.media, "inbound", b"\xff", 2)  # cancelled: not sent
        ws.block = False
        await tx.send(out.media, "inbound", b"\xff", 3)
        await tx.send(out.stop, "done")

    trio.run(main)
    assert [m["sequenceNumber"] for m in ws.sent] == [1, 2, 3, 4]
    assert [m["media"]["chunk"] for m in ws.sent[1:3]] == [1, 2]
    assert ws.sent[2]["media"]["timestamp"] == "3"
