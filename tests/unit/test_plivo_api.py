"""The Plivo-shaped Conference API (``sipconf/http/plivo_api.py``) on a real node with the fake
engine: paths, Basic auth, Plivo's reply shapes and status codes, member ids (one, a comma list,
``all``), what each action does to the calls, hostile requests (never a 5xx), and the official
``plivo`` SDK's ``RestClient`` pointed at the node the way the README says.

Long on purpose: one case per endpoint and method of Plivo's Conference API."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import trio
from support.node_harness import Harness, WebApp, run_node, wav_bytes

AUTH_ID = "MAXXXXXXXXXXXXXXXXXX"  # the SDK only takes 20-character MA.../SA... ids
TOKEN = "plivo-token"
BASE = f"/v1/Account/{AUTH_ID}/Conference/"
CONF = '<Response><Conference callbackUrl="/cb">{room}</Conference><Speak>bye</Speak></Response>'


def basic(user: str = AUTH_ID, password: str = TOKEN) -> bytes:
    return b"Basic " + base64.b64encode(f"{user}:{password}".encode())


async def call_api(h: Harness, method: str, path: str, body: Any = None, *,
                   auth: bytes | None = None, raw: bytes | None = None,
                   ctype: bytes = b"application/json",
                   raw_path: bytes | None = None) -> tuple[int, Any, dict]:
    """One request to the node's HTTP app; (status, JSON or raw body, headers)."""
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    headers = [(b"content-type", ctype), (b"authorization", basic() if auth is None else auth)]
    status, content, hdrs = await h.asgi(method, path, data, headers, raw_path=raw_path)
    try:
        return status, json.loads(content), hdrs
    except ValueError:
        return status, content, hdrs


async def two_members(h: Harness, room: str = "team") -> tuple[str, str]:
    a = await h.call(room, "call-a", from_uri="sip:alice@10.0.0.1:5062", caller_name="Alice")
    key = await h.joined(a)
    b = await h.call(room, "call-b", from_uri="sip:bob@10.0.0.2", caller_name="Bob")
    assert await h.joined(b) == key
    return a, b


def node(body, **config) -> Harness:
    app = WebApp(answer_fn=lambda req: CONF.format(room=req.params["To"]),
                 routes={"/long.wav": wav_bytes(3.0)})
    opts: dict[str, Any] = {"auth_id": AUTH_ID, "auth_token": TOKEN}
    opts.update(config)
    h = run_node(body, app=app, **opts)
    assert dict(h.node.faults.counts) == {}
    return h


def test_list_and_get_conferences_in_plivos_shape():
    async def body(h: Harness):
        a, b = await two_members(h)
        await trio.sleep(7)
        status, got, hdrs = await call_api(h, "GET", BASE)
        assert status == 200 and hdrs["content-type"] == "application/json"
        assert got["conferences"] == ["team"] and len(got["api_id"]) == 36
        status, conf, _ = await call_api(h, "GET", BASE + "team/")
        assert status == 200
        assert {k: conf[k] for k in ("conference_name", "conference_member_count")} == {
            "conference_name": "team", "conference_member_count": "2"}
        assert int(conf["conference_run_time"]) >= 7
        m1, m2 = conf["members"]
        assert m1 == {"member_id": "1", "muted": False, "deaf": False,
                      "from": "sip:alice@10.0.0.1:5062", "to": "team", "caller_name": "Alice",
                      "direction": "inbound", "call_uuid": a,
                      "join_time": m1["join_time"]}
        assert int(m1["join_time"]) >= 7 and m2["member_id"] == "2" and m2["call_uuid"] == b
        # without the trailing slash too; an unknown one is a 404 with Plivo's "error"
        assert (await call_api(h, "GET", BASE + "team"))[0] == 200
        status, err, _ = await call_api(h, "GET", BASE + "nope/")
        assert status == 404 and "nope" in err["error"] and "api_id" in err

    node(body)


def test_basic_auth_and_the_account_in_the_path():
    async def body(h: Harness):
        await two_members(h)
        for auth in (b"", b"Bearer x", basic(password="wrong"), basic(user="MAYYYYYYYYYYYYYYYYYY"),
                     b"Basic !!!notbase64", b"Basic " + base64.b64encode(b"no-colon")):
            status, got, hdrs = await call_api(h, "GET", BASE, auth=auth)
            assert status == 401 and got["error"], auth
            assert hdrs["www-authenticate"].startswith("Basic")
        other = "/v1/Account/MAYYYYYYYYYYYYYYYYYY/Conference/"
        status, got, _ = await call_api(h, "GET", other)
        assert status == 401 and "account" in got["error"]
        # the bearer API is unaffected (its own token)
        assert (await h.api("GET", "/v1/rooms"))[0] == 200

    node(body)


