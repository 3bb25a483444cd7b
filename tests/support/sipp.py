"""SIPp runs for tests and benchmarks, bounded in time."""

from __future__ import annotations

import subprocess
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


def run(workdir: Path, target: str, scenario_name: str, rows: list[list[str]], calls: int,
        subs: dict[str, str] | None = None, concurrent: int | None = None, rate: int = 10,
        timeout: float = 60.0, extra: list[str] | None = None) -> SippResult:
    base = ports.block(4)
    csv = write_csv(workdir / f"sipp-{base}.csv", rows)
    sf = scenario(workdir, scenario_name, subs or {})
    cmd = [
        "sipp", target, "-sf", str(sf), "-inf", str(csv),
        "-i", "127.0.0.1", "-p", str(base), "-mi", "127.0.0.1", "-mp", str(base + 2),
        "-m", str(calls), "-l", str(concurrent or calls), "-r", str(rate),
        "-timeout", f"{int(timeout)}s", "-timeout_error", "-nostdin", "-nd",
        "-trace_err", "-error_file", str(workdir / f"sipp-{base}-errors.log"),
        "-trace_logs", "-log_file", str(workdir / f"sipp-{base}-logs.log"),
        "-trace_stat", "-stf", str(workdir / f"sipp-{base}-stat.csv"),
    ]
    cmd += extra or []
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30,
                          cwd=workdir)
    out = proc.stdout + proc.stderr
    for name in (f"sipp-{base}-errors.log", f"sipp-{base}-logs.log"):
        p = workdir / name
        if p.exists():
            out += f"\n--- {name}\n" + p.read_text(errors="replace")[-4000:]
    ok, failed = _counts(workdir / f"sipp-{base}-stat.csv")
    return SippResult(proc.returncode, ok, failed, out, base + 2)


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
