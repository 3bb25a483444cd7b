"""Loopback captures with dumpcap, and a small reader for the UDP packets (and TCP segments)
in them."""

from __future__ import annotations

import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class UdpPacket:
    t: float
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes


class Capture:
    """`dumpcap -i lo` with a BPF filter, written as classic pcap."""

    def __init__(self, path: Path, bpf: str):
        self.path = path
        self.bpf = bpf
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Capture:
        self.proc = subprocess.Popen(
            ["dumpcap", "-q", "-i", "lo", "-f", self.bpf, "-P", "-w", str(self.path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not self.path.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"dumpcap failed: {self.proc.stderr.read().decode()}")
            time.sleep(0.05)
        time.sleep(0.3)
        return self

    def __exit__(self, *exc) -> None:
        assert self.proc is not None
        time.sleep(0.2)
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def packets(self) -> Iterator[UdpPacket]:
        return read_udp(self.path)


def read_udp(path: Path) -> Iterator[UdpPacket]:
    return _read(path, 17)


def read_tcp(path: Path) -> Iterator[UdpPacket]:
    """The TCP segments with data (the same record: addresses and the segment's payload)."""
    return (p for p in _read(path, 6) if p.payload)


def _read(path: Path, proto: int) -> Iterator[UdpPacket]:
    data = path.read_bytes()
    if len(data) < 24:
        return
    magic = struct.unpack("<I", data[:4])[0]
    if magic in (0xA1B2C3D4, 0xA1B23C4D):
        endian = "<"
    elif magic in (0xD4C3B2A1, 0x4D3CB2A1):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap file")
    nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(endian + "IIII", data[off:off + 16])
        off += 16
        pkt = data[off:off + incl]
        off += incl
        t = sec + frac / (1e9 if nano else 1e6)
        if linktype == 1:  # Ethernet (Linux lo)
            if len(pkt) < 14 or pkt[12:14] != b"\x08\x00":
                continue
            ip = pkt[14:]
        elif linktype == 113:  # Linux cooked
            ip = pkt[16:]
        else:
            ip = pkt
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != proto:
            continue
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        seg = ip[ihl:total]
        head = 8 if proto == 17 else (seg[12] >> 4) * 4 if len(seg) >= 13 else 20
        if len(seg) < head:
            continue
        sport, dport = struct.unpack("!HH", seg[:4])
        src = ".".join(str(b) for b in ip[12:16])
        dst = ".".join(str(b) for b in ip[16:20])
        yield UdpPacket(t, (src, sport), (dst, dport), bytes(seg[head:]))


def telephone_events(packets: Iterator[UdpPacket], ports: tuple[int, int]) -> tuple[set[str], str]:
    """The RFC 4733 digits sent to a UDP port range, and a summary of everything the capture
    holds (packets per port range and payload type, digits seen anywhere) for a failure to
    show where the digits went instead."""
    lo, hi = ports
    digits: set[str] = set()
    elsewhere: dict[int, set[str]] = {}
    to_range: dict[tuple[int, int], int] = {}
    total = 0
    for p in packets:
        total += 1
        if len(p.payload) < 12:
            continue
        pt = p.payload[1] & 0x7F
        inside = lo <= p.dst[1] <= hi
        if inside:
            to_range[(pt, len(p.payload))] = to_range.get((pt, len(p.payload)), 0) + 1
        if len(p.payload) == 16 and 96 <= pt <= 127:
            code = p.payload[12]
            d = "0123456789*#ABCD"[code] if code < 16 else "?"
            (digits if inside else elsewhere.setdefault(p.dst[1], set())).add(d)
    summary = (f"{total} UDP packets captured; to ports {lo}-{hi} by (payload type, size): "
               f"{dict(sorted(to_range.items()))}; digits to other ports: {elsewhere}")
    return digits, summary