def test_without_auth_id_the_api_is_off():
    async def body(h: Harness):
        status, got, _ = await call_api(h, "GET", BASE)
        assert status == 401 and "auth_id" in got["error"]

    node(body, auth_id=None)


def test_mute_unmute_deaf_undeaf_act_on_the_legs():
    async def body(h: Harness):
        a, b = await two_members(h)
        status, got, _ = await call_api(h, "POST", BASE + "team/Member/2/Mute/")
        assert status == 202 and got["message"] == "muted" and got["member_id"] == "2"
        await h.wait_until(lambda: h.engine.calls[b].muted, what="muted")
        conf = (await call_api(h, "GET", BASE + "team/"))[1]
        assert [m["muted"] for m in conf["members"]] == [False, True]
        status, got, hdrs = await call_api(h, "DELETE", BASE + "team/Member/2/Mute/")
        assert status == 204 and got == b"" and hdrs["content-length"] == "0"
        await h.wait_until(lambda: not h.engine.calls[b].muted, what="unmuted")
        status, got, _ = await call_api(h, "POST", BASE + "team/Member/1/Deaf/")
        assert status == 202 and got["message"] == "deaf"
        await h.wait_until(lambda: h.engine.calls[a].deaf, what="deaf")
        assert (await call_api(h, "DELETE", BASE + "team/Member/1/Deaf/"))[0] == 204
        await h.wait_until(lambda: not h.engine.calls[a].deaf, what="undeaf")
        # all, and a comma list: every member named; an absent one: 404, nothing done
        status, got, _ = await call_api(h, "POST", BASE + "team/Member/all/Mute/")
        assert status == 202 and got["member_id"] == ["1", "2"]
        await h.wait_until(lambda: h.engine.calls[a].muted and h.engine.calls[b].muted,
                           what="all muted")
        assert (await call_api(h, "DELETE", BASE + "team/Member/1,2/Mute/"))[0] == 204
        await h.wait_until(lambda: not (h.engine.calls[a].muted or h.engine.calls[b].muted),
                           what="both unmuted")
        status, got, _ = await call_api(h, "POST", BASE + "team/Member/1,7/Mute/")
        assert status == 404 and "7" in got["error"]
        await trio.sleep(1)
        assert not h.engine.calls[a].muted
        for bad in ("x", "1,,2", "-1", "1" * 12, ",".join(["1"] * 101)):
            status, got, _ = await call_api(h, "POST", BASE + f"team/Member/{bad}/Mute/")
            assert status in (400, 404) and got["error"], bad
        assert (await call_api(h, "POST", BASE + "nope/Member/1/Mute/"))[0] == 404

    node(body)


def test_kick_goes_on_with_the_document_and_hangup_ends_the_call():
    async def body(h: Harness):
        a, b = await two_members(h)
        status, got, _ = await call_api(h, "POST", BASE + "team/Member/1/Kick/")
        assert status == 202 and got == {**got, "message": "kicked", "member_id": "1"}
        await h.wait_until(lambda: h.engine.room_of(a) is None, what="kicked")
        await h.ended(a)  # the <Speak> after the Conference, then the end of the document
        assert any(c[0] == "play_to_call" and c[1] == a for c in h.engine.log)
        assert h.engine.calls[a].ended_by == "node"
        status, got, _ = await call_api(h, "DELETE", BASE + "team/Member/2/")
        assert status == 204
        await h.ended(b)
        assert (await call_api(h, "GET", BASE + "team/"))[0] == 404

    node(body)


