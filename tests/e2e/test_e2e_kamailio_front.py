"""The shipped Kamailio front (deploy/kamailio/dispatcher.cfg, issue 15 part 5) in front of a
sipconf node: a legitimate call still reaches its room; a source outside the allow-list gets
403; a room name that is too long or has other characters than [A-Za-z0-9_.-] is refused by
Kamailio and never reaches the node; REGISTER & co. get 405; an INVITE flood from one source is
cut by pike; the room table stays bounded. Raw UDP sockets on their own 127.0.0.x addresses, so
each source is seen (and rate-limited) by its own address."""

from __future__ import annotations

import hashlib
import re
import socket
import time
import uuid
from pathlib import Path

import pytest
from support import ports
from support.kamailio import Kamailio
from support.waiting import wait_until

pytestmark = pytest.mark.e2e
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kamailio"
CALLER = "127.0.0.1"  # baresip; in the allow-list
CHECKER = "127.0.0.51"  # raw checks; in the allow-list
FLOODER = "127.0.0.50"  # in the allow-list: only pike stands in its way
STRANGER = "127.0.0.66"  # not in the allow-list
PIKE_DENSITY = 10  # requests per 2 s per source; pike blocks between 1x and 3x that
ROOMS_MAX = 8
SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 9 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n")


class Raw:
    """A UDP socket on ``host`` speaking just enough SIP to send requests and read answers."""

    def __init__(self, host: str, proxy: tuple[str, int]):
        self.proxy = proxy
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:  # room for a flood's answers
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((host, 0))
        self.host, self.port = host, self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()

    def send(self, method: str, user: str | None, call_id: str | None = None,
             headers: str = "", body: str = "") -> str:
        call_id = call_id or f"{uuid.uuid4().hex}@{self.host}"
        host = f"{self.proxy[0]}:{self.proxy[1]}"
        uri = f"sip:{user}@{host}" if user is not None else f"sip:{host}"
        msg = (f"{method} {uri} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP {self.host}:{self.port};rport"
               f";branch=z9hG4bK{uuid.uuid4().hex}\r\n"
               f"From: <sip:raw@{self.host}>;tag={uuid.uuid4().hex[:8]}\r\nTo: <{uri}>\r\n"
               f"Call-ID: {call_id}\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
               f"Contact: <sip:raw@{self.host}:{self.port}>\r\n{headers}"
               + ("Content-Type: application/sdp\r\n" if body else "")
               + f"Content-Length: {len(body)}\r\n\r\n{body}")
        self.sock.sendto(msg.encode(), self.proxy)
        return call_id

    def answers(self, seconds: float) -> list[str]:
        out, deadline = [], time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                out.append(self.sock.recv(65535).decode(errors="replace"))
            except TimeoutError:
                break
        return out

    def final(self, timeout: float = 3.0) -> str:
        """The first final response (provisional ones skipped), or ''."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self.answers(min(0.2, deadline - time.monotonic())):
                if not r.startswith("SIP/2.0 1"):
                    return r
        return ""


def _code(resp: str) -> int:
    return int(resp.split(" ", 2)[1]) if resp else 0


def _reason(resp: str) -> str:
    return resp.split("\r\n", 1)[0].split(" ", 2)[2] if resp else ""


def _header(resp: str, name: str) -> str:
    m = re.search(rf"^{name}: *(.*)\r$", resp, re.M | re.I)
    return m.group(1) if m else ""


def _invites_seen(node) -> int:
    """Calls the node has had: ended (any outcome, refusals included) and running."""
    m = node.metrics()
    return int(sum(v for k, v in m.items() if k.startswith("sipconf_calls_total"))
               + m["sipconf_calls_active"])


def _rooms_table(kam: Kamailio) -> set[str]:
    return set(re.findall(r"name:\s*(\S+)", kam.rpc("htable.dump", "rooms")))


def _start_front(tmp_path, node, **defines) -> Kamailio:
    lst = tmp_path / "dispatcher.list"
    lst.write_text(f"1 sip:127.0.0.1:{node.sip_port}\n")
    allow = tmp_path / "address.list"
    allow.write_text(f"1 {CALLER}\n1 {CHECKER}\n1 {FLOODER}\n")
    kam = Kamailio(tmp_path, DEPLOY / "dispatcher.cfg", "127.0.0.1", ports.block(1),
                   {"DISPATCHER_LIST": f'"{lst}"', "ADDRESS_LIST": f'"{allow}"',
                    "PING_INTERVAL": "1", "PIKE_INTERVAL": "2",
                    "PIKE_DENSITY": str(PIKE_DENSITY), "ROOMS_MAX": str(ROOMS_MAX),
                    **defines}).start()
    addr = f"127.0.0.1:{node.sip_port}"
    assert wait_until(lambda: re.search(rf"sip:{addr}\s+FLAGS:\s*A", kam.rpc("dispatcher.list")),
                      10), kam.rpc("dispatcher.list")
    return kam


def test_front_lets_calls_in_and_refuses_the_rest(tmp_path, node_factory, uas):
    node = node_factory()
    kam = _start_front(tmp_path, node, PIKE_DENSITY="50")  # the checker sends a burst of checks
    proxy = (kam.host, kam.port)
    checker, stranger = Raw(CHECKER, proxy), Raw(STRANGER, proxy)
    try:
        # a legitimate caller reaches its room
        ua = uas("alice", tone_hz=440.0).dial(f"sip:lobby@{kam.hostport}", seconds=40)
        assert ua.wait_for("Call established", 10), ua.output()[-2000:] + kam.log()[-2000:]
        assert wait_until(lambda: [k for k in node.metrics() if 'room="lobby"' in k], 5)
        assert _rooms_table(kam) == {"lobby"}
        seen = _invites_seen(node)
        assert seen == 1

        # a source outside the allow-list: 403, once, and nothing reaches the node
        stranger.send("INVITE", "lobby", body=SDP)
        resp = stranger.final()
        assert _code(resp) == 403, resp
        assert stranger.answers(1.0) == []  # stateless: no retransmission

        # room names Kamailio will not hash or store
        for user, why in [("a" * 200, "longer than 64"), ("bad!room", "A-Z a-z 0-9"),
                          ("r%C3%A9union", "A-Z a-z 0-9"), ("semi;colon", "A-Z a-z 0-9")]:
            checker.send("INVITE", user, body=SDP)
            resp = checker.final()
            assert _code(resp) == 400 and why in _reason(resp), (user, resp)
        longest = Raw(CHECKER, proxy)  # its call is answered: keep its 200s apart
        longest.send("INVITE", "a" * 64, body=SDP)  # 64 is still a room name
        assert _code(longest.final(5.0)) == 200
        longest.close()
        checker.send("INVITE", None, body=SDP)  # no room at all
        assert _code(checker.final()) == 404

        # methods the cluster does not serve: 405 with Allow (501 for unknown ones), stateless
        for method in ("REGISTER", "SUBSCRIBE", "PUBLISH", "MESSAGE"):
            checker.send(method, "lobby", headers="Event: presence\r\n"
                         if method in ("SUBSCRIBE", "PUBLISH") else "")
            resp = checker.final()
            assert _code(resp) == 405, (method, resp)
            assert "INVITE" in _header(resp, "Allow"), resp
        checker.send("FROBNICATE", "lobby")
        assert _code(checker.final()) == 501
        checker.send("BYE", "lobby")  # outside any call
        assert _code(checker.final()) == 481
        time.sleep(0.5)
        assert _invites_seen(node) == seen + 1  # only the 64-character room got through
        assert _rooms_table(kam) == {"lobby", "a" * 64}

        # the refusals are logged once per kind, not per request
        log = kam.log()
        assert len(re.findall(r"refused: bad-room", log)) == 1, log[-3000:]
        assert len(re.findall(r"refused: forbidden", log)) == 1, log[-3000:]

        # in-dialog requests from the caller still reach the node: the hang-up ends the call
        ua.hangup()
        assert wait_until(lambda: not [k for k in node.metrics() if 'room="lobby"' in k], 10), \
            kam.log()[-2000:]
        ua.stop()
    finally:
        checker.close()
        stranger.close()
        kam.stop()


def test_invite_flood_is_cut_by_pike_and_the_room_table_stays_bounded(tmp_path, node_factory,
                                                                      uas):
    """300 INVITEs over about 1 s from one source, each to a new room: pike lets at most
    3 x PIKE_DENSITY through and drops the rest without an answer; the node sees only what got
    through; the room table never holds more than ROOMS_MAX rooms; the caller next door
    (another loopback address) still gets in; the log gets a line about the flood, not one
    per INVITE."""
    node = node_factory()
    kam = _start_front(tmp_path, node, ROOM_TTL="8", BAN_TIME="30")
    flooder = Raw(FLOODER, (kam.host, kam.port))
    try:
        log_before = len(kam.log().splitlines())
        ids, t0 = [], time.monotonic()
        for i in range(300):
            ids.append(flooder.send("INVITE", f"flood{i}", body=SDP))
            time.sleep(max(0.0, t0 + (i + 1) / 300 - time.monotonic()))
        sent_s = time.monotonic() - t0
        answered: dict[str, list[str]] = {}
        for r in flooder.answers(4.0):
            answered.setdefault(_header(r, "Call-ID"), []).append(r)
        relayed = [c for c in ids if c in answered]
        dropped = [c for c in ids if c not in answered]
        seen = wait_until(lambda: _invites_seen(node) >= len(relayed) and _invites_seen(node),
                          10)
        kam_relayed = len(re.findall(r"room flood\d+ -> ", kam.log()))
        rooms = _rooms_table(kam)
        print(f"flood: 300 INVITEs in {sent_s:.2f} s from {FLOODER}; pike dropped "
              f"{len(dropped)}, Kamailio relayed {kam_relayed} (answered {len(relayed)}), "
              f"the node saw {seen}; room table {len(rooms)} (max {ROOMS_MAX})")
        assert len(relayed) <= 3 * PIKE_DENSITY * 2, len(relayed)  # two sampling periods
        assert len(relayed) >= PIKE_DENSITY
        assert len(dropped) == 300 - len(relayed)
        assert seen == len(relayed) == kam_relayed
        assert len(rooms) <= ROOMS_MAX
        assert len(rooms) == min(ROOMS_MAX, len(relayed))

        # one line about the flood (pike's own and ours), not one per INVITE
        new = kam.log().splitlines()[log_before:]
        noisy = [ln for ln in new if " -> sip:" not in ln]
        assert sum("flood from 127.0.0.50" in ln for ln in noisy) in (1, 2), "\n".join(noisy)
        assert len(noisy) < 30, "\n".join(noisy)
        assert sum("refused: room-table-full" in ln for ln in noisy) == 1, "\n".join(noisy)

        # the flooder is still cut off (banned for BAN_TIME); a caller from another address is not
        cid = flooder.send("INVITE", "flood-again", body=SDP)
        assert not [r for r in flooder.answers(1.0) if cid in r]
        assert "127.0.0.50" in kam.rpc("htable.dump", "ipban")

        # the rooms expire after ROOM_TTL, and the count of rooms with them: new rooms are
        # remembered again
        assert wait_until(lambda: not _rooms_table(kam), 20), kam.rpc("htable.dump", "rooms")
        assert re.search(r"value:\s*0\b", kam.rpc("htable.get", "roomcount", "n")), \
            kam.rpc("htable.get", "roomcount", "n")
        ua = uas("bob", tone_hz=440.0).dial(f"sip:lobby@{kam.hostport}", seconds=30)
        assert ua.wait_for("Call established", 10), ua.output()[-2000:] + kam.log()[-2000:]
        assert _rooms_table(kam) == {"lobby"}
        ua.stop()
    finally:
        flooder.close()
        kam.stop()


def _digest(resp: str, method: str, uri: str, user: str, password: str) -> str:
    chal = _header(resp, "Proxy-Authenticate")
    realm = re.search(r'realm="([^"]*)"', chal).group(1)
    nonce = re.search(r'nonce="([^"]*)"', chal).group(1)

    def md5(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    response = md5(f"{md5(f'{user}:{realm}:{password}')}:{nonce}:{md5(f'{method}:{uri}')}")
    return (f'Proxy-Authorization: Digest username="{user}", realm="{realm}", '
            f'nonce="{nonce}", uri="{uri}", response="{response}", algorithm=MD5\r\n')


def test_digest_auth_for_callers_outside_the_list_and_503_for_floods(tmp_path, node_factory):
    """With AUTH_PASSWORD, a source outside the allow-list is challenged (407) and its call
    goes through once it authenticates; wrong credentials get 403. With PIKE_REPLY a flooding
    source gets 503 + Retry-After instead of silence."""
    node = node_factory()
    kam = _start_front(tmp_path, node, AUTH_PASSWORD='"front-s3cret"', PIKE_REPLY="1")
    proxy = (kam.host, kam.port)
    stranger, flooder = Raw(STRANGER, proxy), Raw(FLOODER, proxy)
    uri = f"sip:authroom@{kam.hostport}"
    try:
        stranger.send("INVITE", "authroom", body=SDP)
        resp = stranger.final()
        assert _code(resp) == 407 and "Digest" in _header(resp, "Proxy-Authenticate"), resp
        stranger.send("INVITE", "authroom", body=SDP,
                      headers=_digest(resp, "INVITE", uri, "sipconf", "wrong"))
        assert _code(stranger.final()) == 403
        assert _invites_seen(node) == 0
        stranger.send("INVITE", "authroom", body=SDP,
                      headers=_digest(resp, "INVITE", uri, "sipconf", "front-s3cret"))
        assert _code(stranger.final(5.0)) == 200
        assert _invites_seen(node) == 1

        ids = [flooder.send("OPTIONS", "ping") for _ in range(100)]
        got = flooder.answers(2.0)
        busy = [r for r in got if _code(r) == 503]
        print(f"PIKE_REPLY: 100 requests, {len(busy)} answered 503")
        assert len(busy) >= 100 - 3 * PIKE_DENSITY * 2
        assert all(_header(r, "Retry-After") for r in busy)
        assert len(got) == len(ids)  # one answer each (405 or 503), no retransmission
    finally:
        stranger.close()
        flooder.close()
        kam.stop()
