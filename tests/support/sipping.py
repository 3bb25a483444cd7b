"""Is a SIP server up? An OPTIONS ping, and waiting for a started process to answer it."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid


def options_ok(host: str, port: int, timeout: float = 0.2) -> bool:
    """Does ``host:port`` answer a SIP OPTIONS with 200?"""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(timeout)
        me = s.getsockname()[1]
        msg = (
            f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK-{uuid.uuid4().hex}\r\n"
            f"From: <sip:probe@127.0.0.1>;tag=probe\r\nTo: <sip:{host}:{port}>\r\n"
            f"Call-ID: {uuid.uuid4().hex}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        s.sendto(msg.encode(), (host, port))
        try:
            return s.recv(4096).startswith(b"SIP/2.0 200")
        except OSError:
            return False


def wait_answering(proc: subprocess.Popen, host: str, port: int, timeout: float) -> bool:
    """Poll until the process answers OPTIONS (True) or exits or the time is up (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if options_ok(host, port):
            return True
        time.sleep(0.1)
    return False
