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
    each 400 ms keeps the stream alive)."""

    def __init__(self, bitrate: int = 32000, bandwidth: str = "fb", dtx: bool = False,
                 complexity: int | None = None):
        err = ctypes.c_int()
        self._st = _lib.opus_encoder_create(RATE, 1, _APPLICATION_VOIP, ctypes.byref(err))
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
        self._out = ctypes.create_string_buffer(1500)

    def encode(self, frame: np.ndarray) -> bytes:
        """One 20 ms frame (960 int16 samples) into a payload."""
        f = np.ascontiguousarray(frame, dtype="<i2")
        k = _lib.opus_encode(self._st, f.ctypes.data, FRAME, self._out, 1500)
        if k < 0:
            raise RuntimeError(f"opus_encode: {k}")
        return self._out.raw[:k]

    def __del__(self):
        if getattr(self, "_st", None):
            _lib.opus_encoder_destroy(self._st)
            self._st = None


class Decoder:
    """One Opus decoder: a stream's payloads in order (None for a lost one) to 48 kHz PCM."""

    def __init__(self):
        err = ctypes.c_int()
        self._st = _lib.opus_decoder_create(RATE, 1, ctypes.byref(err))
        if err.value != 0 or not self._st:
            raise RuntimeError(f"opus_decoder_create: {err.value}")
        self._pcm = (ctypes.c_int16 * 5760)()

    def decode(self, payload: bytes | None) -> np.ndarray:
        """The frame's samples (empty if the payload does not decode)."""
        n = _lib.opus_decode(self._st, payload, len(payload) if payload else 0, self._pcm,
                             5760 if payload else FRAME, 0)
        return np.frombuffer(bytes(self._pcm)[:max(n, 0) * 2], dtype="<i2").copy()

    def __del__(self):
        if getattr(self, "_st", None):
            _lib.opus_decoder_destroy(self._st)
            self._st = None
