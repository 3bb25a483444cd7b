"""Chaos: one customer's mistake costs one call, never the node.

Long on purpose: the cases must run at the same time, on one node, beside the same two
bystanders, for the claim (no blast radius) to mean anything; they share one setup.

A node with a control API and an answer server that hands each dialled user its own hostile
document. Two baresip bystanders (440 / 1000 Hz) talk in room `calm` for the whole test; what
each heard is measured (FFT) before, during and after the chaos. The chaos runs concurrently,
each case its own caller in its own room:

- refusals (503 + a Warning naming what is wrong): a tab in callbackUrl / action
  (redirect=false) / transcriptionUrl / enterSound / exitSound / waitSound, an oversized
  document, not-XML, too many elements, a 100 000-character Speak;
- skipped sounds (the call goes on and reaches its room): an enterSound document with
  `<Wait length="99999999999"/>`, with `<Play>http://[::1/x</Play>`, with a huge Play loop;
  a Play of 50 MB, of an 11-minute WAV, of a URL with a tab, of `http://[::1/x`, of a URL that
  hangs;
- a Redirect loop (bounded, the call ends); a callbackUrl answering 400 (a dead letter); 40
  calls whose callbackUrl hangs for 30 s while a new call is still answered promptly;
- the control API: 40 concurrent plays into one live room (200 or 409 only), junk bodies
  (400 / 404, never 5xx), 200 concurrent `GET /v1/rooms`;

with SIP OPTIONS answered throughout. Afterwards: /health ok, no fault counted, every limit hit
counted, no Traceback in the log, the dead letter visible; SIGTERM exits 0; a new node on the
same data dir stays up and a new pair of calls hear each other.

Failures are collected per case and reported together (one hostile case that kills the node
would otherwise hide what the others do).
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
import traceback
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from support import ports, sipp
from support.audio import timeline, tone_pcm, tone_report, wav_bytes
from support.sipping import options_ok
from support.waiting import wait_until

pytestmark = pytest.mark.e2e

TOKEN = "chaos-token"
A, B = 440.0, 1000.0
LIMITS = {  # limit option -> the case that hits it
    "max_wait_seconds": "enter-wait", "max_play_loops": "enter-loops",
    "max_sound_seconds": "play-long", "max_sound_bytes": "play-big",
    "max_speak_chars": "long-speak", "max_document_bytes": "oversized",
    "max_document_elements": "many-elements", "max_documents_per_call": "redirect-loop",
    "max_room_sounds": "api",
}
TAB = "&#9;"  # a literal tab in an attribute would be normalised to a space by the parser
PROMPT_S = 3.0  # a new call's 200 OK while callbacks hang, at most (0.2-1.1 s measured, once 2.1 s
# on a loaded CI box; a call queued behind the hanging ones would wait their 5 s timeout)
SLOW_CALLS = 40  # more lanes of hanging callbacks than a shared pool of 32 has slots
# To find which case does what, run only some (names as in the failure report; "api" is the
# control API part): CHAOS_CASES=tab-callback,api pytest tests/test_e2e_chaos.py
ONLY = {c.strip() for c in os.environ.get("CHAOS_CASES", "").split(",") if c.strip()}


def selected(case: str) -> bool:
    return not ONLY or case in ONLY


def run_sipp(workdir, target: str, scenario_name: str, rows, **kw) -> sipp.SippResult:
    """sipp.run for runs at the same time as others: a media port block of its own (SIPp also
    binds media+2/+3 for video, which would collide with the next run's block), and a
    ``CASE`` substitution (no placeholder uses it) so each run writes its own scenario file."""
    kw["subs"] = {**kw.get("subs", {}), "CASE": uuid.uuid4().hex}
    return sipp.run(workdir, target, scenario_name, rows,
                    extra=["-mp", str(ports.block(6))], **kw)


def conf(room: str, before: str = "", **attrs: str) -> str:
    a = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return f"<Response>{before}<Conference{a}>{room}</Conference></Response>"


class Problems:
    """Soft assertions: every failed check is kept, the test fails once with all of them."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self._lock = threading.Lock()

    def check(self, ok: object, what: str, first: bool = False) -> bool:
        if not ok:
            with self._lock:
                self.items.insert(0, what) if first else self.items.append(what)
        return bool(ok)

    def guard(self, name: str, fn, *args) -> None:
        """Run a case; an exception in the test's own code is a problem of that case."""
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - reported with the others
            tb = "".join(traceback.format_exception(exc)[-3:])
            self.check(False, f"{name}: raised {type(exc).__name__}: {exc}\n{tb}")


# --- a bare SIP UAC (final response of any code, timing, Warning) ------------------------------


def _parse(data: bytes) -> tuple[str, dict[str, str]]:
    head = data.split(b"\r\n\r\n", 1)[0].decode(errors="replace")
    lines = head.split("\r\n")
    headers: dict[str, str] = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            headers.setdefault(k.strip().lower(), v.strip())
    return lines[0], headers


def raw_call(port: int, user: str, timeout: float = 10.0, hold: float = 0.0) -> dict:
    """INVITE ``user`` on the node over UDP; the final response's status, Warning and latency.
    A non-2xx is ACKed; a 2xx is ACKed, held for ``hold`` s (answering a BYE from the node)
    and then ended with our BYE if the node did not end it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    media = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 0))
        media.bind(("127.0.0.1", 0))
        me, rtp = sock.getsockname()[1], media.getsockname()[1]
        call_id, tag = f"{uuid.uuid4().hex}@127.0.0.1", uuid.uuid4().hex[:10]
        branch = f"z9hG4bK-{uuid.uuid4().hex}"
        sdp = ("v=0\r\no=chaos 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               f"m=audio {rtp} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n")
        frm = f"<sip:chaos@127.0.0.1:{me}>;tag={tag}"
        ruri = f"sip:{user}@127.0.0.1:{port}"

        def via(b: str) -> str:
            return f"SIP/2.0/UDP 127.0.0.1:{me};branch={b};rport"

        def send(first: str, hdrs: list[tuple[str, str]], body: str = "") -> None:
            text = first + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs)
            text += f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
            sock.sendto(text.encode(), ("127.0.0.1", port))

        def request(method: str, uri: str, b: str, to: str, cseq: int, body: str = "",
                    extra: list[tuple[str, str]] | None = None) -> None:
            send(f"{method} {uri} SIP/2.0",
                 [("Via", via(b)), ("From", frm), ("To", to), ("Call-ID", call_id),
                  ("CSeq", f"{cseq} {method}"), ("Max-Forwards", "70"),
                  ("Contact", f"<sip:chaos@127.0.0.1:{me}>"), *(extra or [])], body)

        def answer_request(first: str, hdrs: dict[str, str]) -> None:
            send("SIP/2.0 200 OK", [("Via", hdrs.get("via", "")), ("From", hdrs.get("from", "")),
                                    ("To", hdrs.get("to", "")), ("Call-ID", call_id),
                                    ("CSeq", hdrs.get("cseq", ""))])

        t0 = time.monotonic()
        invite = lambda: request("INVITE", ruri, branch, f"<{ruri}>", 1, sdp,  # noqa: E731
                                 [("Content-Type", "application/sdp")])
        invite()
        retx, provisional, final = t0 + 0.5, False, None
        deadline = t0 + timeout
        while final is None and time.monotonic() < deadline:
            sock.settimeout(max(0.05, min(retx, deadline) - time.monotonic()))
            try:
                data = sock.recv(65535)
            except TimeoutError:
                if not provisional and time.monotonic() >= retx:
                    invite()
                    retx = time.monotonic() + 0.5
                continue
            first, hdrs = _parse(data)
            if hdrs.get("call-id") != call_id:
                continue
            if not first.startswith("SIP/2.0 "):
                answer_request(first, hdrs)
                continue
            code = int(first.split()[1])
            if "INVITE" not in hdrs.get("cseq", ""):
                continue
            if code < 200:
                provisional = True
            else:
                final = (code, hdrs)
        out = {"status": None, "warning": "", "latency": None, "ended_by_node": False}
        if final is None:
            return out
        code, hdrs = final
        out.update(status=code, warning=hdrs.get("warning", ""), latency=time.monotonic() - t0)
        to = hdrs.get("to", f"<{ruri}>")
        if code >= 300:
            request("ACK", ruri, branch, to, 1)
            return out
        contact = re.search(r"<([^>]+)>", hdrs.get("contact", "")) or None
        target = contact.group(1) if contact else ruri
        request("ACK", target, f"z9hG4bK-{uuid.uuid4().hex}", to, 1)
        end = time.monotonic() + hold
        while time.monotonic() < end:
            sock.settimeout(max(0.05, end - time.monotonic()))
            try:
                first, h = _parse(sock.recv(65535))
            except TimeoutError:
                break
            if h.get("call-id") == call_id and first.startswith("BYE "):
                answer_request(first, h)
                out["ended_by_node"] = True
                return out
        request("BYE", target, f"z9hG4bK-{uuid.uuid4().hex}", to, 2)
        bye_deadline = time.monotonic() + 3
        while time.monotonic() < bye_deadline:
            sock.settimeout(max(0.05, bye_deadline - time.monotonic()))
            try:
                first, h = _parse(sock.recv(65535))
            except TimeoutError:
                break
            if h.get("call-id") == call_id and first.startswith("BYE "):
                answer_request(first, h)
                out["ended_by_node"] = True
                break
            if h.get("call-id") == call_id and "BYE" in h.get("cseq", ""):
                break
        return out
    finally:
        sock.close()
        media.close()


# --- watchers that run for the whole chaos -----------------------------------------------------


class Watch:
    """SIP OPTIONS every 0.5 s (a probe fails only if three 1-s tries go unanswered) and
    ``GET /v1/rooms`` every 0.25 s (which rooms were seen live, when, and any 5xx)."""

    def __init__(self, node, api: httpx.Client):
        self.node, self.api = node, api
        self.stop = threading.Event()
        self.probes: list[tuple[float, bool]] = []
        self.rooms_seen: dict[str, float] = {}
        self.rooms_errors: list[str] = []
        self._threads = [threading.Thread(target=self._options, daemon=True),
                         threading.Thread(target=self._rooms, daemon=True)]

    def __enter__(self) -> Watch:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(10)

    def _options(self) -> None:
        while not self.stop.wait(0.5):
            ok = any(options_ok("127.0.0.1", self.node.sip_port, 1.0) for _ in range(3))
            self.probes.append((time.monotonic(), ok))

    def _rooms(self) -> None:
        while not self.stop.wait(0.25):
            try:
                r = self.api.get("/v1/rooms", timeout=5)
            except httpx.HTTPError as exc:
                self.rooms_errors.append(f"GET /v1/rooms: {type(exc).__name__}")
                continue
            if r.status_code != 200:
                self.rooms_errors.append(f"GET /v1/rooms: HTTP {r.status_code}")
                continue
            for room in r.json():
                if room.get("members"):
                    self.rooms_seen.setdefault(room["name"], time.monotonic())


# --- the test ----------------------------------------------------------------------------------


def test_hostile_customers_cost_their_own_calls_never_the_node(
        answer_server, node_factory, uas, tmp_path):
    srv = answer_server
    p = Problems()
    base = srv.url("")
    silence = tmp_path / "silence.ulaw"
    silence.write_bytes(b"\xff" * 16000)  # 2 s of PCMU silence, looped by SIPp

    # sounds and receivers
    clip3 = srv.route("/clip3.wav", wav_bytes(tone_pcm(600.0, 3.0, 16000), 16000),
                      content_type="audio/wav")
    tick = srv.route("/tick.wav", wav_bytes(tone_pcm(600.0, 0.1, 16000), 16000),
                     content_type="audio/wav")
    big = srv.route("/big.wav", b"\0" * (50 * 1024 * 1024), content_type="audio/wav")
    long_wav = srv.route("/long.wav", wav_bytes(np.zeros(660 * 8000, np.int16), 8000),
                         content_type="audio/wav")  # 11 minutes (10.6 MB)
    hang_wav = srv.route("/hang.wav", b"", delay=60.0, content_type="audio/wav")
    cb400 = srv.route("/cb400", "no", status=400, content_type="text/plain")
    cb_hang = srv.route("/cb-hang", "ok", delay=30.0, content_type="text/plain")
    srv.route("/act", "<Response/>")
    snd_wait = srv.route("/snd/wait.xml", '<Response><Wait length="99999999999"/></Response>')
    snd_v6 = srv.route("/snd/v6.xml", "<Response><Play>http://[::1/x</Play></Response>")
    snd_loops = srv.route("/snd/loops.xml",
                          f'<Response><Play loop="1000000000">{tick}</Play></Response>')
    loop_doc = f"<Response><Redirect>{base}/loop</Redirect></Response>"
    srv.route("/loop", loop_doc)

    refusals = {  # user -> (document, what the Warning must name, or None)
        "tab-callback": (conf("c-tab-callback", callbackUrl=f"{base}/cb{TAB}x"),
                         "Conference.callbackUrl"),
        "tab-action": (conf("c-tab-action", action=f"{base}/act{TAB}x", redirect="false"),
                       "Conference.action"),
        "tab-transcription": (conf("c-tab-transcription", record="true",
                                   transcriptionUrl=f"{base}/tr{TAB}x"),
                              "Conference.transcriptionUrl"),
        "tab-entersound": (conf("c-tab-enter", enterSound=f"{base}/snd{TAB}x.xml"),
                           "Conference.enterSound"),
        "tab-exitsound": (conf("c-tab-exit", exitSound=f"{base}/snd{TAB}x.xml"),
                          "Conference.exitSound"),
        "tab-waitsound": (conf("c-tab-wait", waitSound=f"{base}/snd{TAB}x.xml"),
                          "Conference.waitSound"),
        "oversized": (conf("c-oversized").replace(
            "</Response>", "<!--" + "x" * (300 * 1024) + "--></Response>"), None),
        "not-xml": ("this is not XML <<< &&& {", None),
        "many-elements": (conf("c-many", before='<Wait length="1"/>' * 150), None),
        "long-speak": (conf("c-speak", before="<Speak>" + "word " * 20000 + "</Speak>"),
                       "Speak"),
    }
    skipped = {  # user -> (document, room); the call must reach its room and stay up
        "enter-wait": (conf("c-enter-wait", enterSound=snd_wait), "c-enter-wait"),
        "enter-v6": (conf("c-enter-v6", enterSound=snd_v6), "c-enter-v6"),
        "enter-loops": (conf("c-enter-loops", enterSound=snd_loops), "c-enter-loops"),
        "play-big": (conf("c-play-big", before=f"<Play>{big}</Play>"), "c-play-big"),
        "play-long": (conf("c-play-long", before=f"<Play>{long_wav}</Play>"), "c-play-long"),
        "play-tab": (conf("c-play-tab", before=f"<Play>{base}/a\tb.wav</Play>"), "c-play-tab"),
        "play-v6": (conf("c-play-v6", before="<Play>http://[::1/x</Play>"), "c-play-v6"),
        "dead-callback": (conf("c-dead", callbackUrl=cb400), "c-dead"),
    }
    docs = {"calm": conf("calm"), "calm2": conf("calm2"), "prompt": conf("c-prompt"),
            "play-room": conf("c-play"), "play-hang": conf("c-play-hang",
                                                           before=f"<Play>{hang_wav}</Play>"),
            "loop": loop_doc}
    docs.update({u: d for u, (d, _) in refusals.items()})
    docs.update({u: d for u, (d, _) in skipped.items()})
    docs.update({f"slowcb-{i}": conf(f"c-slowcb-{i}", callbackUrl=cb_hang)
                 for i in range(SLOW_CALLS)})
    url = srv.per_user("/answer", docs)
    srv.httpd.socket.listen(256)  # a burst of 40 connections must not wait for SYN retries

    data_dir = tmp_path / "node-data"
    node = node_factory(url, data_dir=data_dir, extra=["--api-token", TOKEN])
    auth = {"Authorization": f"Bearer {TOKEN}"}
    api = httpx.Client(base_url=node.http_url, headers=auth, timeout=20,
                       limits=httpx.Limits(max_connections=100))
    target = f"127.0.0.1:{node.sip_port}"

    # bystanders, up for the whole test
    alice = uas("alice", tone_hz=A).dial(node.uri("calm"), 150)
    assert alice.wait_for("Call established", 10), alice.output()[-2000:]
    t_alice = time.monotonic()
    bob = uas("bob", tone_hz=B).dial(node.uri("calm"), 150)
    assert bob.wait_for("Call established", 10), bob.output()[-2000:]
    t_bob = time.monotonic()
    time.sleep(4.0)  # the "before" window

    def alive(name: str) -> bool:
        return p.check(node.alive(), f"{name}: not tried, the node had died")

    def detail(res: sipp.SippResult | None) -> str:
        if not node.alive():
            return " (the node is not running)"
        return "\n" + (res.output[-1500:] if res is not None else "(SIPp did not finish)")

    # --- the cases -----------------------------------------------------------------------------

    def refusal(user: str) -> None:
        if not alive(user):
            return
        _, names = refusals[user]
        res = run_sipp(tmp_path, target, "uac_expect_reject.xml", [[user]], calls=1,
                       subs={"PT": 0, "RTPMAP": "PCMU/8000", "RESPONSE": 503},
                       timeout=15)
        m = re.search(r"WARNING-HEADER (.*)", res.output)
        warning = m.group(1) if m else ""
        p.check(res.successful == 1 and m,
                f"{user}: expected 503 with a Warning; SIPp: {res.successful} ok, "
                f"{res.failed} failed{detail(res)}")
        if names and m:
            p.check(names.lower() in warning.lower(),
                    f"{user}: Warning does not name {names}: {warning!r}")

    # A skipped sound must not hold its call up until the sound fetch timeout (10 s): the room
    # is live well before it, whatever the chaos costs in CPU (t0 includes SIPp's start-up).
    def skipped_sound(user: str, room: str, hold_ms: int = 6000, within: float = 8.0) -> None:
        if not alive(user):
            return
        t0 = time.monotonic()
        res = run_sipp(tmp_path, target, "uac_pcmu.xml", [[user]], calls=1,
                       subs={"RTPFILE": silence, "HOLD_MS": hold_ms},
                       timeout=hold_ms / 1000 + 15)
        p.check(res.successful == 1,
                f"{user}: the call did not go on (answered, held {hold_ms} ms, BYE 200): "
                f"{res.successful} ok, {res.failed} failed{detail(res)}")
        seen = watch.rooms_seen.get(room)
        p.check(seen is not None and seen - t0 <= within,
                f"{user}: room {room} " + ("never seen live" if seen is None
                                           else f"live only {seen - t0:.1f} s after the INVITE"))

    results: dict[str, object] = {}

    def slow_callbacks() -> None:
        if not alive("slow-callback"):
            return
        rows = [[f"slowcb-{i}"] for i in range(SLOW_CALLS)]
        holder = {}
        t = threading.Thread(target=lambda: holder.setdefault("res", run_sipp(
            tmp_path, target, "uac_pcmu.xml", rows, calls=SLOW_CALLS,
            subs={"RTPFILE": silence, "HOLD_MS": 1500}, concurrent=SLOW_CALLS,
            rate=SLOW_CALLS, timeout=25)))
        t.start()
        # Once the callbacks hang (as many as the node allows at once, with no new one for
        # 0.5 s: the burst of INVITEs is in, so the new call measures hanging callbacks, not
        # a queue of 40 call set-ups on two cores; or no new one for 1 s), a new call.
        last = {"n": 0, "at": time.monotonic()}

        def settled() -> bool:
            n = len(srv.requests_to("/cb-hang"))
            if n != last["n"]:
                last.update(n=n, at=time.monotonic())
            quiet = time.monotonic() - last["at"]
            return (n >= 32 and quiet >= 0.5) or (n > 0 and quiet >= 1.0)

        wait_until(settled, 8, step=0.05)
        results["hanging"] = hanging = len(srv.requests_to("/cb-hang"))
        r = raw_call(node.sip_port, "prompt", timeout=10, hold=0.5)
        results["prompt"] = r
        p.check(r["status"] == 200 and r["latency"] <= PROMPT_S,
                f"slow-callback: with {results['hanging']} callback requests hanging, a new call "
                f"got {r['status']} after {r['latency'] and round(r['latency'], 2)} s "
                f"(want 200 within {PROMPT_S} s)")
        t.join(40)
        res = holder.get("res")
        p.check(res is not None and res.successful == SLOW_CALLS,
                f"slow-callback: {SLOW_CALLS} calls with a hanging callbackUrl: "
                f"{res and res.successful} went through{detail(res)}")
        p.check(hanging, "slow-callback: no callback request arrived")

    def redirect_loop() -> None:
        if not alive("redirect-loop"):
            return
        r = raw_call(node.sip_port, "loop", timeout=20, hold=5)
        n = len(srv.requests_to("/loop"))
        results["loop"] = (r, n)
        ended = (r["status"] is not None and r["status"] >= 300) or r["ended_by_node"]
        p.check(ended, f"redirect-loop: the call did not end: {r}")
        p.check(1 <= n <= 20, f"redirect-loop: /loop fetched {n} times (want 1-20)")

    def control_api() -> None:
        if not alive("api"):
            return
        holder = {}
        t = threading.Thread(target=lambda: holder.setdefault("res", run_sipp(
            tmp_path, target, "uac_pcmu.xml", [["play-room"]], calls=1,
            subs={"RTPFILE": silence, "HOLD_MS": 12000}, timeout=30)))
        t.start()
        if not p.check(wait_until(lambda: "c-play" in watch.rooms_seen, 6),
                       "api: room c-play never live"):
            t.join(40)
            return
        junk_api()

        def play(_):
            try:
                r = api.post("/v1/rooms/c-play/play", json={"url": clip3})
            except httpx.HTTPError as exc:
                return f"{type(exc).__name__}", None
            try:
                body = r.json()
            except ValueError:
                body = None
            return r.status_code, body

        with ThreadPoolExecutor(40) as ex:
            got = list(ex.map(play, range(40)))
        codes = Counter(c for c, _ in got)
        results["flood"] = dict(codes)
        p.check(set(codes) <= {200, 409} and codes[409] >= 1 and codes[200] >= 1,
                f"play-flood: 40 concurrent plays answered {dict(codes)} (want 200 and 409 only, "
                "at least one of each)")
        bad = [b for c, b in got if c == 409 and not (isinstance(b, dict) and b.get("ok") is False
                                                      and b.get("error"))]
        p.check(not bad, f"play-flood: 409 bodies not {{ok: false, error}}: {bad[:3]}")
        t.join(40)
        res = holder.get("res")
        p.check(res is not None and res.successful == 1,
                f"play-flood: the member of c-play lost its call{detail(res)}")

    def junk_api() -> None:
        cases = [
            ("POST", "/v1/rooms/c-play/play", {"content": b"not json {"}, {400}),
            ("POST", "/v1/rooms/c-play/play", {"content": b"\xff\xfe\x00"}, {400}),
            ("POST", "/v1/rooms/c-play/play", {"content": b"[1]"}, {400}),
            ("POST", "/v1/rooms/c-play/play", {"json": {}}, {400}),
            ("POST", "/v1/rooms/c-play/play", {"json": {"url": 5}}, {400}),
            ("POST", "/v1/rooms/c-play/play", {"json": {"url": None}}, {400}),
            ("POST", "/v1/rooms/c-play/play", {"json": {"url": ["a"]}}, {400}),
            ("POST", "/v1/rooms/c-play/play", {"json": {"url": f"{base}/a\tb.wav"}}, {400}),
            ("POST", "/v1/rooms/c-play/play", {"json": {"url": "http://[::1/x"}}, {400}),
            ("POST", "/v1/rooms/c-play/play", {"content": b'{"url": "' + b"x" * 100_000 + b'"}'},
             {400, 413}),
            ("POST", "/v1/rooms/c-play/speak", {"json": {"text": "word " * 1000}}, {400}),
            ("POST", "/v1/rooms/c-play/record/start", {"json": {"format": "ogg"}}, {400}),
            ("POST", "/v1/rooms/no-such-room/play", {"json": {"url": clip3}}, {404}),
            ("POST", "/v1/rooms/c-play/members/99/mute", {}, {404}),
            ("GET", "/v1/rooms/%00%ff", {}, {404}),
        ]
        for method, path, kw, want in cases:
            try:
                r = api.request(method, path, **kw)
            except httpx.HTTPError as exc:
                p.check(False, f"junk API {method} {path} {str(kw)[:60]}: {exc!r}")
                continue
            try:
                r.json()
                is_json = True
            except ValueError:
                is_json = False
            p.check(r.status_code in want and is_json,
                    f"junk API {method} {path} {str(kw)[:60]}: HTTP {r.status_code} "
                    f"{r.text[:120]!r} (want {sorted(want)} JSON)")

        def rooms(_):
            try:
                r = httpx.get(f"{node.http_url}/v1/rooms", headers=auth, timeout=30)
                return r.status_code if isinstance(r.json(), list) else "not a list"
            except (httpx.HTTPError, ValueError) as exc:
                return type(exc).__name__

        t0 = time.monotonic()
        with ThreadPoolExecutor(50) as ex:
            got = Counter(ex.map(rooms, range(200)))
        results["burst"] = (dict(got), time.monotonic() - t0)
        p.check(got == {200: 200}, f"200 concurrent GET /v1/rooms: {dict(got)}")

    # --- run the chaos -------------------------------------------------------------------------

    cases = [("slow-callback", slow_callbacks, ()),
             ("play-hang", skipped_sound, ("play-hang", "c-play-hang", 15000, 14.0)),
             ("redirect-loop", redirect_loop, ()), ("api", control_api, ())]
    cases += [(user, refusal, (user,)) for user in refusals]
    cases += [(user, skipped_sound, (user, room)) for user, (_, room) in skipped.items()]
    cases = [c for c in cases if selected(c[0])]
    t_chaos = time.monotonic()
    with Watch(node, api) as watch:
        with ThreadPoolExecutor(len(cases)) as ex:
            jobs = []
            for name, fn, args in cases:
                jobs.append(ex.submit(p.guard, name, fn, *args))
                time.sleep(0.05)
            for j in jobs:
                j.result(timeout=90)
    t_calm = time.monotonic()
    probes = watch.probes
    failed_probes = [round(t - t_chaos, 1) for t, ok in probes if not ok]
    p.check(probes and not failed_probes,
            f"SIP OPTIONS unanswered during the chaos at t={failed_probes} s "
            f"({len(probes)} probes)")
    p.check(not watch.rooms_errors, f"GET /v1/rooms during the chaos: {watch.rooms_errors[:5]}")
    time.sleep(4.0)  # the "after" window

    # --- after the chaos -----------------------------------------------------------------------

    metrics: dict[str, float] = {}
    if p.check(node.alive(), "the node died during the chaos:\n" + _tracebacks(node.log()),
               first=True):
        health = httpx.get(f"{node.http_url}/health", timeout=10)
        p.check(health.status_code == 200 and health.json() == {"status": "ok"},
                f"/health after the chaos: {health.status_code} {health.text[:200]}")
        text = httpx.get(f"{node.http_url}/metrics", timeout=10).text
        metrics = node.metrics()
        p.check(re.search(r"^# TYPE sipconf_faults_total counter", text, re.M),
                "/metrics declares no sipconf_faults_total")
        faults = {k: v for k, v in metrics.items() if k.startswith("sipconf_faults_total") and v}
        p.check(not faults, f"faults counted: {faults}")
        for limit in (lim for lim, case in LIMITS.items() if selected(case)):
            v = metrics.get(f'sipconf_limits_hit_total{{limit="{limit}"}}', 0)
            p.check(v >= 1, f"limit {limit} not counted in sipconf_limits_hit_total")
    if node.alive() and selected("dead-callback"):
        p.check(metrics.get("sipconf_webhook_dead_letters", 0) >= 1,
                f"sipconf_webhook_dead_letters = {metrics.get('sipconf_webhook_dead_letters')}")
        p.check(httpx.get(f"{node.http_url}/v1/dead-letters", timeout=10).status_code == 401,
                "GET /v1/dead-letters without the bearer token is not 401")
        r = api.get("/v1/dead-letters")
        letters = (r.json().get("dead_letters") if r.status_code == 200
                   and isinstance(r.json(), dict) else None)
        mine = [d for d in letters or [] if d.get("url") == cb400]
        p.check(mine, f"no dead letter for {cb400}: HTTP {r.status_code} {r.text[:300]}")
        fields = {"id", "key", "url", "method", "params", "reason", "attempts", "created",
                  "failed_at"}
        if mine:
            d = mine[0]
            p.check(fields <= set(d) and "400" in str(d.get("reason"))
                    and d["params"].get("ConferenceName") == "c-dead" and d["attempts"] >= 1,
                    f"dead letter for {cb400} incomplete: {d}")
    log = node.log()
    if node.alive():  # (a dead node's traceback is in the first problem already)
        p.check("Traceback" not in log, "Traceback in the node log:\n" + _tracebacks(log))
        for user, (_, names) in refusals.items():
            if selected(user) and names and names.startswith("Conference."):
                lines = [ln for ln in log.splitlines() if names in ln]
                p.check(len(lines) == 1, f"{user}: {len(lines)} log lines name {names} "
                                         f"(want one): {lines[:3]}")

    # --- the bystanders heard each other before, during and after --------------------------------

    alice.stop()
    bob.stop()
    t_end = time.monotonic()
    windows = [("before", t_bob + 1.0, t_chaos - 0.2)]
    n_during = max(1, round((t_calm - t_chaos) / 4))
    step = (t_calm - t_chaos) / n_during
    windows += [(f"during[{i}]", t_chaos + i * step, t_chaos + (i + 1) * step)
                for i in range(n_during)]
    windows.append(("after", t_calm + 0.5, t_end - 0.5))
    snr_report: dict[str, float] = {}
    for ua, other, t_up in ((alice, B, t_alice), (bob, A, t_bob)):
        levels, rest, fs = timeline(ua.heard(), [A, B])
        j = [A, B].index(other)
        weak = []
        for name, t1, t2 in windows:
            i1, i2 = int((t1 - t_up) / fs), int((t2 - t_up) / fs)
            seg, seg_rest = levels[i1:i2, j], rest[i1:i2]
            snr = float(np.median(seg) - np.median(seg_rest)) if len(seg) else float("nan")
            snr_report[f"{ua.name} {name}"] = round(snr, 1)
            if not snr >= 20:
                weak.append(f"{name} ({t1 - t_chaos:.1f}..{t2 - t_chaos:.1f} s): "
                            + (f"{snr:.1f} dB" if len(seg) else "nothing recorded"))
        p.check(not weak, f"{ua.name} does not hear the other (>= 20 dB over the rest of the "
                          f"band; times from chaos start) in: {'; '.join(weak)}")

    # --- SIGTERM, then a new node on the same data dir --------------------------------------------

    if node.alive():
        rc, took = node.terminate()
        p.check(rc == 0 and took < 5, f"SIGTERM: exit {rc} after {took:.1f} s")
    t_start = time.monotonic()
    try:
        node2 = node_factory(url, data_dir=data_dir, extra=["--api-token", TOKEN])
    except RuntimeError as exc:
        p.check(False, f"restart on the same data dir failed: {exc}")
        node2 = None
    if node2 is not None:
        dave = uas("dave", tone_hz=A).dial(node2.uri("calm2"), 30)
        erin = uas("erin", tone_hz=B).dial(node2.uri("calm2"), 30)
        both = dave.wait_for("Call established", 10) and erin.wait_for("Call established", 10)
        p.check(both, f"restart: the new pair did not get in\n{dave.output()[-1000:]}")
        t_pair = time.monotonic()
        down = []
        while time.monotonic() < max(t_start + 6.0, t_pair + 5.0):
            if not (node2.alive() and node2.options_ok(1.0)):
                down.append(round(time.monotonic() - t_start, 1))
            time.sleep(0.5)
        p.check(node2.alive() and not down,
                f"restarted node not up/answering OPTIONS at t={down} s\n"
                + _tracebacks(node2.log()))
        if node2.alive():
            h = httpx.get(f"{node2.http_url}/health", timeout=10)
            p.check(h.status_code == 200 and h.json() == {"status": "ok"},
                    f"/health after restart: {h.status_code} {h.text[:200]}")
            faults2 = {k: v for k, v in node2.metrics().items()
                       if k.startswith("sipconf_faults_total") and v}
            p.check(not faults2, f"faults counted after restart: {faults2}")
        dave.stop()
        erin.stop()
        if both:
            rd = tone_report(dave.heard(), [A, B])
            re_ = tone_report(erin.heard(), [A, B])
            snr_report["restart dave hears erin"] = round(rd[B] - rd["rest"], 1)
            snr_report["restart erin hears dave"] = round(re_[A] - re_["rest"], 1)
            p.check(rd[B] - rd["rest"] >= 20 and re_[A] - re_["rest"] >= 20,
                    f"restart: the new pair do not hear each other: dave {rd}, erin {re_}")
        p.check("Traceback" not in node2.log(),
                "Traceback in the restarted node's log:\n" + _tracebacks(node2.log()))

    prompt = results.get("prompt") or {}
    print(f"FIGURE chaos: {t_calm - t_chaos:.1f} s of chaos; bystander SNR dB {snr_report}; "
          f"new call answered in {prompt.get('latency') and round(prompt['latency'], 2)} s "
          f"with {results.get('hanging')} callbacks hanging; plays {results.get('flood')}; "
          f"rooms burst {results.get('burst')}; redirect loop {results.get('loop')}")
    assert not p.items, f"{len(p.items)} problem(s):\n- " + "\n- ".join(p.items)


def _tracebacks(log: str, limit: int = 4000) -> str:
    """The node log's tracebacks (or its tail), for failure messages."""
    at = log.find("Traceback")
    return (log[max(0, at - 300):] if at >= 0 else log)[-limit:] if log else "(empty log)"
