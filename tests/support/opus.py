"""libopus (the system's ``libopus0``, which pjproject's Opus codec links too) through ctypes:
an encoder and a decoder, 48 kHz mono, 20 ms frames, for tests and benchmarks that speak Opus
RTP themselves."""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np

RATE = 48000
FRAME = 960  # 20 ms at 48 kHz
_APPLICATION_VOIP = 2048
_SET_BITRATE = 4002
_SET_MAX_BANDWIDTH = 4004
_SET_DTX = 4016
_SET_COMPLEXITY = 4010
_SET_INBAND_FEC = 4012
_SET_PACKET_LOSS_PERC = 4014
BANDWIDTHS = {"wb": 1103, "fb": 1105}  # opus_defines.h

_lib = ctypes.CDLL(ctypes.util.find_library("opus") or "libopus.so.0")
_lib.opus_encoder_create.restype = ctypes.c_void_p
_lib.opus_encoder_create.argtypes = [ctypes.c_int32, ctypes.c_int, ctypes.c_int,
                                     ctypes.POINTER(ctypes.c_int)]
_lib.opus_encode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p,
                             ctypes.c_int32]
_lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
_lib.opus_decoder_create.restype = ctypes.c_void_p
_lib.opus_decoder_create.argtypes = [ctypes.c_int32, ctypes.c_int,
                                     ctypes.POINTER(ctypes.c_int)]
_lib.opus_decode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32, ctypes.c_void_p,
                             ctypes.c_int, ctypes.c_int]
_lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]


class Encoder:
    """One Opus encoder (VoIP application) at ``bitrate``, coding up to ``bandwidth``
    (``BANDWIDTHS``: wb for a peer whose maxplaybackrate is 16000); with ``dtx`` a frame the
    encoder finds silent comes out as a payload of 2 bytes or less, not to be sent (a packet
    each 400 ms keeps the stream alive); with ``fec_loss_pct`` each packet also carries the
    one before it coarsely (in-band FEC, tuned for that much loss). ``rate``: of the PCM in."""

    def __init__(self, bitrate: int = 32000, bandwidth: str = "fb", dtx: bool = False,
                 complexity: int | None = None, fec_loss_pct: int = 0, rate: int = RATE):
        err = ctypes.c_int()
        self.frame = rate // 50
        self._st = _lib.opus_encoder_create(rate, 1, _APPLICATION_VOIP, ctypes.byref(err))
        if err.value != 0 or not self._st:
            raise RuntimeError(f"opus_encoder_create: {err.value}")
        _lib.opus_encoder_ctl(ctypes.c_void_p(self._st), ctypes.c_int(_SET_BITRATE),
                              ctypes.c_int32(bitrate))
        _lib.opus_encoder_ctl(ctypes.c_void_p(self._st), ctypes.c_int(_SET_MAX_BANDWIDTH),
                              ctypes.c_int32(BANDWIDTHS[bandwidth]))
        _lib.opus_encoder_ctl(ctypes.c_void_p(self._st), ctypes.c_int(_SET_DTX),
                              ctypes.c_int32(1 if dtx else 0))
        if complexity is not None:
            _lib.opus_encoder_ctl(ctypes.c_void_p(self._st), ctypes.c_int(_SET_COMPLEXITY),
                                  ctypes.c_int32(complexity))
        if fec_loss_pct:
            for ctl, v in ((_SET_INBAND_FEC, 1), (_SET_PACKET_LOSS_PERC, fec_loss_pct)):
                _lib.opus_encoder_ctl(ctypes.c_void_p(self._st), ctypes.c_int(ctl),
                                      ctypes.c_int32(v))
        self._out = ctypes.create_string_buffer(1500)

    def encode(self, frame: np.ndarray) -> bytes:
        """One 20 ms frame (960 int16 samples at 48 kHz) into a payload."""
        f = np.ascontiguousarray(frame, dtype="<i2")
        k = _lib.opus_encode(self._st, f.ctypes.data, self.frame, self._out, 1500)
        if k < 0:
            raise RuntimeError(f"opus_encode: {k}")
        return self._out.raw[:k]

    def __del__(self):
        if getattr(self, "_st", None):
            _lib.opus_encoder_destroy(self._st)
            self._st = None


class Decoder:
    """One Opus decoder: a stream's payloads in order (None for a lost one) to PCM at
    ``rate`` (48 kHz unless told)."""

    def __init__(self, rate: int = RATE):
        err = ctypes.c_int()
        self.frame = rate // 50
        self._st = _lib.opus_decoder_create(rate, 1, ctypes.byref(err))
        if err.value != 0 or not self._st:
            raise RuntimeError(f"opus_decoder_create: {err.value}")
        self._pcm = (ctypes.c_int16 * 5760)()

    def decode(self, payload: bytes | None, fec: bool = False) -> np.ndarray:
        """The frame's samples (empty if the payload does not decode); None: concealed.
        ``fec``: the frame *before* ``payload``, from its in-band FEC (concealed if it has
        none)."""
        n = _lib.opus_decode(self._st, payload, len(payload) if payload else 0, self._pcm,
                             self.frame if (fec or not payload) else 5760, int(fec))
        return np.frombuffer(bytes(self._pcm)[:max(n, 0) * 2], dtype="<i2").copy()

    def __del__(self):
        if getattr(self, "_st", None):
            _lib.opus_decoder_destroy(self._st)
            self._st = None


def has_lbrr(payload: bytes) -> bool | None:
    """Whether a mono, one-frame SILK or hybrid packet carries in-band FEC (the previous frame,
    coarsely: SILK's LBRR flag, RFC 6716 4.2.3, the range coder's second bit after the VAD
    flag); None for other packets (CELT, several frames, too short). libopus 1.3 has no call
    for it."""
    if len(payload) < 2 or payload[0] >> 3 >= 16 or payload[0] & 0x07:
        return None  # CELT-only, stereo or not one frame
    data = payload[1:]
    pos = [0]

    def byte() -> int:
        b = data[pos[0]] if pos[0] < len(data) else 0
        pos[0] += 1
        return b

    rem = byte()
    rng, val = 128, 127 - (rem >> 1)

    def normalize() -> None:
        nonlocal rng, val, rem
        while rng <= 1 << 23:
            rng <<= 8
            sym, rem = rem, byte()
            sym = ((sym << 8) | rem) >> 1
            val = ((val << 8) + (255 & ~sym)) & ((1 << 31) - 1)

    normalize()

    def bit() -> int:  # ec_dec_bit_logp(dec, 1)
        nonlocal rng, val
        s = rng >> 1
        one = val < s
        if not one:
            val -= s
        rng = s if one else rng - s
        normalize()
        return int(one)

    bit()  # the frame's VAD flag
    return bool(bit())
