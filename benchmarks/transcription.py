"""Transcription accuracy: known sentences spoken by espeak-ng into a recorded room through a
real node and a baresip caller (G.722 and PCMU), transcribed by the node; word error rate.

Run: python benchmarks/transcription.py   (prints a table; not a test)
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from support.answer_server import AnswerServer  # noqa: E402
from support.baresip import BaresipUA  # noqa: E402
from support.node import NodeProcess  # noqa: E402
from support.waiting import word_errors  # noqa: E402

SENTENCES = [
    "please call me back tomorrow morning at the office",
    "the meeting starts at nine and ends before lunch",
    "we need three more people on the support team",
    "send the report to the finance department today",
    "the weather will be cold and windy this weekend",
]


def run_one(work: Path, server: AnswerServer, node: NodeProcess, codec: str, n: int,
            text: str) -> str:
    rate = 16000 if codec == "G722" else 8000
    wav, mic = work / f"s{n}.wav", work / f"mic-{codec}-{n}.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "110", "-w", str(wav), text], check=True,
                   timeout=30)
    subprocess.run(["sox", str(wav), "-r", str(rate), "-c", "1", "-b", "16", str(mic),
                    "pad", "1", "20"], check=True, timeout=30)
    before = len(server.requests_to("/tx"))
    ua = BaresipUA(work, f"{codec.lower()}{n}", mic_wav=mic, codecs=codec)
    ua.dial(node.uri(f"tx-{codec}-{n}"), 30)
    try:
        if not ua.wait_for("Call established", 10):
            return "<no call>"
        time.sleep(float(subprocess.run(["soxi", "-D", str(wav)], capture_output=True,
                                        text=True).stdout) + 2)
    finally:
        ua.stop()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(server.requests_to("/tx")) == before:
        time.sleep(0.2)
    got = server.requests_to("/tx")[before:]
    return got[0].params.get("transcription", "") if got else "<no transcription>"


def main() -> None:
    server = AnswerServer().start()
    tx = server.route("/tx", "ok", content_type="text/plain")
    url = server.route("/answer", "")
    server.routes["/answer"].body = (
        f'<Response><Conference record="true" recordFileFormat="wav" transcriptionType="auto" '
        f'transcriptionUrl="{tx}">tx</Conference></Response>')
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        node = NodeProcess(work, url).start()
        try:
            print(f"{'codec':<6} {'WER':>5}  transcription")
            for codec in ("G722", "PCMU"):
                edits = words = 0
                for n, text in enumerate(SENTENCES):
                    hyp = run_one(work, server, node, codec, n, text)
                    e, w = word_errors(text, hyp)
                    edits, words = edits + e, words + w
                    print(f"{codec:<6} {e / w:>5.2f}  {hyp!r}")
                print(f"{codec:<6} {edits / words:>5.2f}  overall ({words} words)")
        finally:
            node.terminate()
            server.stop()


if __name__ == "__main__":
    main()
