"""The webhook worker: signatures, backoff, the SQLite spool, and delivery to a real HTTP
receiver that is down for a while (ordering per call, retries, nothing lost)."""

from __future__ import annotations

import sqlite3
import time

import httpx
import pytest
import trio
from support.answer_server import AnswerServer

from sipconf.webhooks import (
    FetchError,
    Spool,
    WebhookWorker,
    backoff,
    conference_params,
    sign_headers,
    signature,
    verify,
)

TOKEN = "s3cret"


def test_signature_covers_url_params_time_and_nonce():
    params = {"b": "2", "a": "1 & 3"}
    h = sign_headers(TOKEN, "http://x/cb", params, now=1000)
    assert verify(TOKEN, "http://x/cb", params, h, now=1010)
    assert verify(TOKEN, "http://x/cb", dict(reversed(params.items())), h, now=1010)  # order
    assert not verify(TOKEN, "http://x/cb", {**params, "a": "1"}, h, now=1010)
    assert not verify(TOKEN, "http://x/other", params, h, now=1010)
    assert not verify("other", "http://x/cb", params, h, now=1010)
    assert not verify(TOKEN, "http://x/cb", params, h, now=1000 + 301)  # stale
    forged = dict(h, **{"X-Sipconf-Nonce": "00"})
    assert not verify(TOKEN, "http://x/cb", params, forged, now=1010)
    assert not verify(TOKEN, "http://x/cb", params, {}, now=1010)
    assert sign_headers(None, "http://x/cb", params) == {}
    # the documented construction, spelled out
    import hashlib
    import hmac
    msg = "1000\nabc\nhttp://x/cb\na=1+%26+3&b=2"
    assert signature(TOKEN, "http://x/cb", params, "1000", "abc") == hmac.new(
        TOKEN.encode(), msg.encode(), hashlib.sha256).hexdigest()


def test_backoff_doubles_up_to_the_cap():
    assert [backoff(n, 1.0, 30.0) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_conference_params_are_the_reference_list():
    p = conference_params("digits", "room", "ru", "3", "cu", ConferenceDigitsMatch="12")
    assert p == {"ConferenceAction": "digits", "ConferenceName": "room",
                 "ConferenceUUID": "ru", "ConferenceMemberID": "3", "CallUUID": "cu",
                 "ConferenceDigitsMatch": "12"}


def test_spool_survives_reopen_in_wal_mode(tmp_path):
    path = tmp_path / "spool.sqlite"
    sp = Spool(path)
    a = sp.add("call-1", "http://x/a", "POST", {"k": "1"}, 10.0)
    b = sp.add("call-1", "http://x/b", "GET", {"k": "2"}, 11.0)
    sp.add("call-2", "http://x/c", "POST", {}, 12.0)
    b.attempts = 3
    sp.attempted(b)
    sp.remove(a)
    # no close(): as after a crash
    again = Spool(path).pending()
    assert [(e.key, e.url, e.method, e.params, e.attempts) for e in again] == [
        ("call-1", "http://x/b", "GET", {"k": "2"}, 3), ("call-2", "http://x/c", "POST", {}, 0)]
    mode = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


@pytest.fixture
def receiver():
    server = AnswerServer().start()
    yield server
    server.stop()


def _run_worker(spool, fn, **kw):
    return trio.run(_worker_main, spool, fn, kw)


async def _worker_main(spool, fn, kw):
    async with httpx.AsyncClient() as http:
        worker = WebhookWorker(http, spool, TOKEN, timeout=2.0, **kw)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.run)
            await fn(worker)
            nursery.cancel_scope.cancel()
    return worker


