"""SIPp runs for tests and benchmarks, bounded in time."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from . import ports

SCENARIOS = Path(__file__).parent.parent / "sipp"


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    output: str
    media_port: int


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("SEQUENTIAL\n" + "".join(";".join(r) + ";\n" for r in rows))
    return path


def scenario(workdir: Path, name: str, subs: dict[str, str]) -> Path:
    """A scenario from tests/sipp with its @@NAME@@ placeholders filled in (SIPp does not
    expand CSV fields inside attributes such as rtp_stream or response codes)."""
    text = (SCENARIOS / name).read_text()
    for key, value in subs.items():
        text = text.replace(f"@@{key}@@", str(value))
    if "@@" in text:
        raise ValueError(f"{name}: unfilled placeholder in {text[text.index('@@'):][:40]!r}")
    path = workdir / f"{Path(name).stem}-{abs(hash(tuple(sorted(subs.items()))))}.xml"
    path.write_text(text)
    return path


def _args(workdir: Path, base: int, sf: Path, timeout: float) -> list[str]:
    """SIPp's options common to every run: addresses, bounds, the files it writes."""
    return [
        "-sf", str(sf), "-i", "127.0.0.1", "-p", str(base), "-mi", "127.0.0.1",
        "-mp", str(base + 2), "-timeout", f"{int(timeout)}s", "-timeout_error", "-nostdin",
        "-nd", "-trace_err", "-error_file", str(workdir / f"sipp-{base}-errors.log"),
        "-trace_logs", "-log_file", str(workdir / f"sipp-{base}-logs.log"),
        "-trace_stat", "-stf", str(workdir / f"sipp-{base}-stat.csv"),
    ]


def _result(workdir: Path, base: int, returncode: int, out: str) -> SippResult:
    for name in (f"sipp-{base}-errors.log", f"sipp-{base}-logs.log"):
        p = workdir / name
        if p.exists():
            out += f"\n--- {name}\n" + p.read_text(errors="replace")[-4000:]
    ok, failed = _counts(workdir / f"sipp-{base}-stat.csv")
    return SippResult(returncode, ok, failed, out, base + 2)


def run(workdir: Path, target: str, scenario_name: str, rows: list[list[str]], calls: int,
        subs: dict[str, str] | None = None, concurrent: int | None = None, rate: int = 10,
        timeout: float = 60.0, extra: list[str] | None = None) -> SippResult:
    base = ports.block(4)
    csv = write_csv(workdir / f"sipp-{base}.csv", rows)
    sf = scenario(workdir, scenario_name, subs or {})
    cmd = ["sipp", target, "-inf", str(csv), *_args(workdir, base, sf, timeout),
           "-m", str(calls), "-l", str(concurrent or calls), "-r", str(rate)]
    cmd += extra or []
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30,
                          cwd=workdir)
    return _result(workdir, base, proc.returncode, proc.stdout + proc.stderr)


class Uas:
    """SIPp as a callee, in the background: INVITEs to ``uri(user)`` run the scenario (at
    most ``calls`` of them; it exits after them, or after ``timeout`` seconds)."""

    def __init__(self, workdir: Path, scenario_name: str, subs: dict[str, str] | None = None,
                 calls: int = 1, timeout: float = 60.0):
        self.workdir, self.base, self.timeout = workdir, ports.block(4), timeout
        self.media_port = self.base + 2
        sf = scenario(workdir, scenario_name, subs or {})
        self._out = open(workdir / f"sipp-{self.base}-out.txt", "w+")
        self.proc = subprocess.Popen(["sipp", *_args(workdir, self.base, sf, timeout),
                                      "-m", str(calls)], stdout=self._out,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     cwd=workdir)
        time.sleep(0.3)  # listening

    def uri(self, user: str = "callee") -> str:
        return f"sip:{user}@127.0.0.1:{self.base}"

    def wait(self, timeout: float | None = None) -> SippResult:
        """Its result once it has run its calls (killed past ``timeout``)."""
        try:
            self.proc.wait(self.timeout + 10 if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.stop()
        self._out.seek(0)
        return _result(self.workdir, self.base, self.proc.returncode or 0, self._out.read())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def _counts(stat: Path) -> tuple[int, int]:
    if not stat.exists():
        return 0, 0
    lines = [ln for ln in stat.read_text().splitlines() if ln.strip()]
    if len(lines) < 2:
        return 0, 0
    head = lines[0].split(";")
    last = lines[-1].split(";")
    col = {h: i for i, h in enumerate(head)}
    return int(last[col["SuccessfulCall(C)"]]), int(last[col["FailedCall(C)"]])


class Uac:
    """SIPp placing ``len(rows)`` calls in the background (all up at once, ``rate`` a second),
    so that its process can be measured while they run; ``wait`` gives the result (killed past
    ``timeout``). Its port block is 8 wide: SIPp also binds the media port + 2 (video), which
    a 4-port block would share with the next block's SIP port when two start together."""

    def __init__(self, workdir: Path, target: str, scenario_name: str, rows: list[list[str]],
                 subs: dict[str, str] | None = None, rate: int = 10, timeout: float = 60.0):
        self.workdir, self.base, self.timeout = workdir, ports.block(8), timeout
        self.media_port = self.base + 2
        csv = write_csv(workdir / f"sipp-{self.base}.csv", rows)
        sf = scenario(workdir, scenario_name, subs or {})
        self._out = open(workdir / f"sipp-{self.base}-out.txt", "w+")
        self.proc = subprocess.Popen(
            ["sipp", target, "-inf", str(csv), *_args(workdir, self.base, sf, timeout),
             "-m", str(len(rows)), "-l", str(len(rows)), "-r", str(rate)],
            stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)

    def wait(self, timeout: float | None = None) -> SippResult:
        try:
            self.proc.wait(self.timeout + 30 if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._out.seek(0)
        res = _result(self.workdir, self.base, self.proc.returncode or 0, self._out.read())
        self._out.close()
        return res
