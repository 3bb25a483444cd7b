"""Reading SIP requests: dialled user, caller name, offered codecs."""

import pytest

from sipconf.core import sipmsg

INVITE = (
    "INVITE sip:room%2042@10.0.0.1:5080;transport=udp SIP/2.0\r\n"
    'From: "Alice \\"A\\" Smith" <sip:alice@10.0.0.2>;tag=1\r\n'
    "To: <sip:room@10.0.0.1>\r\n"
    "Content-Type: application/sdp\r\n\r\n"
    "v=0\r\no=- 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 18 9 101\r\na=rtpmap:18 G729/8000\r\na=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\n"
)


def test_request_line_and_user():
    method, ruri = sipmsg.request_line(INVITE)
    assert method == "INVITE"
    assert sipmsg.uri_user(ruri) == "room 42"
    assert sipmsg.uri_user("sip:10.0.0.1") == ""
    assert sipmsg.uri_user("<sip:bob:secret@x>") == "bob"
    assert sipmsg.uri_user("tel:+15551234") == ""
    with pytest.raises(ValueError):
        sipmsg.request_line("garbage\r\n")


def test_display_name_and_bare_uri():
    assert sipmsg.display_name('"Alice \\"A\\" Smith" <sip:alice@x>') == 'Alice "A" Smith'
    assert sipmsg.display_name("Bob <sip:bob@x>") == "Bob"
    assert sipmsg.display_name("<sip:bob@x>") == ""
    assert sipmsg.bare_uri('"A" <sip:a@x>;tag=1') == "sip:a@x"
    assert sipmsg.bare_uri("sip:a@x;tag=1") == "sip:a@x"


def test_offer_codecs():
    offer = sipmsg.parse_offer(sipmsg.message_body(INVITE))
    assert offer.has_audio
    assert offer.codecs == ("g729", "g722", "telephone-event")
    assert offer.supported == ("g722",)
    g729 = sipmsg.parse_offer("v=0\r\nm=audio 4000 RTP/AVP 18\r\n")
    assert g729.codecs == ("g729",) and g729.supported == ()
    static = sipmsg.parse_offer("v=0\nm=audio 1 RTP/AVP 0 8\n")
    assert static.supported == ("pcmu", "pcma")
    video_only = sipmsg.parse_offer("v=0\nm=video 1 RTP/AVP 96\na=rtpmap:96 VP8/90000\n")
    assert not video_only.has_audio
    with pytest.raises(ValueError):
        sipmsg.parse_offer("this is not SDP")


def _multipart(boundary_param: str, delimiter: str, parts: list[tuple[str | None, str]]) -> str:
    body = "".join(f"--{delimiter}\r\n" + (f"Content-Type: {ct}\r\n" if ct else "") + "\r\n"
                   + content + "\r\n" for ct, content in parts) + f"--{delimiter}--\r\n"
    return ("INVITE sip:room@10.0.0.1 SIP/2.0\r\n"
            f"Content-Type: multipart/mixed;{boundary_param}\r\n\r\n" + body)


def test_the_sdp_part_of_a_multipart_invite():
    sdp = sipmsg.message_body(INVITE)
    isup = "\x01\x00\x49\x00\x00\x03\x02\x00\x07\x04\x10\x00\x33\x63\x21\x43\x00\x00\x03"
    msg = _multipart("boundary=unique-boundary-1", "unique-boundary-1",
                     [("application/isup;version=itu-t92+", isup), ("application/sdp", sdp)])
    got = sipmsg.session_description(msg)
    assert sipmsg.parse_offer(got).codecs == ("g729", "g722", "telephone-event")
    quoted = _multipart('boundary="a b"', "a b", [("Application/SDP", sdp)])
    assert sipmsg.parse_offer(sipmsg.session_description(quoted)).supported == ("g722",)
    # no SDP part (a part without headers is text/plain): no offer; a plain body is the body
    assert sipmsg.session_description(_multipart("boundary=q", "q", [(None, sdp)])) == ""
    assert sipmsg.session_description(INVITE) == sdp
    with pytest.raises(ValueError):
        sipmsg.session_description(INVITE.replace("application/sdp", "multipart/mixed"))