def test_play_and_speak_to_members_and_stop_them():
    async def body(h: Harness):
        a, b = await two_members(h)
        status, got, _ = await call_api(h, "POST", BASE + "team/Member/2/Play/",
                                        {"url": "http://app.test/s.wav"})
        assert status == 202 and got["message"] == "play queued into conference"
        await h.wait_until(lambda: h.engine.calls[b].played, what="played to bob")
        assert not h.engine.calls[a].played
        # speech with one of Plivo's voices (mapped to a local one), to everyone
        status, got, _ = await call_api(h, "POST", BASE + "team/Member/all/Speak/",
                                        {"text": "hello", "voice": "Polly.Matthew",
                                         "language": "en-US"})
        assert status == 202 and got["message"] == "speak queued into conference"
        await h.wait_until(lambda: h.engine.calls[a].played and
                           len(h.engine.calls[b].played) == 2, what="spoken to both")
        assert h.engine.calls[a].overlay is not None
        assert (await call_api(h, "DELETE", BASE + "team/Member/all/Speak/"))[0] == 204
        await h.wait_until(lambda: h.engine.calls[a].overlay is None
                           and h.engine.calls[b].overlay is None, what="stopped")
        assert (await call_api(h, "DELETE", BASE + "team/Member/1/Play/"))[0] == 204
        # bad bodies: a clear 400 naming the problem
        for path, bad in (("Play", {}), ("Play", {"url": "ftp://x/y.wav"}),
                          ("Speak", {}), ("Speak", {"text": ""}), ("Speak", {"text": 5}),
                          ("Speak", {"text": "x", "voice": 3}),
                          ("Speak", {"text": "x", "language": "not a tag"}),
                          ("Speak", {"text": "x" * 5000})):
            status, got, _ = await call_api(h, "POST", BASE + f"team/Member/1/{path}/", bad)
            assert status == 400 and got["error"], (path, bad, got)
        status, got, _ = await call_api(h, "POST", BASE + "team/Member/1/Play/",
                                        {"url": "http://app.test/missing.wav"})
        assert status == 400 and got["error"]
        # a form body works too (curl users)
        status, _, _ = await call_api(h, "POST", BASE + "team/Member/1/Play/",
                                      raw=b"url=http%3A%2F%2Fapp.test%2Fs.wav",
                                      ctype=b"application/x-www-form-urlencoded")
        assert status == 202

    node(body)


def test_record_start_and_stop():
    async def body(h: Harness):
        await two_members(h)
        status, got, _ = await call_api(h, "POST", BASE + "team/Record/",
                                        {"file_format": "wav", "transcription_type": "auto"})
        assert status == 202 and got["message"] == "conference recording started"
        assert got["url"].endswith(".wav") and got["recording_id"]
        assert (await call_api(h, "POST", BASE + "team/Record/", {}))[0] == 409
        await trio.sleep(2)
        assert (await call_api(h, "DELETE", BASE + "team/Record/"))[0] == 204
        await trio.sleep(1)
        assert (await call_api(h, "DELETE", BASE + "team/Record/"))[0] == 409
        status, got, _ = await call_api(h, "POST", BASE + "team/Record/", {"file_format": "ogg"})
        assert status == 400 and "file_format" in got["error"]
        assert (await call_api(h, "POST", BASE + "nope/Record/", {}))[0] == 404

    node(body)


def test_hang_up_one_conference_and_all():
    async def body(h: Harness):
        a, b = await two_members(h, "one")
        c = await h.call("two", "call-c")
        await h.joined(c)
        assert (await call_api(h, "DELETE", BASE + "one/"))[0] == 204
        await h.wait_until(lambda: "one" not in h.node.rooms, what="one ended")
        assert (await call_api(h, "GET", BASE))[1]["conferences"] == ["two"]
        assert (await call_api(h, "DELETE", BASE + "one/"))[0] == 404
        assert (await call_api(h, "DELETE", BASE))[0] == 204
        await h.wait_until(lambda: not h.node.rooms, what="all ended")
        for uuid in (a, b, c):
            await h.ended(uuid)  # left the room, spoke "bye", hung up

    node(body)


def test_hostile_requests_get_clear_json_errors_never_a_5xx():
    async def body(h: Harness):
        await two_members(h)
        cases = [
            ("PUT", BASE, None, None, 405), ("POST", BASE, None, None, 405),
            ("PATCH", BASE + "team/", None, None, 405),
            ("GET", BASE + "team/Member/1/Mute/", None, None, 405),
            ("POST", BASE + "team/Member/1/", None, None, 405),
            ("POST", BASE + "team/Member/1/Dance/", None, None, 404),
            ("POST", BASE + "team/Member/1/Mute/extra/", None, None, 404),
            ("GET", BASE + "team/Record/", None, None, 405),
            ("GET", f"/v1/Account/{AUTH_ID}/Call/", None, None, 404),
            ("GET", f"/v1/Account/{AUTH_ID}/", None, None, 404),
            ("POST", BASE + "team/Member/1/Play/", b"{not json", None, 400),
            ("POST", BASE + "team/Member/1/Play/", b"[1, 2]", None, 400),
            ("POST", BASE + "team/Member/1/Play/", b"\"x\"", None, 400),
            ("POST", BASE + "team/Member/1/Play/", b"[" * 100000, None, 413),
            ("POST", BASE + "team/Member/1/Speak/", b'{"text": "\\ud800"}', None, 400),
            ("POST", BASE + "team/Member/1/Speak/", b'{"text": "a\\u0000b"}', None, 400),
            ("GET", BASE + "x%ff/", None, None, 400),
            ("GET", BASE + "\u00e9/", None, "raw", 400),
            ("GET", BASE + "a" * 5000 + "/", None, None, 414),
            ("GET", BASE + "%00/", None, None, 404),
        ]
        for method, path, raw, mode, want in cases:
            raw_path = path.encode("utf-8") if mode == "raw" else None
            status, got, hdrs = await call_api(h, method, path, raw=raw, raw_path=raw_path)
            assert status == want and got["error"] and got["api_id"], (method, path[:60], got)
            assert hdrs["content-type"] == "application/json"
        status, got, hdrs = await call_api(h, "PUT", BASE)
        assert hdrs["allow"] == "GET, DELETE"
        status, got, _ = await call_api(
            h, "POST", BASE + "team/Member/1/Play/", raw=b"url=%ff",
            ctype=b"application/x-www-form-urlencoded")
        assert status == 400

    node(body)


