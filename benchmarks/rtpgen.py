"""Pre-encoded RTP streams for load: PCMU, G.722 and Opus payloads in a pcap file that SIPp
replays with ``play_pcap_audio`` (SIPp 3.6.1's ``rtp_stream`` only streams G.711 files).

Encoders are the system libraries, through ctypes: libopus (``libopus0``, which pjproject's
Opus codec links too; tests/support/opus.py) and spandsp's G.722 (``libspandsp2``;
tests/support/g722.py); mu-law is computed here.

RTP as the payload formats say: PCMU payload type 0, 8 kHz clock (160 a 20 ms packet); G.722
payload type 9, 64 kbit/s, sampled at 16 kHz but clocked at 8000 (RFC 3551 4.5.2: 160 a
packet, 160 bytes); Opus a dynamic payload type, ``opus/48000/2`` in the SDP, 48 kHz clock
whatever the coded bandwidth (RFC 7587 4.1: 960 a packet), one Opus frame a packet, mono.
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support import g722, opus  # noqa: E402
from support.audio import ulaw_encode  # noqa: E402

OPUS_PT = 96


@dataclass(frozen=True)
class CodecSpec:
    name: str
    pt: int
    rate: int  # sample rate of the PCM the encoder takes
    ts_step: int  # RTP timestamp units a 20 ms packet
    sdp: tuple[str, ...]  # a= lines of the offer


CODECS: dict[str, CodecSpec] = {
    "pcmu": CodecSpec("pcmu", 0, 8000, 160, ("a=rtpmap:0 PCMU/8000",)),
    "g722": CodecSpec("g722", 9, 16000, 160, ("a=rtpmap:9 G722/8000",)),
    "opus": CodecSpec("opus", OPUS_PT, 48000, 960,
                      (f"a=rtpmap:{OPUS_PT} opus/48000/2",
                       f"a=fmtp:{OPUS_PT} useinbandfec=0;maxplaybackrate=48000")),
}


def encode_frames(codec: str, pcm: np.ndarray, opus_bitrate: int = 32000,
                  opus_bandwidth: str = "fb", opus_dtx: bool = False) -> list[bytes | None]:
    """20 ms RTP payloads of ``pcm`` (int16 at the codec's rate); Opus coded up to
    ``opus_bandwidth`` (wb or fb), with ``opus_dtx`` as a pjsip peer at its default complexity
    (5) does when asked usedtx=1: None for a frame not sent."""
    spec = CODECS[codec]
    n = spec.rate // 50
    frames = [np.ascontiguousarray(pcm[i:i + n], dtype="<i2")
              for i in range(0, len(pcm) - n + 1, n)]
    if codec == "pcmu":
        return [ulaw_encode(f) for f in frames]
    if codec == "g722":
        enc = g722.Encoder()
        return [enc.encode(f) for f in frames]
    enc = opus.Encoder(opus_bitrate, opus_bandwidth, opus_dtx, 5 if opus_dtx else None)
    return [p if len(p) > 2 else None for p in (enc.encode(f) for f in frames)]


def write_rtp_pcap(path: Path, codec: str, payloads: list[bytes | None],
                   ssrc: int = 0x5EED0001, port: int = 6000) -> Path:
    """Classic pcap (Ethernet, IPv4, UDP 127.0.0.1:port -> :port), one RTP packet each 20 ms
    (none for a None payload: DTX, the timestamp steps on, the sequence number does not).
    SIPp replays it with the captured gaps, rewriting only the UDP ports and addresses."""
    spec = CODECS[codec]
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    seq = 0
    for i, body in enumerate(payloads):
        if body is None:
            continue
        marker = 0x80 if i == 0 or payloads[i - 1] is None else 0  # a talkspurt's first
        rtp = struct.pack("!BBHII", 0x80, marker | spec.pt, seq & 0xFFFF,
                          (i * spec.ts_step) & 0xFFFFFFFF, ssrc) + body
        seq += 1
        udp = struct.pack("!HHHH", port, port, 8 + len(rtp), 0) + rtp
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), seq & 0xFFFF, 0,
                                   64, 17, 0, bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])))
        csum = sum(struct.unpack("!10H", bytes(ip)))
        csum = (csum & 0xFFFF) + (csum >> 16)
        csum = (csum & 0xFFFF) + (csum >> 16)
        ip[10:12] = struct.pack("!H", ~csum & 0xFFFF)
        frame = b"\x00" * 12 + b"\x08\x00" + bytes(ip) + udp
        t = i * 0.02
        out.append(struct.pack("<IIII", int(t), int(round((t % 1) * 1e6)), len(frame),
                               len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))
    return path


_OPUS_BW = {0: "NB", 1: "MB", 2: "WB", 3: "SWB", 4: "FB"}


def _opus_bandwidth(toc: int) -> str:
    """The audio bandwidth a TOC byte names (RFC 6716 3.1)."""
    config = toc >> 3
    if config < 12:  # SILK
        return _OPUS_BW[config // 4]
    if config < 16:  # hybrid
        return "SWB" if config < 14 else "FB"
    return _OPUS_BW[{0: 0, 1: 2, 2: 3, 3: 4}[(config - 16) // 4]]  # CELT


def check_payloads(codec: str, streams: list[list[bytes]], per_stream: int = 50) -> str:
    """Are RTP payloads the node sent what ``codec`` makes? G.711 / G.722: 160 bytes each;
    Opus: the first ``per_stream`` of each stream decoded by libopus (one decoder a stream),
    with the audio bandwidths their TOC bytes name."""
    if codec != "opus":
        sizes = {len(p) for s in streams for p in s}
        return f"payload bytes {sorted(sizes)}"
    ok = bad = 0
    bws: dict[str, int] = {}
    for s in streams:
        dec = opus.Decoder()
        for p in s[:per_stream]:
            n = len(dec.decode(p))
            ok, bad = (ok + 1, bad) if n == opus.FRAME else (ok, bad + 1)
            bw = _opus_bandwidth(p[0])
            bws[bw] = bws.get(bw, 0) + 1
    return f"opus decoded {ok} ok / {bad} bad 20 ms frames, bandwidth {bws}"
