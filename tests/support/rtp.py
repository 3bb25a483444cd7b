"""Raw RTP for tests that control every packet: a PCMU sender paced in real time (or not),
and a receiver thread keeping every datagram with its arrival time."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time

import numpy as np

from .audio import ulaw_decode, ulaw_encode


class RtpSender:
    """One RTP stream (SSRC, sequence, timestamp), PCMU, 20 ms packets, paced in real time."""

    def __init__(self, ssrc: int):
        self.ssrc = ssrc
        self.seq = random.randrange(1 << 16)
        self.ts = random.randrange(1 << 32)
        self.started = time.monotonic()
        self.sent = 0

    def packet(self, payload: bytes, marker: bool = False) -> bytes:
        hdr = struct.pack("!BBHII", 0x80, (0x80 if marker else 0), self.seq & 0xFFFF,
                          self.ts & 0xFFFFFFFF, self.ssrc)
        self.seq += 1
        self.ts += 160
        return hdr + payload

    def send(self, sock: socket.socket, dest, freq: float | None, seconds: float) -> None:
        n = int(seconds / 0.02)
        t = np.arange(n * 160) / 8000
        pcm = (np.zeros(n * 160) if freq is None
               else 0.25 * 32767 * np.sin(2 * np.pi * freq * t))
        start = time.monotonic()
        for i in range(n):
            sock.sendto(self.packet(ulaw_encode(pcm[i * 160:(i + 1) * 160]), i == 0), dest)
            self.sent += 1
            delay = start + (i + 1) * 0.02 - time.monotonic()
            if delay > 0:
                time.sleep(delay)


class Receiver(threading.Thread):
    """Everything that reaches a socket: (time, source, bytes)."""

    def __init__(self, sock: socket.socket):
        super().__init__(daemon=True)
        self.sock = sock
        self.got: list[tuple[float, tuple, bytes]] = []
        self.stopping = False
        sock.settimeout(0.1)

    def run(self) -> None:
        while not self.stopping:
            try:
                data, src = self.sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            self.got.append((time.monotonic(), src, data))

    def stop(self) -> None:
        self.stopping = True
        self.join(2)

    def pcmu_after(self, t0: float) -> np.ndarray:
        return np.concatenate([ulaw_decode(d[12:]) for t, _, d in self.got
                               if t >= t0 and len(d) > 12 and d[1] & 0x7F == 0]
                              or [np.zeros(0)]).astype(np.float64)


def udp_socket(host: str = "127.0.0.1") -> socket.socket:
    """A UDP socket on ``host``, any port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    return s


def close_all(receivers, ua, socket_pairs) -> None:
    """A raw-RTP test's cleanup: its receivers stopped, its calls ended (``ua.close()``), its
    sockets closed."""
    for rx in receivers:
        rx.stop()
    ua.close()
    for pair in socket_pairs:
        for s in pair:
            s.close()


def loud_pcmu(got, t0: float, t1: float, level: float = 2000) -> tuple[float | None, int]:
    """Of the PCMU packets received (``Receiver.got``) from ``t0`` to ``t1``: ms from ``t0``
    to the first sample over ``level`` leaving the node (a packet's last sample left it at its
    arrival, less the loopback's transit), or None; and how many packets had such a sample."""
    first, loud = None, 0
    for t, _src, data in got:
        if not t0 <= t <= t1 or len(data) <= 12 or data[1] & 0x7F != 0:
            continue
        pcm = ulaw_decode(data[12:]).astype(np.float64)
        hot = np.flatnonzero(np.abs(pcm) > level)
        if len(hot):
            loud += 1
            if first is None:
                first = (t - t0) * 1000 - (len(pcm) - hot[0]) / 8
    return first, loud
