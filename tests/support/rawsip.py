"""A raw UDP SIP user agent for tests that check exactly what goes on the wire: requests
built by hand, every response read as text."""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
       "a=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")


def code(resp: str) -> int:
    """The status code of a response (0 for none)."""
    return int(resp.split(" ", 2)[1]) if resp else 0


def header(resp: str, name: str) -> str:
    m = re.search(rf"^{name}: *(.*)\r$", resp, re.M | re.I)
    return m.group(1) if m else ""


@dataclass
class Dialog:
    """A call the raw UA placed and acknowledged."""

    call_id: str
    tag: str  # the node's To tag
    contact: str  # where in-dialog requests go
    node_rtp: tuple[str, int]  # the node's RTP address from its SDP answer
    ok: str  # the 200 OK, whole


class RawUA:
    """One UDP socket speaking just enough SIP to make a call and send requests in it."""

    def __init__(self, node_port: int):
        self.node = ("127.0.0.1", node_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:  # room for a flood's answers (SO_RCVBUFFORCE as root, else what rmem_max allows)
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.cseq = 1

    def close(self) -> None:
        self.sock.close()

    def request(self, method: str, uri: str, call_id: str, to_tag: str = "",
                headers: str = "", body: str = "", ctype: str = "",
                cseq: int | None = None, from_tag: str = "raw1") -> None:
        if cseq is None:
            self.cseq += 1
        to = f"<sip:edge@127.0.0.1>{';tag=' + to_tag if to_tag else ''}"
        msg = (f"{method} {uri} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{uuid.uuid4().hex};rport\r\n"
               f"From: <sip:raw@127.0.0.1>;tag={from_tag}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n"
               f"CSeq: {self.cseq if cseq is None else cseq} {method}\r\nMax-Forwards: 70\r\n"
               f"Contact: <sip:raw@127.0.0.1:{self.port}>\r\n{headers}"
               + (f"Content-Type: {ctype}\r\n" if ctype else "")
               + f"Content-Length: {len(body)}\r\n\r\n{body}")
        self.sock.sendto(msg.encode(), self.node)

    def respond(self, req: str, status: str = "200 OK") -> None:
        """Answer a request the node sent (its BYE, say), to the address it came from."""
        hdrs = "".join(f"{name}: {header(req, name)}\r\n"
                       for name in ("Via", "From", "To", "Call-ID", "CSeq"))
        self.sock.sendto(f"SIP/2.0 {status}\r\n{hdrs}Content-Length: 0\r\n\r\n".encode(),
                         self.node)

    def request_from_node(self, method: str, seconds: float) -> str:
        """The first ``method`` request the node sends in ``seconds`` (answered 200), or ""."""
        for data in self.messages(seconds):
            if data.startswith(f"{method} "):
                self.respond(data)
                return data
        return ""

    def messages(self, seconds: float) -> Iterator[str]:
        """Whatever reaches the socket until ``seconds`` have passed (or the caller stops)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                yield self.sock.recv(65535).decode(errors="replace")
            except TimeoutError:
                return

    def final(self, method: str, timeout: float = 3.0, call_id: str | None = None) -> str:
        """The first final response to ``method`` (in the dialog ``call_id`` if given;
        provisional ones and other traffic skipped: a late retransmission of an earlier
        request's answer is not taken for this one's)."""
        for data in self.messages(timeout):
            if data.startswith("SIP/2.0 1"):
                continue
            cseq = rf"^CSeq: *\d+ {re.escape(method)}\r$"
            if data.startswith("SIP/2.0 ") and re.search(cseq, data, re.M | re.I) and (
                    call_id is None or header(data, "Call-ID") == call_id):
                return data
        return ""

    def others(self, seconds: float) -> list[str]:
        """Whatever else reaches the socket in ``seconds`` (first lines)."""
        return [data.split("\r\n")[0] for data in self.messages(seconds)]

    def call(self, uri: str, rtp_port: int, body: str | None = None,
             ctype: str = "application/sdp", headers: str = "") -> Dialog:
        """INVITE ``uri`` offering PCMU at ``rtp_port`` (or with ``body``; "" for no offer),
        expect 200, ACK it."""
        call_id = f"{uuid.uuid4().hex}@raw"
        self.request("INVITE", uri, call_id, headers=headers, ctype=ctype,
                     body=SDP.format(port=rtp_port) if body is None else body)
        ok = self.final("INVITE", timeout=10)
        assert code(ok) == 200, ok[:400]
        tag = re.search(r"^To:.*;tag=([^;\r]+)", ok, re.M | re.I).group(1)
        contact = re.search(r"^(?:Contact|m): *<([^>]+)>", ok, re.M | re.I).group(1)
        self.request("ACK", contact, call_id, to_tag=tag, cseq=self.cseq)  # the INVITE's CSeq
        port = int(re.search(r"^m=audio (\d+)", ok, re.M).group(1))
        return Dialog(call_id, tag, contact, ("127.0.0.1", port), ok)

    def reinvite(self, dlg: Dialog, sdp: str) -> str:
        """A re-INVITE in ``dlg`` offering ``sdp``; its final response (ACKed), or ""."""
        self.request("INVITE", dlg.contact, dlg.call_id, to_tag=dlg.tag, body=sdp,
                     ctype="application/sdp")
        resp = self.final("INVITE", timeout=5)
        if resp:
            self.request("ACK", dlg.contact, dlg.call_id, to_tag=dlg.tag, cseq=self.cseq)
        return resp
