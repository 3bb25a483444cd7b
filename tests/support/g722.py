"""spandsp's G.722 (the system's ``libspandsp2``, which baresip's G.722 module links too)
through ctypes: an encoder and a decoder at 64 kbit/s, 16 kHz PCM, for tests and benchmarks
that speak G.722 RTP themselves. One state each: G.722 is ADPCM, so a stream is coded and
decoded in order by one object."""

from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np

_lib = ctypes.CDLL(ctypes.util.find_library("spandsp") or "libspandsp.so.2")
for _side in ("encode", "decode"):
    getattr(_lib, f"g722_{_side}_init").restype = ctypes.c_void_p
    getattr(_lib, f"g722_{_side}_init").argtypes = [ctypes.c_void_p, ctypes.c_int,
                                                   ctypes.c_int]
    getattr(_lib, f"g722_{_side}_free").argtypes = [ctypes.c_void_p]
_lib.g722_encode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
_lib.g722_decode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]


class _State:
    _side = ""

    def __init__(self) -> None:
        self._st = getattr(_lib, f"g722_{self._side}_init")(None, 64000, 0)
        if not self._st:
            raise RuntimeError(f"g722_{self._side}_init failed")

    def __del__(self) -> None:
        if getattr(self, "_st", None):
            getattr(_lib, f"g722_{self._side}_free")(self._st)
            self._st = None


class Encoder(_State):
    """16 kHz int16 PCM in, G.722 bytes out (one byte for two samples)."""

    _side = "encode"

    def encode(self, pcm: np.ndarray) -> bytes:
        pcm = np.ascontiguousarray(pcm, dtype="<i2")
        out = ctypes.create_string_buffer(len(pcm) // 2 + 1)
        n = _lib.g722_encode(self._st, out, pcm.ctypes.data, len(pcm))
        return out.raw[:n]


class Decoder(_State):
    """G.722 bytes in, 16 kHz int16 PCM out."""

    _side = "decode"

    def decode(self, payload: bytes) -> np.ndarray:
        out = np.zeros(2 * len(payload), dtype="<i2")
        n = _lib.g722_decode(self._st, out.ctypes.data, payload, len(payload))
        return out[:n]
