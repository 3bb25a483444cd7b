"""The node under test, as a real process (`python -m sipconf serve`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from . import ports
from .sipping import options_ok, wait_answering


class NodeProcess:
    def __init__(self, workdir: Path, answer_url: str | None = None, rtp_ports: int = 200,
                 extra: list[str] | None = None, data_dir: Path | None = None,
                 sip_port: int | None = None):
        self.workdir = workdir
        self.sip_port = sip_port or ports.block(2)
        self.http_port = ports.block(1)
        base = ports.block(rtp_ports)
        self.rtp = (base, base + rtp_ports - 1)
        self.log_path = workdir / f"node-{self.sip_port}.log"
        self.args = [
            sys.executable, "-m", "sipconf", "serve",
            "--sip-host", "127.0.0.1", "--sip-port", str(self.sip_port),
            "--rtp-ports", f"{self.rtp[0]}-{self.rtp[1]}",
            "--data-dir", str(data_dir or workdir / f"data-{self.sip_port}"),
            "--http-port", str(self.http_port),
        ]
        if answer_url:
            self.args += ["--answer-url", answer_url]
        self.args += extra or []
        self.proc: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def api(self, token: str) -> httpx.Client:
        """A client for the node's control API with that bearer token."""
        return httpx.Client(base_url=self.http_url, timeout=10,
                            headers={"Authorization": f"Bearer {token}"})

    def members(self, token: str, room: str) -> list[dict]:
        """The room's members (none if there is no such room)."""
        with self.api(token) as api:
            r = api.get(f"/v1/rooms/{room}")
        return r.json()["members"] if r.status_code == 200 else []

    def uri(self, user: str) -> str:
        return f"sip:{user}@127.0.0.1:{self.sip_port}"

    def start(self, timeout: float = 15.0) -> NodeProcess:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
        )
        if wait_answering(self.proc, "127.0.0.1", self.sip_port, timeout):
            return self
        self.kill()
        raise RuntimeError(f"node did not start:\n{self.log()[-3000:]}")

    def options_ok(self, timeout: float = 0.2) -> bool:
        """Does the node answer a SIP OPTIONS with 200 (whatever its log level)?"""
        return options_ok("127.0.0.1", self.sip_port, timeout)

    def metrics(self) -> dict[str, float]:
        """The node's /metrics, scraped: {'name{labels}': value}."""
        import httpx

        r = httpx.get(f"{self.http_url}/metrics", timeout=10)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        out = {}
        for line in r.text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout: float = 10.0) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds it took)."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = -9
        self._log.close()
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
