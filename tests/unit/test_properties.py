"""Property-based tests (Hypothesis): whatever a customer's document, sound document or control
API request holds, it is an *expected* error (a refusal, a skip, a clamp), never a fault.

Pure properties: ``parse_document`` / ``parse_sound_document`` return a Document or raise
AnswerError for any input; ``check_url`` returns a URL the HTTP client can build a request for,
or raises BadUrl.

Node properties: hostile documents, sound documents and API bodies are run through the real
Node with the fake engine and a mock web app (support/node_harness.py). After each example:
``node.faults.counts`` is empty, the node still runs, every call got a final SIP answer and is
either over or somewhere it may legitimately stay (a room, a sound looped until hang-up), and
once the callers hang up no call, room or half-open INVITE is left; API requests get 2xx/4xx.

Long on purpose: one strategy per input a customer controls, each with its property; the
strategies share building blocks that would otherwise be imported back and forth.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

import httpx
import pytest
import trio
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from support.node_harness import Harness, WebApp, run_node, wav_bytes

from sipconf.core.answer import AnswerError, Document, Limits, parse_document, parse_sound_document
from sipconf.core.urls import BadUrl, check_url
from sipconf.engine import CallEnded, MediaError

# Derandomized by default: the suite is the same on every run (known bugs are pinned as xfail
# tests at the end and kept out of the strategies). SIPCONF_EXPLORE=1 explores afresh, with
# SIPCONF_EXAMPLES=N times as many examples.
EXPLORE = os.environ.get("SIPCONF_EXPLORE") == "1"
SCALE = int(os.environ.get("SIPCONF_EXAMPLES", "1"))


def fast(examples: int) -> settings:
    """Examples run the node in virtual time: no deadline; no example database (nothing is
    written outside tests/; a failure prints its example, and how to reproduce it)."""
    return settings(max_examples=examples * SCALE, deadline=None, database=None,
                    print_blob=True, derandomize=not EXPLORE,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- hostile values -------------------------------------------------------------------------------


def mostly(valid, hostile, n: int = 10) -> st.SearchStrategy:
    """``valid`` n times out of n+1: most documents should parse, so that what is hostile in
    them reaches the node (what the parser refuses is the pure properties' business)."""
    return st.sampled_from([True] * n + [False]).flatmap(lambda v: valid if v else hostile)


def rarely(n: int) -> st.SearchStrategy[bool]:
    """True about once in ``n`` draws (``integers(...) == 0`` would be far more often: Hypothesis
    favours boundary values)."""
    return st.sampled_from([False] * (n - 1) + [True])


def values(*choices: str) -> st.SearchStrategy[str]:
    return st.sampled_from(list(choices))


NUMBERS = st.one_of(
    values("0", "1", "2", "3", "20", "21", "-1", "-0", "+5", " 4 ", "", " ", "1.5", "1e3",
           "0x10", "1_000", "٣", "２", "99999999999999999999999", "9" * 5000, "NaN",
           "inf", "true"),
    st.integers(-10, 30).map(str),
    st.integers(min_value=-2**70, max_value=2**70).map(str),
)
HOSTILE_BOOLS = values("yes", "1", "", "tru\u00e9", "t", "true false")
BOOLS = mostly(values("true", "false", "TRUE", " False "), HOSTILE_BOOLS)
METHODS = mostly(values("GET", "POST", "get", " post "), values("PUT", "", "P\u00d6ST", "GE T"))
HOSTILE_URLS = [
    "", " ", "/", "?", "#", "http://", "https://", "http:///x", "http://app.test",
    "http://[::1]/x", "http://[::1", "http://[fe80::1%25eth0]/x", "http://[zz::1]/x",
    "http://app.test:99999/x", "http://app.test:0/x", "http://app.test:-1/x",
    "http://app.test:/x", "ftp://app.test/x", "javascript:alert(1)", "mailto:a@b",
    "file:///etc/passwd", "data:text/xml,<Response/>", "http://ü.test/x",
    "http://xn--ls8h.test/", "http://app.test/\u00e9\u6f22", "http://a b/x", "http://app.test/a b",
    "http://user:pw@app.test/cb", "http://@app.test/x", "\\\\server\\share", "//app.test/cb",
    "../cb", "./cb", "cb", "..", "http://app.test/cb?x=1&y=%zz#frag", "http://app.test/%00",
    "http://app.test/\t", "http://app.test/\x7f", "http://app.test/\u2028", "HTTP://APP.TEST/cb",
    "http://app.test/" + "a" * 5000, "http://" + "a" * 300 + ".test/", "http://-.test/",
    "http://app.test./cb", "http://127.0.0.1:8080/cb", "http://0/x", "beep:1", "beep:2",
    "beep:3", "BEEP:1", "beep:", "http://app.test/cb\u0000", "http://%61pp.test/x",
    "http://app.test/x\ud7ff", "http://[::ffff:1.2.3.4]/x", "http://[::1]:80/x",
    "http://app.test:65535/x", "http://app.test:65536/x", "http://app.test:１２/x",
]
ANY_TEXT = mostly(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30),
                  st.text(max_size=30), n=3)
