"""Offline transcription of a recording with pocketsphinx (its bundled en-US model).

Run as a separate process (``python -m sipconf.media.transcribe FILE``) so decoding never competes
with the node's threads for the GIL; prints one JSON object: ``{"text": ..., "duration": ...}``
or ``{"error": ...}``.
"""

from __future__ import annotations

import json
import sys

RATE = 16000


def decode_audio(path: str):
    import miniaudio

    snd = miniaudio.decode_file(path, output_format=miniaudio.SampleFormat.SIGNED16,
                                nchannels=1, sample_rate=RATE)
    return snd.samples.tobytes(), snd.num_frames / RATE


def transcribe(path: str) -> dict:
    from pocketsphinx import Decoder

    pcm, duration = decode_audio(path)
    decoder = Decoder(samprate=RATE, loglevel="FATAL")
    decoder.start_utt()
    decoder.process_raw(pcm, full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    return {"text": hyp.hypstr if hyp is not None else "", "duration": round(duration, 3)}


def main(argv: list[str]) -> int:
    try:
        out = transcribe(argv[1])
    except Exception as exc:  # noqa: BLE001 - reported to the receiver as `error`
        out = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