def test_outage_delivers_everything_in_order_per_call(receiver, tmp_path):
    """The receiver answers 503 for 3 s: every event arrives afterwards, each call's in the
    order submitted, signed; a 404 is not retried; calls do not wait for each other."""
    url = receiver.route("/cb", "ok", content_type="text/plain")
    receiver.routes["/cb"].fail_until = time.monotonic() + 3.0
    gone = receiver.route("/gone", status=404)
    spool = Spool(tmp_path / "s.sqlite")

    async def scenario(worker):
        for i in range(5):
            for call in ("A", "B"):
                worker.submit(call, url, "POST", {"CallUUID": call, "seq": str(i)})
        worker.submit("C", gone, "GET", {"CallUUID": "C"})
        with trio.fail_after(20):
            for call in ("A", "B", "C"):
                await worker.drained(call)

    worker = _run_worker(spool, scenario, backoff_base=0.2, backoff_cap=1.0)
    got = receiver.requests_to("/cb", delivered=True)
    for call in ("A", "B"):
        seqs = [r.params["seq"] for r in got if r.params["CallUUID"] == call]
        assert seqs == ["0", "1", "2", "3", "4"]
    assert all(verify(TOKEN, url, r.params, r.headers) for r in got)
    assert min(r.at for r in got) >= receiver.routes["/cb"].fail_until
    assert len(receiver.requests_to("/gone")) == 1  # 404: refused, not retried
    assert worker.delivered == 10 and worker.failed == 1 and worker.retries > 0
    assert spool.pending() == []


def test_restart_resumes_the_spool(receiver, tmp_path):
    """Events still undelivered when the worker stops are delivered by the next one."""
    url = receiver.route("/cb", "ok", content_type="text/plain")
    receiver.routes["/cb"].fail_until = time.monotonic() + 3600
    path = tmp_path / "s.sqlite"

    async def submit_then_stop(worker):
        for i in range(3):
            worker.submit("A", url, "POST", {"seq": str(i)})
        await trio.sleep(0.5)

    spool = Spool(path)
    _run_worker(spool, submit_then_stop, backoff_base=5.0)
    spool.close()
    assert receiver.requests_to("/cb", delivered=True) == []
    receiver.routes["/cb"].fail_until = 0.0

    spool = Spool(path)
    assert len(spool.pending()) == 3

    async def wait(worker):
        with trio.fail_after(10):
            while spool.pending():
                await trio.sleep(0.05)

    _run_worker(spool, wait)
    assert [r.params["seq"] for r in receiver.requests_to("/cb", delivered=True)] == [
        "0", "1", "2"]


def test_expired_events_are_dropped(receiver, tmp_path):
    url = receiver.route("/cb", "ok")
    spool = Spool(tmp_path / "s.sqlite")
    spool.add("A", url, "POST", {"old": "1"}, time.time() - 100)

    async def wait(worker):
        await worker.drained("A")

    worker = _run_worker(spool, wait, ttl=50)
    assert receiver.requests_to("/cb") == [] and worker.failed == 1
    assert spool.pending() == []


def test_fetch_is_signed_and_reports_why(receiver, tmp_path):
    doc = receiver.route("/answer", "<Response/>")
    bad = receiver.route("/bad", status=500)
    spool = Spool(tmp_path / "s.sqlite")
    out = {}

    async def fetch(worker):
        out["body"] = await worker.fetch(doc, "POST", {"CallUUID": "x"})
        with pytest.raises(FetchError) as exc:
            await worker.fetch(bad, "GET", {})
        out["err"] = exc.value

    _run_worker(spool, fetch)
    assert out["body"] == b"<Response/>"
    assert out["err"].reason == "HTTP 500" and out["err"].retry
    req = receiver.requests_to("/answer")[0]
    assert verify(TOKEN, doc, req.params, req.headers)


# --- nothing poisons the spool -----------------------------------------------------------------