URLS = st.one_of(st.sampled_from(HOSTILE_URLS), ANY_TEXT,
                 ANY_TEXT.map(lambda t: "http://app.test/" + t),
                 ANY_TEXT.map(lambda t: "http://" + t + "/x"))


def esc(value: str, attr: bool = True) -> str:
    """XML-escape ``value``; control characters become character references (invalid in XML
    1.0 except tab, newline and CR: the document is then refused, which is fine)."""
    out = []
    for ch in value:
        o = ord(ch)
        if ch == "&":
            out.append("&amp;")
        elif ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append("&gt;")
        elif ch == '"' and attr:
            out.append("&quot;")
        elif o < 32 or o == 127:
            out.append(f"&#{o};")
        else:
            out.append(ch)
    return "".join(out)


# --- the web app's routes an example can point at ------------------------------------------------


def _wav_header(rate: int, datalen: int, body: bytes, fmt: int = 1, ch: int = 1, bits: int = 16):
    return (b"RIFF" + struct.pack("<I", (36 + datalen) & 0xFFFFFFFF) + b"WAVE" + b"fmt "
            + struct.pack("<IHHIIHH", 16, fmt, ch, rate, (rate * ch * bits // 8) & 0xFFFFFFFF,
                          ch * bits // 8, bits)
            + b"data" + struct.pack("<I", datalen & 0xFFFFFFFF) + body)


async def _slow(req):
    await trio.sleep(3600)
    return ""


AUDIO_ROUTES = {
    "/s.wav": wav_bytes(0.5),
    "/tiny.wav": wav_bytes(0.01),
    "/junk.wav": bytes(range(256)) * 4,
    "/long.wav": _wav_header(1, 4000, b"\0" * 4000),  # says 2000 s: past max_sound_seconds
    "/zero.wav": _wav_header(8000, 100, b"\0" * 100, fmt=99),  # decodes to 0 samples
    "/empty": b"",
    "/e500": (500, "oops"),
    "/e404": (404, "no"),
    "/slow": _slow,
}
AUDIO_PATHS = list(AUDIO_ROUTES)
DOC_PATHS = ["/doc/0", "/doc/1", "/doc/2"]
SND_PATHS = ["/snd/0", "/snd/1", "/snd/2"]
CB_PATHS = ["/cb", "/cb400", "/cb500", "/slow", "/doc/0", "/snd/0"]


def _routed(paths: list[str]) -> st.SearchStrategy[str]:
    """Mostly a route the web app serves (relative or absolute), sometimes anything."""
    path = st.sampled_from(paths)
    return mostly(st.one_of(path, path.map(lambda p: "http://app.test" + p),
                            path.map(lambda p: p.lstrip("/"))), URLS, n=4)


ROOMS = mostly(values("r1", "r2", " r1 ", "R1", "\u00e9t\u00e9", "a/b", "a%2Fb", "..",
                      "r\u200b1", "r1\n"),
               st.one_of(values("", "  ", "x" * 300, "\u0001"), ANY_TEXT))
SPEAK_TEXT = mostly(values("hello", "Hi there", "-v en", "--help", "\u4f60\u597d", "<b>x</b>",
                           "&amp;", " \n hello \t"),
                    st.one_of(values("", "   ", "x" * 61), st.text(max_size=12)), n=4)
LANGS = mostly(values("en-US", "en", "fr-FR", "xx", "zz-ZZ", "en-US-x-a-b", "EN-us"),
               st.one_of(values("", "en_US", "-v", "e1", "en-US-x-a-b-c"), ANY_TEXT))
VOICES = mostly(values("WOMAN", "man", "Man "), values("child", ""))
DIGITS = mostly(values("12", "1,2,3", "*9,#", "", " , ", "a,b,c,d"),
                values("12,ab", "1" * 33, ",".join(["1"] * 101), "\u0661", "1 2"))
SOUNDS = mostly(st.one_of(values("beep:1", "beep:2", "BEEP:2", ""),
                          _routed(SND_PATHS + AUDIO_PATHS)),
                st.one_of(values("beep:3", "beep:", "beep:1 x"), URLS))


def number(*valid: str) -> st.SearchStrategy[str]:
    return mostly(values(*valid), NUMBERS)


CONFERENCE_ATTRS = {
    "muted": BOOLS, "enterSound": SOUNDS, "exitSound": SOUNDS,
    "maxMembers": number("1", "2", "20", " 3 "),
    "timeLimit": number("5", "30", "86400", "999999999"),
    "hangupOnStar": BOOLS, "stayAlone": BOOLS, "startConferenceOnEnter": BOOLS,
    "endConferenceOnExit": BOOLS, "waitSound": _routed(SND_PATHS + AUDIO_PATHS),
    "record": BOOLS,
    "recordFileFormat": mostly(values("mp3", "wav", "WAV"), values("ogg", "", "mp4")),
    "transcriptionType": mostly(values("auto", "hybrid", "manual"), values("x", "")),
    "transcriptionUrl": _routed(CB_PATHS), "transcriptionMethod": METHODS,
    "action": _routed(DOC_PATHS + CB_PATHS), "method": METHODS,
    "callbackUrl": _routed(CB_PATHS), "callbackMethod": METHODS, "redirect": BOOLS,
    "digitsMatch": DIGITS, "floorEvent": BOOLS, "relayDTMF": BOOLS,
}
VERBS = {
    "Conference": (CONFERENCE_ATTRS, ROOMS),
    "Play": ({"loop": number("0", "1", "2", "3", "1000", " 2 ")},
             _routed(AUDIO_PATHS + SND_PATHS)),
    "Speak": ({"loop": number("0", "1", "2", "1000"), "voice": VOICES, "language": LANGS},
              SPEAK_TEXT),
    "Wait": ({"length": number("1", "2", "5", "100000", " 3")}, values("", " ", "", "5")),
    "Redirect": ({"method": METHODS}, _routed(DOC_PATHS + AUDIO_PATHS + CB_PATHS)),
    "Hangup": ({"reason": values("busy", "rejected", "BUSY", "", "x" * 100)}, values("", "x")),
}
UNKNOWN_TAGS = ["Queue", "Record", "GetDigits", "response", "Response", "conference", "x:Play",
                "PreAnswer", "Message"]
UNKNOWN_ATTRS = ["foo", "xml:lang", "data-x", "_x", "Loop", "LENGTH"]


@st.composite
def element(draw, verbs: tuple[str, ...] = tuple(VERBS), depth: int = 0) -> str:
    if draw(rarely(20)):
        tag = draw(st.sampled_from(UNKNOWN_TAGS))
        known, text = {}, ANY_TEXT
    else:
        tag = draw(st.sampled_from(verbs))
        known, text = VERBS[tag]
    attrs = []
    if known:
        names = draw(st.lists(st.sampled_from(sorted(known)), max_size=4, unique=True))
        attrs += [(name, draw(known[name])) for name in names]
    if draw(rarely(25)):
        attrs.append((draw(st.sampled_from(UNKNOWN_ATTRS)), draw(ANY_TEXT)))
    body = draw(ANY_TEXT) if draw(rarely(10)) else esc(draw(text), attr=False)
    if depth == 0 and draw(rarely(30)):
        body += draw(element(verbs, depth + 1))
    attr_text = "".join(f' {n}="{esc(v)}"' for n, v in attrs)
    if not body and draw(st.booleans()):
        return f"<{tag}{attr_text}/>"
    return f"<{tag}{attr_text}>{body}</{tag}>"


ENTITY_TRICKS = [
    '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">'
    '<!ENTITY c "&b;&b;&b;&b;&b;&b;">]><Response><Speak>&c;</Speak></Response>',
    '<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><Response><Speak>&x;</Speak>'
    '</Response>',
    '<!DOCTYPE r [<!ENTITY x SYSTEM "http://app.test/doc/0">]><Response>&x;</Response>',
    '<!DOCTYPE Response SYSTEM "http://app.test/dtd"><Response/>',
    '<?xml version="1.0" encoding="utf-16"?><Response/>',
    "\ufeff<Response><Wait/></Response>",
    '<Response xmlns="urn:x"><Wait/></Response>',
    "<Response><![CDATA[<Play>x</Play>]]></Response>",
    "<Response><Speak><![CDATA[hello <there>]]></Speak></Response>",
    "<Response><?pi x?><!-- c --><Wait/></Response>",
    "<Response>" + "<Wait/>" * 101 + "</Response>",
    "<Response>" + "<a>" * 2000 + "</a>" * 2000 + "</Response>",
    "<Response><Speak>&#0;</Speak></Response>",
    "<Response><Speak>&#x110000;</Speak></Response>",
    "<Response><Speak>&#xD800;</Speak></Response>",
    "<Response><Conference>&#xD7FF;</Conference></Response>",
    "<Response></Response><Response/>",
    "<Response><Play>&amp;</Play></Response>",
    "",
    "   ",
    "<Response",
]


@st.composite
def documents(draw, verbs: tuple[str, ...] = tuple(VERBS), max_elements: int = 5,
              min_elements: int = 0) -> bytes:
    kind = draw(st.sampled_from(["xml"] * 17 + ["binary", "trick", "text"]))
    if kind == "binary":
        return draw(st.binary(max_size=200))
    if kind == "trick":
        return draw(st.sampled_from(ENTITY_TRICKS)).encode()
    if kind == "text":
        return draw(st.text(max_size=200)).encode()
    children = draw(st.lists(element(verbs), min_size=min_elements, max_size=max_elements))
    root = draw(st.sampled_from(["Response"] * 30 + ["response", "Responses", "Play"]))
    doc = f"<{root}>{''.join(children)}</{root}>"
    if draw(rarely(10)):
        doc = '<?xml version="1.0" encoding="UTF-8"?>\n' + doc
    return doc.encode()


# answer documents: most have a Conference (a room is where most of the node's work is)
answer_documents = documents(("Conference",) * 4 + tuple(VERBS))
sound_documents = documents(("Play", "Speak", "Wait", "Play", "Wait", "Redirect", "Hangup"),
                            max_elements=3, min_elements=1)


# --- pure properties ------------------------------------------------------------------------------


@fast(600)
@given(data=st.one_of(documents(), st.binary(max_size=300)),
       base=st.one_of(st.none(), st.sampled_from(["http://app.test/answer", "https://[::1]/x/",
                                                  "not a url", ""])),
       sound=st.booleans())
def test_parse_document_returns_a_document_or_raises_answer_error(data, base, sound):
    limits = Limits(max_bytes=8192, max_elements=10, max_wait=5, max_loops=3,
                    max_speak_chars=60)
    parse = parse_sound_document if sound else parse_document
    try:
        doc = parse(data, base_url=base, limits=limits)
    except AnswerError as exc:
        assert str(exc)
        return
    assert isinstance(doc, Document)
    for verb in doc.verbs:
        for name in ("url", "action", "callback_url", "wait_sound", "transcription_url"):
            url = getattr(verb, name, None)
            if url:
                httpx.Request("POST", url, data={"CallUUID": "x"})  # every URL can be sent
        if hasattr(verb, "length"):
            assert 1 <= verb.length <= 5
        if hasattr(verb, "loop"):
            assert 0 <= verb.loop <= 3


@fast(1000)
@given(value=st.one_of(URLS, st.text(), st.none(), st.integers(), st.binary(max_size=20)),
       base=st.one_of(st.none(), st.sampled_from(["http://app.test/answer", "http://[::1]/a/b",
                                                  "ftp://x/", "", "http://app.test:8080"])))
def test_check_url_returns_a_sendable_url_or_raises_bad_url(value, base):
    try:
        url = check_url(value, base)
    except BadUrl as exc:
        assert str(exc)
        return
    assert isinstance(url, str) and url.lower().startswith(("http://", "https://"))
    httpx.Request("POST", url, data={"CallUUID": "x"})
    httpx.Request("GET", url, params={"CallUUID": "x", "To": "\u00e9"})
    assert check_url(url) == url  # a checked URL stays as it is when checked again


# --- node properties ------------------------------------------------------------------------------

NODE_LIMITS = dict(max_wait_seconds=5, max_play_loops=3, max_speak_chars=60,
                   max_sound_seconds=30.0, max_documents_per_call=5, max_document_elements=10,
                   max_document_bytes=16384, webhook_ttl=60.0, webhook_max_backoff=5.0)
SETTLE_S = 600.0  # virtual seconds a call's documents may take before it must be settled


@dataclass
class World:
    """One example: what the web app serves and what the callers do."""

    answers: list[bytes]
    docs: list[bytes]
    sounds: list[bytes]
    cb_status: list[int]
    arrivals: list[float]
    digits: list[tuple[int, float, str]] = field(default_factory=list)  # (call, at, digit)
    hangups: dict[int, float] = field(default_factory=dict)  # caller hangs up at
    # the caller gives up just as the node sends this command
    gone_before: dict[int, str] = field(default_factory=dict)


def make_app(world: World) -> WebApp:
    cb_replies = iter(world.cb_status * 100)

    def cb(req):
        return (next(cb_replies, 200), "")

    routes = {**AUDIO_ROUTES, "/cb": cb, "/cb400": (400, "no"), "/cb500": (500, "down")}
    for i, body in enumerate(world.docs):
        routes[f"/doc/{i}"] = body
    for i, body in enumerate(world.sounds):
        routes[f"/snd/{i}"] = body
    return WebApp(answer={f"u{i}": body for i, body in enumerate(world.answers)},
                  routes=routes)


def settled(h: Harness, uuid: str, mixer: bool = True) -> bool:
    """Where a call may stay until its caller hangs up: over, in a room (in the node, and with
    ``mixer`` in the mixer too), or hearing a sound looped until it ends (Play loop="0")."""
    call = h.engine.calls[uuid]
    if call.ended:
        return True
    if call.final is None:
        return False  # still ringing
    s = h.node.calls.get(uuid)
    in_room = s is not None and s.room is not None and (call.room is not None or not mixer)
    looping = call.overlay is not None and call.overlay[1] == 0
    return in_room or looping


def check_settled_and_hang_up_all(h: Harness, uuids: list[str], stagger: float = 0.0,
                                  mixer: bool = True):
    """Wait until every call is settled, then the callers hang up (``stagger`` seconds apart);
    then no call, room or half-open INVITE may be left."""
    async def go():
        await h.wait_until(lambda: all(settled(h, u, mixer) for u in uuids), SETTLE_S,
                           step=1.0, what="every call settled")
        assert h.node.broken is None and not h.run_done.is_set(), "the node stopped"
        for u in uuids:
            if not h.engine.calls[u].ended:
                h.engine.hang_up(u)
                if stagger:
                    await trio.sleep(stagger)
        await h.wait_until(lambda: not h.node.calls and not h.node.rooms, 120, step=0.5,
                           what="no call and no room left")
        for u in uuids:
            call = h.engine.calls[u]
            assert call.final is not None and call.ended, f"{u} half-open: {call}"
            assert call.room is None
        assert not h.engine.rooms, f"mixer rooms left: {h.engine.rooms}"

    return go()


def outcomes(h: Harness) -> None:
    """Hypothesis statistics (pytest --hypothesis-show-statistics): what the examples did."""
    for call in h.engine.calls.values():
        event(f"call final {call.final}")
    names = {c[0] for c in h.engine.log}
    for name in ("join", "play_to_call", "play_to_room", "send_digits", "tap_room"):
        event(f"engine {name}: {'yes' if name in names else 'no'}")
    for limit in h.node.faults.limits:
        event(f"limit {limit}")


def check_event_order(h: Harness) -> None:
    """Per call and room run, as the web app first heard of them: enter, then exit, then the
    action request (events of one call go out one after another)."""
    first: dict[tuple[str, str, str], int] = {}
    for i, r in enumerate(h.app.requests):
        p = r.params
        if "ConferenceAction" in p:
            kind = p["ConferenceAction"]
        elif "ConferenceName" in p and "CallStatus" in p:
            kind = "action"
        else:
            continue
        first.setdefault((p.get("CallUUID", ""), p.get("ConferenceUUID", ""), kind), i)
    for (call, run, kind), i in first.items():
        if kind == "exit":
            assert first.get((call, run, "enter"), -1) < i, f"{call}: exit before enter"
        if kind == "action" and run:
            assert first.get((call, run, "exit"), -1) < i, f"{call}: action before exit"


def check_after(h: Harness) -> None:
    outcomes(h)
    check_event_order(h)
    assert dict(h.node.faults.counts) == {}, f"faults: {dict(h.node.faults.counts)}"
    assert h.broken is None


@st.composite
def worlds(draw) -> World:
    n = draw(st.integers(1, 3))
    answers = draw(st.lists(answer_documents, min_size=n, max_size=n))
    docs = draw(st.lists(answer_documents, min_size=3, max_size=3))
    sounds = draw(st.lists(sound_documents, min_size=3, max_size=3))
    cb_status = draw(st.lists(st.sampled_from([200, 200, 200, 400, 500, 404]), min_size=1,
                              max_size=4))
    arrivals = draw(st.lists(st.floats(0, 5), min_size=n, max_size=n))
    digits = draw(st.lists(st.tuples(st.integers(0, n - 1), st.floats(0, 30),
                                     st.sampled_from(list("0123456789*#ABCDx") + [
                                         "floor", "media-up", "media-error", "bye-twice"])),
                           max_size=5))
    # (round hang-up times included: a caller hanging up at the very instant its Wait ends
    # and its Conference starts, pinned in test_node_flow.py)
    hangups = draw(st.dictionaries(st.integers(0, n - 1), st.floats(2, 120), max_size=n))
    gone = draw(st.dictionaries(st.integers(0, n - 1),
                                values("hangup", "answer", "play_to_call"), max_size=1))
    return World(answers, docs, sounds, cb_status, arrivals, digits, hangups, gone)


def run_world(world: World, **config) -> Harness:
    app = make_app(world)

    async def callers(h: Harness):
        uuids = [f"call-{i}" for i in range(len(world.answers))]
        t0 = trio.current_time()
        plan = sorted([(at, "call", i, "") for i, at in enumerate(world.arrivals)]
                      + [(world.arrivals[i] + at, "digit", i, d) for i, at, d in world.digits]
                      + [(world.arrivals[i] + at, "bye", i, "") for i, at in world.hangups.items()])
        for at, what, i, d in plan:
            await trio.sleep_until(t0 + at)
            call = h.engine.calls.get(uuids[i])
            if what == "call":
                if i in world.gone_before:
                    h.engine.gone_before[uuids[i]] = world.gone_before[i]
                h.engine.incoming(uuids[i], f"u{i}")
            elif call is not None and d == "floor":  # the mixer's talker detection
                for key in list(h.engine.rooms) + ["no-such-room"]:
                    h.engine.floor(key, uuids[i])
            elif call is not None and d == "media-up":
                h.engine.media_up(uuids[i], 8000)
            elif call is not None and d == "media-error":
                h.engine.emit(MediaError(uuids[i], "RTP stream failed"))
            elif call is not None and d == "bye-twice":
                if call.ended:  # a stray second CallEnded
                    h.engine.emit(CallEnded(uuids[i], 200, "again"))
            elif call is not None and not call.ended:
                if what == "digit":
                    h.engine.digit(uuids[i], d)
                else:
                    h.engine.hang_up(uuids[i])
        await check_settled_and_hang_up_all(h, uuids)

    return run_node(callers, app=app, **{**NODE_LIMITS, **config})


@fast(150)
@given(world=worlds())
def test_no_answer_document_raises_past_its_call(world):
    note(repr(world))
    h = run_world(world)
    check_after(h)


@fast(80)
@given(sounds=st.lists(sound_documents, min_size=3, max_size=3),
       attrs=st.lists(st.tuples(st.sampled_from(["enterSound", "exitSound", "waitSound"]),
                                st.sampled_from(SND_PATHS + ["beep:1"])), min_size=1, max_size=3,
                      unique_by=lambda t: t[0]),
       waiting=st.booleans(), plays=st.lists(st.sampled_from(SND_PATHS), max_size=2))
def test_no_sound_document_raises_past_its_sound(sounds, attrs, waiting, plays):
    """enterSound / exitSound / waitSound URLs (and Play pointing at one) behind which the web
    app serves hostile sound documents: the sound is skipped or cut, nothing faults."""
    attr_text = " ".join(f'{n}="{v}"' for n, v in attrs)
    start = ' startConferenceOnEnter="false"' if waiting else ""
    before = "".join(f"<Play>{p}</Play>" for p in plays)
    doc = f"<Response>{before}<Conference {attr_text}{start}>r1</Conference></Response>"
    host = "<Response><Conference exitSound=\"/snd/1\">r1</Conference></Response>"
    world = World(answers=[doc.encode(), doc.encode(), host.encode()], docs=[b"", b"", b""],
                  sounds=sounds, cb_status=[200], arrivals=[0.0, 2.0, 4.0],
                  hangups={0: 40.0})
    note(doc)
    check_after(run_world(world))


# --- the control API ------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=20),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=6)
API_URLS = st.one_of(st.sampled_from(["http://app.test/s.wav", "http://app.test/junk.wav",
                                      "http://app.test/long.wav", "http://app.test/slow",
                                      "http://app.test/zero.wav", "http://app.test/e500",
                                      "/s.wav"]), URLS, JSON)
FORMATS = st.one_of(st.sampled_from(["mp3", "wav", "WAV", "ogg", "", None]), JSON)
API_BODIES = st.one_of(
    st.fixed_dictionaries({}, optional={
        "url": API_URLS, "text": st.one_of(SPEAK_TEXT, JSON), "voice": st.one_of(VOICES, JSON),
        "language": st.one_of(LANGS, JSON), "format": FORMATS,
        "member_id": st.one_of(st.sampled_from(["1", "2", "3", 1, 2, "01", " 1", "x"]), JSON)}),
    JSON,
)
RAW_BODIES = st.sampled_from([b"", b" ", b"{", b"null", b"[]", b"\xff\xfe", b"[" * 100000,
                              b'{"url": "' + b"a" * 70000 + b'"}', b'{"a": 1e999999}',
                              b'{"a": ' + b"9" * 5000 + b"}", b'{"url": NaN}'])
ROOM_PATHS = st.sampled_from(["r1", "r2", "nope", "r%31", "%2F", "%", "%ff", "r1%00", "..",
                              "%E2%80%8B"])
COMMANDS = st.sampled_from(["play"] * 4 + ["speak"] * 3 + ["record/start"] * 2 + [
                            "record/stop", "end",
                            "members/1/mute", "members/2/unmute", "members/1/deaf",
                            "members/2/undeaf", "members/2/kick", "members/1/hangup",
                            "members/9/mute", "members/%31/mute", "members/x/kick", "", "play/x"])


GOOD_API_URLS = values("http://app.test/s.wav", "http://app.test/tiny.wav",
                       "http://app.test/junk.wav", "http://app.test/long.wav",
                       "http://app.test/slow", "http://app.test/zero.wav", "http://app.test/e500")
MEMBER_IDS = mostly(values("1", "2", 1, 2), st.one_of(values("3", "01", " 1", "x"), JSON), n=2)


@st.composite
def api_body(draw, command: str):
    """Mostly what the command expects (with hostile values here and there), else anything."""
    if draw(rarely(4)):
        return draw(API_BODIES)
    body = {}
    if command == "play":
        body["url"] = draw(mostly(GOOD_API_URLS, API_URLS, n=3))
    elif command == "speak":
        body["text"] = draw(mostly(SPEAK_TEXT, JSON, n=3))
        if draw(st.booleans()):
            body["voice"] = draw(mostly(VOICES, JSON, n=3))
        if draw(st.booleans()):
            body["language"] = draw(mostly(LANGS, JSON, n=3))
    elif command == "record/start" and draw(st.booleans()):
        body["format"] = draw(FORMATS)
    if command in ("play", "speak") and draw(rarely(3)):
        body["member_id"] = draw(MEMBER_IDS)
    return body


@st.composite
def api_requests(draw):
    room, command = draw(mostly(st.just("r1"), ROOM_PATHS, n=3)), draw(COMMANDS)
    path = f"/v1/rooms/{room}" + (f"/{command}" if command else "")
    method = draw(mostly(st.just("POST"), values("GET", "DELETE", "PUT")))
    if draw(rarely(6)):
        return method, path, None, draw(RAW_BODIES)
    return method, path, draw(api_body(command)), None


OTHER_API = st.sampled_from([
    ("GET", "/v1/rooms", b""), ("GET", "/v1/dead-letters", b"limit=5"),
    ("GET", "/v1/dead-letters", b"limit=0"), ("GET", "/v1/dead-letters", b"limit=abc"),
    ("GET", "/v1/dead-letters", b"limit=%31"), ("GET", "/v1/dead-letters", b"limit"),
    ("GET", "/v1/dead-letters", b"=&=&limit=1=2"), ("DELETE", "/v1/dead-letters/1", b""),
    ("DELETE", "/v1/dead-letters/99999999999999999999", b""), ("GET", "/metrics", b""),
    ("GET", "/health", b""), ("GET", "/openapi.json", b""), ("GET", "/v1/rooms/r1", b""),
    ("GET", "/nope", b""), ("PATCH", "/v1/rooms", b""),
])


@fast(100)
@given(requests=st.lists(st.one_of(api_requests(), api_requests(), OTHER_API.map(
    lambda t: (t[0], t[1], None, b"", t[2]))), min_size=1, max_size=6),
    gaps=st.lists(st.floats(0, 2), min_size=6, max_size=6))
def test_no_api_request_is_a_5xx_or_a_fault(requests, gaps):
    doc = ('<Response><Conference callbackUrl="/cb" action="/doc/0" waitSound="/snd/0">r1'
           '</Conference><Speak>bye</Speak></Response>')
    world = World(answers=[doc.encode()] * 2, docs=[b"<Response><Wait/></Response>", b"", b""],
                  sounds=[b"<Response><Play>/s.wav</Play></Response>", b"", b""],
                  cb_status=[200], arrivals=[0.0, 0.5])
    app = make_app(world)
    statuses: list[tuple] = []

    async def body(h: Harness):
        for i in range(2):
            h.engine.incoming(f"call-{i}", f"u{i}")
        await h.joined("call-0")
        await h.joined("call-1")
        for req, gap in zip(requests, gaps, strict=False):
            method, path, body_, raw = req[:4]
            query = req[4] if len(req) > 4 else b""
            status, reply = await h.api(method, path, body_, raw=raw, query=query)
            statuses.append((status, method, path, body_, raw, reply))
            event(f"API {method} {path.split('/')[-1] or path} -> {status}")
            assert status < 500, (method, path, body_, raw, reply)
            await trio.sleep(gap)
        await check_settled_and_hang_up_all(h, ["call-0", "call-1"])

    h = run_node(body, app=app, **NODE_LIMITS)
    note(repr(statuses))
    check_after(h)


# --- a crowd ---------------------------------------------------------------------------------

CROWD_ATTRS = {k: CONFERENCE_ATTRS[k] for k in (
    "muted", "enterSound", "exitSound", "maxMembers", "timeLimit", "hangupOnStar", "stayAlone",
    "startConferenceOnEnter", "endConferenceOnExit", "waitSound", "record", "callbackUrl",
    "action", "redirect", "digitsMatch", "floorEvent")}


@st.composite
def crowd_document(draw) -> bytes:
    names = draw(st.lists(st.sampled_from(sorted(CROWD_ATTRS)), max_size=5, unique=True))
    attrs = "".join(f' {n}="{esc(draw(CROWD_ATTRS[n]))}"' for n in names)
    room = draw(values("r1", "r1", "r2"))
    before = draw(values("", "<Wait/>", "<Play>/tiny.wav</Play>"))
    after = draw(values("", "<Speak>bye</Speak>", '<Conference>r2</Conference>', "<Hangup/>",
                        '<Redirect>/doc/0</Redirect>'))
    return f"<Response>{before}<Conference{attrs}>{room}</Conference>{after}</Response>".encode()


@fast(30)
@given(answers=st.lists(crowd_document(), min_size=4, max_size=8),
       arrivals=st.lists(st.floats(0, 10), min_size=8, max_size=8),
       hangups=st.dictionaries(st.integers(0, 7), st.floats(1, 60),
                               max_size=8),
       presses=st.lists(st.tuples(st.integers(0, 7), st.floats(0, 40),
                                  st.sampled_from(list("12*#9"))), max_size=8),
       controls=st.lists(st.tuples(st.floats(0, 40), api_requests()), max_size=6))
def test_a_crowd_in_two_rooms_never_faults(answers, arrivals, hangups, presses, controls):
    """Up to 8 callers with plausible documents (random attributes) in the same two rooms,
    pressing keys, hanging up, and an operator using the API meanwhile."""
    n = len(answers)
    world = World(answers, docs=[b"<Response><Conference>r1</Conference></Response>", b"", b""],
                  sounds=[b"<Response><Play>/tiny.wav</Play></Response>",
                          b"<Response><Wait length=\"2\"/></Response>", b""],
                  cb_status=[200, 500, 200], arrivals=arrivals[:n],
                  digits=[(i % n, at, d) for i, at, d in presses],
                  hangups={i % n: at for i, at in hangups.items()})
    app = make_app(world)
    bad: list = []

    async def operator(h: Harness):
        t0 = trio.current_time()
        for at, (method, path, body_, raw) in sorted(controls, key=lambda c: c[0]):
            await trio.sleep_until(t0 + at)
            status, reply = await h.api(method, path, body_, raw=raw)
            if status >= 500:
                bad.append((method, path, body_, raw, status, reply))

    async def everyone(h: Harness):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(operator, h)
            uuids = [f"call-{i}" for i in range(n)]
            t0 = trio.current_time()
            plan = sorted([(at, "call", i, "") for i, at in enumerate(world.arrivals)]
                          + [(world.arrivals[i] + at, "digit", i, d)
                             for i, at, d in world.digits]
                          + [(world.arrivals[i] + at, "bye", i, "")
                             for i, at in world.hangups.items()])
            for at, what, i, d in plan:
                await trio.sleep_until(t0 + at)
                call = h.engine.calls.get(uuids[i])
                if what == "call":
                    h.engine.incoming(uuids[i], f"u{i}")
                elif call is not None and not call.ended:
                    if what == "digit":
                        h.engine.digit(uuids[i], d)
                    else:
                        h.engine.hang_up(uuids[i])
        # all callers hang up at once (a member's action may start a room while its own BYE
        # is queued), and a member moving on to its next room must be in its mixer room
        await check_settled_and_hang_up_all(h, uuids)

    h = run_node(everyone, app=app, **NODE_LIMITS)
    assert bad == []
    check_after(h)


@pytest.mark.parametrize("raw", [b'{"text": "a\\u0000b"}', b'{"text": "a\\ud800b"}'])
def test_api_speech_with_a_nul_or_a_lone_surrogate_is_a_400(raw):
    app = WebApp(answer={"r": "<Response><Conference>r1</Conference></Response>"})
    got = {}

    async def body(h: Harness):
        await h.joined(await h.call("r"))
        got["reply"] = await h.api("POST", "/v1/rooms/r1/speak", raw=raw)
        got["sounds"] = h.node.rooms["r1"].sounds

    h = run_node(body, app=app)
    assert got["sounds"] == 0  # the room's sound place was given back
    assert got["reply"][0] == 400 and not h.node.faults.counts


# --- bugs these tests found, fixed (kept as regression tests) ------------------------------------


def test_an_mp3_recording_stopped_at_once_is_closed_and_reported():
    app = WebApp(answer={"r": '<Response><Conference callbackUrl="/cb">r1</Conference>'
                              '</Response>'})
    got = {}

    async def body(h: Harness):
        await h.joined(await h.call("r"))
        assert (await h.api("POST", "/v1/rooms/r1/record/start", {"format": "mp3"}))[0] == 200
        assert (await h.api("POST", "/v1/rooms/r1/record/stop"))[0] == 200
        await trio.sleep(2)
        got["again"] = (await h.api("POST", "/v1/rooms/r1/record/start", {"format": "mp3"}))[0]
        got["record events"] = [r for r in h.app.events()
                                if r.params.get("ConferenceAction") == "record"]

    h = run_node(body, app=app)
    assert dict(h.node.faults.counts) == {}
    assert got["again"] == 200 and len(got["record events"]) == 1


def test_an_unknown_xml_encoding_is_an_answer_error():
    with pytest.raises(AnswerError):
        parse_document(b'<?xml version="1.0" encoding="bogus"?><Response/>')


def test_a_dead_letters_limit_of_unicode_digits_is_a_400():
    got = {}

    async def body(h: Harness):
        got["reply"] = await h.api("GET", "/v1/dead-letters", query=b"limit=\xb2")

    h = run_node(body)
    assert got["reply"][0] == 400 and not h.node.faults.counts