def test_the_official_sdk_drives_the_node():
    """plivo.RestClient as an app uses it, pointed at the node by the README's one line; its
    HTTP goes to the node's ASGI app through a requests adapter (no network)."""
    plivo = pytest.importorskip("plivo")
    import plivo.rest.client as plivo_client
    import requests
    from plivo import exceptions

    base = "http://node.test/v1/Account"

    class AsgiAdapter(requests.adapters.BaseAdapter):
        def __init__(self, h: Harness, token: trio.lowlevel.TrioToken):
            super().__init__()
            self.h, self.token = h, token

        def send(self, request, **kwargs):
            path = request.path_url.split("?", 1)[0]
            assert request.url.startswith(base + "/"), request.url
            body = request.body or b""
            status, got, hdrs = trio.from_thread.run(
                lambda: call_api(self.h, request.method, path,
                                 raw=body if isinstance(body, bytes) else body.encode(),
                                 auth=request.headers["Authorization"].encode()),
                trio_token=self.token)
            resp = requests.Response()
            resp.status_code, resp.url, resp.request = status, request.url, request
            resp._content = got if isinstance(got, bytes) else json.dumps(got).encode()
            resp.headers.update(hdrs)
            return resp

        def close(self):
            pass

    async def body(h: Harness):
        a, b = await two_members(h)
        token = trio.lowlevel.current_trio_token()

        def sdk() -> dict:
            saved = (plivo_client.API_VOICE_BASE_URI, plivo_client.API_VOICE_BASE_URI_FALLBACK_1,
                     plivo_client.API_VOICE_BASE_URI_FALLBACK_2)
            try:
                # the README's line
                plivo_client.API_VOICE_BASE_URI = plivo_client.API_VOICE_BASE_URI_FALLBACK_1 = \
                    plivo_client.API_VOICE_BASE_URI_FALLBACK_2 = base
                client = plivo.RestClient(AUTH_ID, TOKEN)
                client.session.mount("http://node.test/", AsgiAdapter(h, token))
                out: dict = {"list": client.conferences.list()}
                out["get"] = client.conferences.get("team")
                out["mute"] = client.conferences.member_mute("team", "2")
                out["play"] = client.conferences.member_play("team", "1",
                                                             "http://app.test/s.wav")
                out["speak"] = client.conferences.member_speak("team", "all", "hi",
                                                               voice="WOMAN")
                out["play_stop"] = client.conferences.member_play_stop("team", "1")
                out["record"] = client.conferences.record("team", file_format="wav")
                out["record_stop"] = client.conferences.record_stop("team")
                out["kick"] = client.conferences.member_kick("team", "1")
                with pytest.raises(exceptions.ResourceNotFoundError):
                    client.conferences.get("nope")
                bad = plivo.RestClient(AUTH_ID, "wrong")
                bad.session.mount("http://node.test/", AsgiAdapter(h, token))
                with pytest.raises(exceptions.AuthenticationError):
                    bad.conferences.list()
                return out
            finally:
                (plivo_client.API_VOICE_BASE_URI, plivo_client.API_VOICE_BASE_URI_FALLBACK_1,
                 plivo_client.API_VOICE_BASE_URI_FALLBACK_2) = saved

        out = await trio.to_thread.run_sync(sdk)
        assert out["list"].conferences == ["team"]
        conf = out["get"]
        assert conf.conference_name == "team" and conf.conference_member_count == "2"
        assert [m.member_id for m in conf.members] == ["1", "2"]
        assert conf.members[1].call_uuid == b and conf.members[0]["from"] == \
            "sip:alice@10.0.0.1:5062"
        assert out["mute"].message == "muted" and out["mute"].member_id == "2"
        assert out["play"].message == "play queued into conference"
        assert out["speak"].member_id == ["1", "2"]
        assert out["play_stop"] is None and out["record_stop"] is None  # 204
        assert out["record"].url.endswith(".wav") and out["record"].recording_id
        assert out["kick"].message == "kicked"
        await h.wait_until(lambda: h.engine.room_of(a) is None, what="kicked")
        assert h.engine.calls[b].muted and h.engine.calls[b].played

    node(body)


