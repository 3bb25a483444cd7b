"""A real Kamailio (Debian's) on loopback, started and stopped by a test."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from .sipping import wait_answering

CONFIGS = Path(__file__).parent.parent / "kamailio"


class Kamailio:
    def __init__(self, workdir: Path, cfg: Path, host: str, port: int,
                 defines: dict[str, str] | None = None):
        self.dir = workdir / f"kamailio-{port}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host, self.port = host, port
        self.ctl = f"unix:{self.dir}/ctl"
        self.log_path = self.dir / "kamailio.log"
        defs = {"CTL_SOCKET": f'"{self.ctl}"', **(defines or {})}
        self.args = ["kamailio", "-f", str(cfg), "-DD", "-E", "-Y", str(self.dir),
                     "-l", f"udp:{host}:{port}"]
        for key, value in defs.items():
            self.args += ["-A", f"{key}={value}"]
        self.proc: subprocess.Popen | None = None

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> Kamailio:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        if wait_answering(self.proc, self.host, self.port, timeout):
            return self
        self.stop()
        raise RuntimeError(f"kamailio did not start:\n{self.log()[-3000:]}")

    def rpc(self, *cmd: str) -> str:
        out = subprocess.run(["kamcmd", "-s", self.ctl, *cmd], capture_output=True, text=True,
                             timeout=10)
        return out.stdout + out.stderr

    def contacts(self, aor: str = "sipconf") -> list[str]:
        """The contacts registered for an AoR now (empty when none)."""
        out = self.rpc("ul.lookup", "location", aor)
        return re.findall(r"Address:\s*(\S+)", out)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            self._log.close()
            self.proc = None


def start_pbx(workdir: Path, password: str) -> Kamailio:
    """The registrar/PBX of tests/kamailio/pbx.cfg on 127.0.0.2, with this digest password."""
    from . import ports

    return Kamailio(workdir, CONFIGS / "pbx.cfg", "127.0.0.2", ports.block(1),
                    {"PBX_PASSWORD": f'"{password}"'}).start()
