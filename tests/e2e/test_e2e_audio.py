"""Real softphones in one room: each hears every other member and never itself.

Each baresip UA sends its own steady tone (440 / 1000 / 1700 Hz: no harmonic or
intermodulation product lands on another); what each UA decoded is analysed per 100 ms frame.
"""

import re
import time

import pytest
from support.audio import tone_report

pytestmark = pytest.mark.e2e

TONES = {"alice": 440.0, "bob": 1000.0, "carol": 1700.0}
TALK_S = 6.0


def _assert_heard(report: dict, own: float, others: list[float], name: str) -> None:
    noise = report["rest"]
    for f in others:
        snr = report[f] - noise
        assert snr >= 20.0, f"{name}: {f:g} Hz only {snr:.1f} dB above the noise ({report})"
    loudest_other = max(report[f] for f in others)
    below = loudest_other - report[own]
    assert below >= 25.0, f"{name}: own tone only {below:.1f} dB below the others ({report})"


def _room_call(node, uas, names, room, codecs=None):
    codecs = codecs or {}
    phones = [uas(n, tone_hz=TONES[n], codecs=codecs.get(n, "PCMU,PCMA")) for n in names]
    for ua in phones:
        ua.dial(node.uri(room), seconds=TALK_S + 20)
    for ua in phones:
        assert ua.wait_for("Call established", 10), ua.output()[-2000:]
    time.sleep(TALK_S)
    for ua in phones:
        ua.stop()
    return phones


@pytest.mark.parametrize("names", [["alice", "bob"], ["alice", "bob", "carol"]],
                         ids=["two", "three"])
def test_members_hear_each_other_not_themselves(answer_server, node_factory, uas, names):
    url = answer_server.conference("/answer", "tones")
    node = node_factory(url)
    phones = _room_call(node, uas, names, "tones")
    for ua in phones:
        report = tone_report(ua.heard(), list(TONES.values()))
        others = [TONES[n] for n in names if n != ua.name]
        _assert_heard(report, TONES[ua.name], others, ua.name)
    # The answer URL was asked once per call, with the hosted-platform parameters.
    reqs = [r for r in answer_server.requests if r.path == "/answer"]
    assert len(reqs) == len(names)
    for r in reqs:
        assert r.method == "POST"
        assert r.params["Direction"] == "inbound"
        assert r.params["CallStatus"] == "ringing"
        assert r.params["To"] == "tones"
        assert r.params["From"].startswith("sip:")
        assert r.params["CallUUID"]
    assert len({r.params["CallUUID"] for r in reqs}) == len(names)


@pytest.mark.parametrize(
    "codecs",
    [
        {"alice": "G722", "bob": "PCMU"},
        {"alice": "opus", "bob": "PCMA"},
        {"alice": "G722", "bob": "PCMU", "carol": "opus"},
    ],
    ids=["g722-pcmu", "opus-pcma", "g722-pcmu-opus"],
)
def test_wideband_and_narrowband_members_hear_each_other(answer_server, node_factory, uas,
                                                         codecs):
    """Wideband (G.722, Opus at 16 kHz) and narrowband phones in one room."""
    url = answer_server.conference("/answer", "mixed")
    node = node_factory(url)
    names = list(codecs)
    phones = _room_call(node, uas, names, "mixed", codecs=codecs)
    for ua in phones:
        decoder = re.search(r"Set audio decoder: (\S+)", ua.output())
        assert decoder and decoder.group(1).upper() == codecs[ua.name].upper(), ua.output()[-999:]
    for ua in phones:
        report = tone_report(ua.heard(), list(TONES.values()))
        others = [TONES[n] for n in names if n != ua.name]
        _assert_heard(report, TONES[ua.name], others, ua.name)


def test_rooms_are_separate(answer_server, node_factory, uas):
    """Two rooms at once: nobody hears the other room."""
    node = node_factory()  # built-in document: the dialled user names the room
    a = uas("alice", tone_hz=440.0).dial(node.uri("east"), 30)
    b = uas("bob", tone_hz=1000.0).dial(node.uri("east"), 30)
    c = uas("carol", tone_hz=1700.0).dial(node.uri("west"), 30)
    d = uas("dave", tone_hz=2300.0).dial(node.uri("west"), 30)
    for ua in (a, b, c, d):
        assert ua.wait_for("Call established", 10), ua.output()[-2000:]
    time.sleep(TALK_S)
    for ua in (a, b, c, d):
        ua.stop()
    freqs = [440.0, 1000.0, 1700.0, 2300.0]
    ra = tone_report(a.heard(), freqs)
    rc = tone_report(c.heard(), freqs)
    assert ra[1000.0] - ra["rest"] >= 20
    assert ra[1000.0] - max(ra[1700.0], ra[2300.0]) >= 25, ra
    assert rc[2300.0] - rc["rest"] >= 20
    assert rc[2300.0] - max(rc[440.0], rc[1000.0]) >= 25, rc
