"""The codec table (sipconf.core.codecs): consistent, and the one source for pjsua's
priorities, the INVITE check (sipmsg) and the 488 Warning."""

from sipconf.core import codecs, sipmsg
from sipconf.core.codecs import CODECS


def test_table_is_consistent():
    names = [c.name.lower() for c in CODECS]
    assert len(set(names)) == len(names)
    assert len({c.pjsua_id for c in CODECS}) == len(CODECS)
    assert len({c.priority for c in CODECS}) == len(CODECS)  # a strict preference order
    for c in CODECS:
        enc, rate, channels = c.pjsua_id.split("/")
        assert enc.lower() == c.name.lower()
        assert int(rate) in (8000, 16000, 48000) and int(channels) in (1, 2)
        assert c.priority > 0
        assert c.static_pt is None or 0 <= c.static_pt < 96
    statics = [c.static_pt for c in CODECS if c.static_pt is not None]
    assert len(set(statics)) == len(statics)


def test_pjsua_priorities_come_from_the_table():
    assert codecs.pjsua_priority("opus/48000/2") == max(c.priority for c in CODECS)
    assert codecs.pjsua_priority("G722/16000/1") > codecs.pjsua_priority("PCMU/8000/1")
    assert codecs.pjsua_priority("PCMU/8000/1") > codecs.pjsua_priority("PCMA/8000/1")
    for off in ("GSM/8000/1", "speex/16000/1", "L16/44100/1", "G722/8000/1", ""):
        assert codecs.pjsua_priority(off) == 0  # everything else is switched off


def test_488_warning_is_derived_from_the_table():
    assert codecs.no_common_codec_warning() == "no codec in common: we take PCMU, PCMA, G722, opus"
    text = codecs.no_common_codec_warning()
    assert all(c.name in text for c in CODECS)


def test_sipmsg_takes_exactly_the_table():
    assert sipmsg.SUPPORTED_CODECS == {c.name.lower(): c.static_pt for c in CODECS}
    assert sipmsg.SUPPORTED_CODECS == {"pcmu": 0, "pcma": 8, "g722": 9, "opus": None}
    for c in CODECS:  # offered by rtpmap, and (if it has one) by static payload type alone
        pt = 96 if c.static_pt is None else c.static_pt
        sdp = f"v=0\r\nm=audio 4000 RTP/AVP {pt}\r\na=rtpmap:{pt} {c.name}/8000\r\n"
        assert sipmsg.parse_offer(sdp).supported == (c.name.lower(),)
        if c.static_pt is not None:
            bare = sipmsg.parse_offer(f"v=0\r\nm=audio 4000 RTP/AVP {c.static_pt}\r\n")
            assert bare.supported == (c.name.lower(),)
    g729 = sipmsg.parse_offer("v=0\r\nm=audio 4000 RTP/AVP 18\r\n")
    assert g729.codecs == ("g729",) and g729.supported == ()
