"""Node configuration: one typed object built by the CLI (and by tests)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .access import DEFAULT_TRUST, parse_networks
from .registration import RegisterTarget

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
    http_host: str | None = None  # default 127.0.0.1: the control API is not for the world
    http_port: int = 8080
    public_url: str | None = None
    recording_retention_days: float = 0.0  # 0 = keep
    api_token: str | None = None  # the control API refuses every request without one
    log_format: str = "text"  # or "json": one JSON object per line
    # Registration on a PBX (sip:USER@PBX[:PORT]) with digest credentials.
    register: str | None = None
    auth_user: str | None = None  # default: the register URI's user
    auth_password: str | None = None
    register_expires: int = 120
    # Who may call: networks (CIDR) the node takes calls from; the registrar is added to them.
    trust: tuple[str, ...] = DEFAULT_TRUST

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
        if self.log_format not in ("text", "json"):
            raise ValueError("log format must be text or json")
        if self.log_level not in LOG_LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}")
        if not (0 < self.http_port < 65536):
            raise ValueError(f"HTTP port {self.http_port} out of range")
        if self.webhook_ttl <= 0 or self.webhook_max_backoff <= 0:
            raise ValueError("webhook TTL and backoff must be positive")
        if not (1 <= self.max_calls <= 512):
            raise ValueError("max calls must be 1-512 (the pjproject build's PJSUA_MAX_CALLS)")
        if self.register is not None:
            RegisterTarget.parse(self.register)
            if not self.auth_password:
                raise ValueError("register needs auth_password (or $SIPCONF_AUTH_PASSWORD)")
        if not (10 <= self.register_expires <= 86400):
            raise ValueError("register expires must be 10-86400 seconds")
        parse_networks(self.trust)

    @property
    def register_target(self) -> RegisterTarget | None:
        return RegisterTarget.parse(self.register) if self.register else None

    @property
    def recordings_dir(self) -> str:
        return os.path.join(self.data_dir, "recordings")

    @property
    def http_bind(self) -> str:
        return self.http_host or "127.0.0.1"

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


# Options a config file (TOML) or the command line may set: the NodeConfig fields, with
# rtp_ports ("LOW-HIGH" or [LOW, HIGH]) standing for rtp_port_min/rtp_port_max.
OPTIONS = (
    "sip_host", "sip_port", "sip_tcp", "answer_url", "answer_method", "answer_timeout",
    "rtp_ports", "max_calls", "mixer_clocks", "auth_token", "data_dir", "webhook_ttl",
    "webhook_max_backoff", "http_host", "http_port", "public_url", "recording_retention_days",
    "api_token", "log_level", "log_format", "register", "auth_user", "auth_password",
    "register_expires", "trust",
)


def load_file(path: str) -> dict:
    """A TOML config file's options (keys may use - or _); unknown keys are an error."""
    import tomllib

    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    opts = {k.replace("-", "_"): v for k, v in raw.items()}
    unknown = sorted(set(opts) - set(OPTIONS))
    if unknown:
        raise ValueError(f"{path}: unknown option(s): {', '.join(unknown)}")
    return opts


def build(options: dict) -> NodeConfig:
    """A NodeConfig from merged options; ValueError with a clear message when one is bad."""
    import dataclasses

    opts = {k: v for k, v in options.items() if v is not None}
    ports = opts.pop("rtp_ports", None)
    if ports is not None:
        try:
            lo, hi = (ports.split("-", 1) if isinstance(ports, str) else ports)
            opts["rtp_port_min"], opts["rtp_port_max"] = int(lo), int(hi)
        except (TypeError, ValueError):
            raise ValueError(f"rtp_ports must be LOW-HIGH, not {ports!r}") from None
    trust = opts.get("trust")
    if isinstance(trust, str):
        opts["trust"] = tuple(t.strip() for t in trust.split(",") if t.strip())
    elif isinstance(trust, list | tuple):
        if not all(isinstance(t, str) for t in trust):
            raise ValueError(f"trust must be a list of CIDR strings, not {trust!r}")
        opts["trust"] = tuple(trust)
    for key, env in (("auth_token", "SIPCONF_AUTH_TOKEN"), ("api_token", "SIPCONF_API_TOKEN"),
                     ("auth_password", "SIPCONF_AUTH_PASSWORD")):
        if key not in opts and os.environ.get(env):
            opts[key] = os.environ[env]
    types = {f.name: f.type for f in dataclasses.fields(NodeConfig)}
    for key, value in opts.items():
        want = str(types.get(key, ""))
        ok = (isinstance(value, tuple) if want.startswith("tuple")
              else isinstance(value, bool) if want == "bool"
              else isinstance(value, int) and not isinstance(value, bool) if want == "int"
              else isinstance(value, (int, float)) and not isinstance(value, bool)
              if want == "float" else isinstance(value, str))
        if not ok:
            raise ValueError(f"{key} must be {want.replace(' | None', '')}, not {value!r}")
    try:
        return NodeConfig(**opts)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