@pytest.mark.parametrize("url, why", [
    ("http://x/cb\there", "control character"),
    ("http://[::1/x", "not a valid URL"),
    ("http://127.0.0.1:99999/cb", "not a valid URL"),
])
def test_an_event_no_retry_can_send_is_a_dead_letter(receiver, tmp_path, url, why):
    """An event whose URL can never be requested (it came from a careless document, or from an
    old spool) goes to the dead letters with its reason; the call's next event still goes."""
    good = receiver.route("/cb", "ok")
    spool = Spool(tmp_path / "s.sqlite")

    async def scenario(worker):
        worker.submit("A", url, "POST", {"seq": "0"})
        worker.submit("A", good, "POST", {"seq": "1"})
        with trio.fail_after(10):
            await worker.drained("A")

    worker = _run_worker(spool, scenario)
    assert [r.params["seq"] for r in receiver.requests_to("/cb", delivered=True)] == ["1"]
    dead = spool.dead_letters()
    assert len(dead) == 1 and dead[0]["url"] == url and why in dead[0]["reason"]
    assert dead[0]["params"] == {"seq": "0"} and dead[0]["key"] == "A"
    assert worker.dead == 1 and worker.faults.counts == {} and spool.pending() == []
    assert spool.forget_dead(dead[0]["id"]) and spool.dead_count() == 0


def test_a_4xx_and_an_expired_event_are_dead_letters_with_their_reason(receiver, tmp_path):
    gone = receiver.route("/gone", status=400)
    spool = Spool(tmp_path / "s.sqlite")
    spool.add("B", receiver.url("/late"), "POST", {}, time.time() - 100)

    async def scenario(worker):
        worker.submit("A", gone, "POST", {})
        with trio.fail_after(10):
            await worker.drained("A")
            await worker.drained("B")

    _run_worker(spool, scenario, ttl=50)
    reasons = sorted(d["reason"] for d in spool.dead_letters())
    assert reasons == ["HTTP 400", "expired after 0 attempt(s)"]


def test_a_poisoned_spool_is_resumed_without_a_crash(receiver, tmp_path):
    """Rows written by an older node with a bad URL or unreadable params: the node starts, they
    are dead letters, the good row is delivered."""
    path = tmp_path / "s.sqlite"
    good = receiver.route("/cb", "ok")
    spool = Spool(path)
    spool.add("A", "http://x/\tcb", "POST", {"a": "1"}, time.time())
    spool.add("B", good, "POST", {"b": "1"}, time.time())
    spool.db.execute("INSERT INTO events (key, url, method, params, created) VALUES "
                     "('C', 'http://x/', 'POST', 'not json', 0)")
    spool.close()
    spool = Spool(path)

    async def wait(worker):
        with trio.fail_after(10):
            while spool.pending():
                await trio.sleep(0.05)

    _run_worker(spool, wait)
    assert len(receiver.requests_to("/cb", delivered=True)) == 1
    assert sorted(d["key"] for d in spool.dead_letters()) == ["A", "C"]


def test_a_spool_file_that_is_not_a_database_is_moved_aside(tmp_path):
    path = tmp_path / "s.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    spool = Spool(path)
    assert spool.pending() == [] and spool.dead_count() == 0
    assert any(p.name.startswith("s.sqlite.broken-") for p in tmp_path.iterdir())


def test_a_document_is_bounded_in_size_and_in_total_time(receiver, tmp_path):
    """A body past the limit is refused (no retry); a server that answers slowly is cut at the
    deadline for the whole request, not per read."""
    big = receiver.route("/big", "x" * 5000)
    slow = receiver.route("/slow", "<Response/>", delay=3)
    spool = Spool(tmp_path / "s.sqlite")
    out = {}

    async def fetch(worker):
        for name, url in (("big", big), ("slow", slow)):
            t0 = time.monotonic()
            with pytest.raises(FetchError) as exc:
                await worker.fetch(url, "GET", {}, timeout=1.0)
            out[name] = (exc.value, time.monotonic() - t0)

    _run_worker(spool, fetch, max_document_bytes=1000)
    assert "larger than 1000 bytes" in out["big"][0].reason and not out["big"][0].retry
    assert "timed out" in out["slow"][0].reason and out["slow"][1] < 2.0
