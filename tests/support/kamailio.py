"""A real Kamailio (Debian's) on loopback, started and stopped by a test."""

from __future__ import annotations

import re
import socket
import subprocess
import time
import uuid
from pathlib import Path

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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.options_ok():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"kamailio did not start:\n{self.log()[-3000:]}")

    def options_ok(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            s.settimeout(0.2)
            me = s.getsockname()[1]
            msg = (f"OPTIONS sip:{self.hostport} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-{uuid.uuid4().hex}\r\n"
                   f"From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:{self.hostport}>\r\n"
                   f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                   "Content-Length: 0\r\n\r\n")
            s.sendto(msg.encode(), (self.host, self.port))
            try:
                return s.recv(4096).startswith(b"SIP/2.0 200")
            except OSError:
                return False

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
