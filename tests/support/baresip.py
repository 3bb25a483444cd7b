"""A real softphone for end-to-end tests: baresip 1.0, headless, one config dir per UA.

Its microphone is a WAV file (aufile), what it hears is dumped by sndfile as dump-*-dec.wav,
and run-time commands (/sndcode, /hangup, /quit) go to its cons module over UDP.
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from . import ports
from .audio import write_tone_wav

MODULES = "/usr/lib/baresip/modules"


class BaresipUA:
    def __init__(self, workdir: Path, name: str, tone_hz: float | None = None,
                 codecs: str = "PCMU,PCMA", mic_seconds: float = 60.0,
                 mic_wav: Path | None = None, tls_ca: Path | None = None,
                 mediaenc: str | None = None, extra_conf: tuple[str, ...] = ()):
        """``extra_conf``: more lines for its config (e.g. ``opus_packet_loss 10``);
        ``tls_ca``: SIP over TLS (dial a ``;transport=tls`` URI), trusting that CA file;
        ``mediaenc``: baresip's media encryption, e.g. ``srtp-mand`` (RTP/SAVP with SDES
        keys) or ``srtp`` (RTP/AVP with keys offered)."""
        self.name = name
        self.dir = workdir / f"ua-{name}"
        self.dir.mkdir(parents=True, exist_ok=True)
        base = ports.block(20)
        self.sip_port = base  # baresip also takes base + 1 (SIP over TLS)
        self.cons_port = base + 2
        # the ports baresip's RTP and RTCP may use: `rtp_ports` says base+4..base+19, but it
        # can put RTP one below (seen in CI: RTP on base+3, RTCP on base+4), and a capture
        # filtered on the configured range alone then missed every RTP packet to this UA
        self.rtp = (base + 3, base + 19)
        if mic_wav is None:
            # baresip 1.0's aufile does not resample: the WAV runs at the codec's rate.
            first = codecs.split(",")[0].strip().upper()
            rate = {"G722": 16000, "OPUS": 48000}.get(first, 8000)
            mic_wav = write_tone_wav(self.dir / "mic.wav", tone_hz or 0.0, mic_seconds, rate)
        self.mic = mic_wav
        self.codecs = codecs
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "baresip.log"
        # Only the codec modules asked for are loaded, so the UA can offer nothing else.
        wanted = {c.strip().upper() for c in codecs.split(",")}
        mods = []
        if wanted & {"PCMU", "PCMA"}:
            mods.append("g711.so")
        if "G722" in wanted:
            mods.append("g722.so")
        if "OPUS" in wanted:
            mods.append("opus.so")
        mods += ["aufile.so", "sndfile.so", "cons.so"]
        if mediaenc:
            mods.append("srtp.so")
        conf = [
            "poll_method epoll",
            f"sip_listen 127.0.0.1:{self.sip_port}",
            "net_interface 127.0.0.1",
            f"rtp_ports {base + 4}-{base + 19}",
            "rtp_timeout 0",
            "jitter_buffer_delay 1-10",
            "audio_buffer 20-160",
            f"audio_source aufile,{self.mic}",
            "audio_player",
            f"module_path {MODULES}",
            *[f"module {m}" for m in mods],
            "module_app account.so",
            "module_app menu.so",
            f"snd_path {self.dir}",
            f"cons_listen 127.0.0.1:{self.cons_port}",
            "opus_stereo no",
            "opus_sprop_stereo no",
            *([f"sip_cafile {tls_ca}"] if tls_ca else []),
            *extra_conf,
        ]
        (self.dir / "config").write_text("\n".join(conf) + "\n")
        (self.dir / "accounts").write_text(
            f"<sip:{name}@127.0.0.1:{self.sip_port}{';transport=tls' if tls_ca else ''}>"
            f";regint=0;audio_codecs={codecs}{f';mediaenc={mediaenc}' if mediaenc else ''}\n"
        )

    def dial(self, uri: str, seconds: float = 30.0) -> BaresipUA:
        return self._start(["-e", f"/dial {uri}"], seconds)

    def listen(self, seconds: float = 30.0) -> BaresipUA:
        """Wait for a call (at ``uri``) and answer it at once (account answermode=auto)."""
        accounts = self.dir / "accounts"
        line = accounts.read_text().strip()
        if "answermode=auto" not in line:
            accounts.write_text(line + ";answermode=auto\n")
        return self._start([], seconds)

    @property
    def uri(self) -> str:
        return f"sip:{self.name}@127.0.0.1:{self.sip_port}"

    def _start(self, args: list[str], seconds: float) -> BaresipUA:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            ["baresip", "-4", "-s", "-f", str(self.dir), *args, "-t", str(int(seconds))],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=self.dir,
        )
        return self

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for(self, text: str, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if self.proc is not None and self.proc.poll() is not None:
                return text in self.output()
            time.sleep(0.05)
        return False

    @property
    def established(self) -> bool:
        return "Call established" in self.output()

    @property
    def terminated(self) -> bool:
        out = self.output()
        return "terminated" in out or "session closed" in out

    def command(self, line: str) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto((line + "\n").encode(), ("127.0.0.1", self.cons_port))

    def hangup(self) -> None:
        self.command("/hangup")

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.command("/quit")
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout)
        self._log.close()

    def heard(self) -> Path:
        """The WAV of what this UA received (decoded)."""
        dumps = sorted(self.dir.glob("dump-*-dec.wav"))
        if not dumps:
            raise AssertionError(f"UA {self.name} recorded nothing; log:\n{self.output()[-2000:]}")
        return dumps[-1]
