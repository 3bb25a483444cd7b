"""Node configuration: one typed object built by the CLI (and by tests)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

LOG_LEVELS = ("debug", "info", "warning", "error")


def default_data_dir() -> str:
    """Where the node keeps state (the webhook spool): $SIPCONF_DATA_DIR, else the XDG state
    directory."""
    if os.environ.get("SIPCONF_DATA_DIR"):
        return os.environ["SIPCONF_DATA_DIR"]
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "state")
    return os.path.join(base, "sipconf")


@dataclass(frozen=True)
class NodeConfig:
    sip_host: str = "127.0.0.1"
    sip_port: int = 5080
    sip_tcp: bool = False
    answer_url: str | None = None
    answer_method: str = "POST"
    answer_timeout: float = 5.0
    rtp_port_min: int = 40000
    rtp_port_max: int = 40999
    max_calls: int = 500
    log_level: str = "info"
    mixer_clocks: int = max(1, min(4, os.cpu_count() or 1))
    media_threads: int = 1
    # Jitter buffer (ms): small, because the node adds as little delay as it can.
    jb_init_ms: int = 20
    jb_min_ms: int = 10
    jb_max_ms: int = 60
    opus_bitrate: int = 32000
    sound_fetch_timeout: float = 10.0
    sound_cache_bytes: int = 20 * 1024 * 1024
    # Webhooks: signing key, the spool's directory, how long and how patiently to retry.
    auth_token: str | None = None
    data_dir: str = field(default_factory=lambda: default_data_dir())
    webhook_ttl: float = 24 * 3600.0
    webhook_max_backoff: float = 30.0
    # The node's HTTP server (recordings); public_url is how your web app reaches it.
    http_host: str | None = None  # default: sip_host
    http_port: int = 8080
    public_url: str | None = None
    recording_retention_days: float = 0.0  # 0 = keep
    api_token: str | None = None  # the control API refuses every request without one

    def __post_init__(self) -> None:
        if not (0 < self.sip_port < 65536):
            raise ValueError(f"SIP port {self.sip_port} out of range")
        if not (0 < self.rtp_port_min <= self.rtp_port_max < 65536):
            raise ValueError(f"bad RTP port range {self.rtp_port_min}-{self.rtp_port_max}")
        if (self.rtp_port_max - self.rtp_port_min + 1) < 4:
            raise ValueError("RTP port range needs at least 4 ports")
        if self.answer_method not in ("GET", "POST"):
            raise ValueError(f"answer method must be GET or POST, not {self.answer_method!r}")
        if self.answer_timeout <= 0:
            raise ValueError("answer timeout must be positive")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}")
        if not (0 < self.http_port < 65536):
            raise ValueError(f"HTTP port {self.http_port} out of range")
        if self.webhook_ttl <= 0 or self.webhook_max_backoff <= 0:
            raise ValueError("webhook TTL and backoff must be positive")
        if not (1 <= self.max_calls <= 512):
            raise ValueError("max calls must be 1-512 (the pjproject build's PJSUA_MAX_CALLS)")

    @property
    def recordings_dir(self) -> str:
        return os.path.join(self.data_dir, "recordings")

    @property
    def http_bind(self) -> str:
        return self.http_host or self.sip_host

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.http_bind}:{self.http_port}").rstrip("/")

    @property
    def spool_path(self) -> str:
        return os.path.join(self.data_dir, "webhooks.sqlite")

    @property
    def pj_log_level(self) -> int:
        """pjlib's own console verbosity: quiet unless debugging."""
        return {"debug": 4, "info": 1, "warning": 1, "error": 0}[self.log_level]