def test_names_with_spaces_and_percent_escapes():
    async def body(h: Harness):
        a = await h.call("My Conf Room", "call-a")
        await h.joined(a)
        status, got, _ = await call_api(h, "GET", BASE, raw_path=None)
        assert got["conferences"] == ["My Conf Room"]
        path = BASE + "My Conf Room/"
        raw = (BASE + "My%20Conf%20Room/").encode()
        status, got, _ = await call_api(h, "GET", path, raw_path=raw)
        assert status == 200 and got["conference_name"] == "My Conf Room"
        status, got, _ = await call_api(h, "POST", path + "Member/1/Mute/",
                                        raw_path=(BASE + "My%20Conf%20Room/Member/1/Mute/")
                                        .encode())
        assert status == 202

    node(body)


_SEGMENTS = ["team", "nope", "Member", "1", "2", "all", "1,2", "x", "Mute", "Deaf", "Kick",
             "Play", "Speak", "Record", "", "%ff", "%00", "..", "Conference", AUTH_ID]


def test_random_requests_never_fault():
    """Hypothesis: any method, path under /v1/Account/ and body gets a JSON reply below 500 and
    nothing is counted as a fault."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    paths = st.lists(st.sampled_from(_SEGMENTS), max_size=6).map(
        lambda segs: f"/v1/Account/{AUTH_ID}/Conference/" + "/".join(segs))
    bodies = st.one_of(st.none(), st.binary(max_size=64),
                       st.dictionaries(st.sampled_from(["url", "text", "voice", "language",
                                                        "file_format", "member_id"]),
                                       st.one_of(st.text(max_size=20), st.integers(),
                                                 st.none(), st.lists(st.integers(),
                                                                     max_size=2)),
                                       max_size=4).map(lambda d: json.dumps(d).encode()))
    requests = st.lists(st.tuples(st.sampled_from(["GET", "POST", "DELETE", "PUT"]), paths,
                                  bodies), min_size=1, max_size=12)

    @settings(max_examples=15, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(reqs=requests)
    def run(reqs):
        async def body(h: Harness):
            await two_members(h)
            for method, path, raw in reqs:
                status, got, hdrs = await call_api(h, method, path, raw=raw)
                assert status < 500, (method, path, raw, got)
                if status != 204:
                    assert hdrs["content-type"] == "application/json" and "api_id" in got

        node(body)

    run()


def test_a_second_sound_to_a_member_replaces_the_first_and_is_not_cut_by_its_end():
    async def body(h: Harness):
        a, _ = await two_members(h)
        short = {"url": "http://app.test/s.wav"}  # 0.5 s
        assert (await call_api(h, "POST", BASE + "team/Member/1/Play/", short))[0] == 202
        await h.wait_until(lambda: h.engine.calls[a].overlay is not None, what="first clip")
        await trio.sleep(0.2)
        long = {"url": "http://app.test/long.wav"}  # 3 s
        assert (await call_api(h, "POST", BASE + "team/Member/1/Play/", long))[0] == 202
        await h.wait_until(lambda: len(h.engine.calls[a].played) == 2, what="second clip")
        await trio.sleep(1.5)  # the first one is over: the second still plays
        assert h.engine.calls[a].overlay is not None
        assert h.engine.calls[a].overlay[0].duration == 3.0
        await trio.sleep(2.0)
        assert h.engine.calls[a].overlay is None  # taken off at its own end

    node(body)


def test_the_conference_api_is_in_the_openapi_document():
    from sipconf.http.api import openapi

    spec = openapi()
    base = "/v1/Account/{auth_id}/Conference/"
    mute = spec["paths"][base + "{name}/Member/{member_id}/Mute/"]
    assert set(mute) == {"post", "delete"} and mute["post"]["security"] == [{"basic": []}]
    assert set(spec["paths"][base]) == {"get", "delete"}
    assert "text" in spec["paths"][base + "{name}/Member/{member_id}/Speak/"]["post"][
        "requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]["properties"]
    assert spec["components"]["securitySchemes"]["basic"]["scheme"] == "basic"
