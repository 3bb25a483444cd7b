"""Node configuration: one typed object built by the CLI (and by tests)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from sipconf.core.access import DEFAULT_TRUST, parse_networks
from sipconf.core.registration import RegisterTarget

LOG_LEVELS = ("debug", "info", "warning", "error")
PJSUA_MAX_CALLS = 2048  # the pjproject build's ceiling (scripts/build-pjproject.sh)


def default_data_dir() -> str:
    """Where the node keeps state (the webhook spool): $SIPCONF_DATA_DIR, else the XDG state
    directory."""
    if os.environ.get("SIPCONF_DATA_DIR"):
        return os.environ["SIPCONF_DATA_DIR"]
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                            "state")
    return os.path.join(base, "sipconf")


def opt(default, help: str, *, default_factory=None, choices: tuple[str, ...] | None = None,
        metavar: str | None = None, flag: bool = True):
    """A config option: a NodeConfig field that the TOML file and (with ``flag``) the command
    line may set; ``help`` is its one description, used by both."""
    meta = {"help": help, "choices": choices, "metavar": metavar, "flag": flag}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class NodeConfig:
    """Every setting of a node. Fields made with :func:`opt` are options (config file and
    command line, derived from here); the rest are tuning knobs for tests and benchmarks."""

    sip_host: str = opt("127.0.0.1", "address for SIP and RTP (default 127.0.0.1)")
    sip_port: int = opt(5080, "SIP UDP port (default 5080)")
    sip_tcp: bool = opt(False, "also listen for SIP over TCP")
    sip_tls_port: int = opt(0, "also listen for SIP over TLS on this port (default 0: off); "
                               "needs tls_cert and tls_key")
    tls_cert: str | None = opt(None, "PEM certificate (chain) for SIP over TLS; read again on "
                                     "SIGHUP", metavar="PATH")
    tls_key: str | None = opt(None, "PEM private key for tls_cert; read again on SIGHUP",
                              metavar="PATH")
    srtp: str = opt("optional", "SRTP (SDES keys, RFC 4568): off, optional (default: taken "
                                "when a caller offers it) or required (plain RTP offers get "
                                "488)", choices=("off", "optional", "required"))
    user_agent: str = opt("sipconf", "the node's User-Agent/Server header (default \"sipconf\", "
                                     "no version: nothing for a scanner to match)")
    answer_url: str | None = opt(None, "URL returning answer XML; without it every call joins "
                                       "the room named by the dialled user")
    answer_method: str = opt("POST", "default POST", choices=("GET", "POST"))
    answer_timeout: float = opt(5.0, "seconds an answer, Redirect or action request may take "
                                     "in all (default 5)")
    hangup_url: str | None = opt(None, "URL told when a call ends (Plivo's hangup_url: "
                                       "Event=Hangup, HangupCause, Duration, BillDuration ...; "
                                       "default: none)")
    hangup_method: str = opt("POST", "default POST", choices=("GET", "POST"))
    rtp_port_min: int = 40000
    rtp_port_max: int = 40999
    max_calls: int = opt(500, "default 500")
    source_call_rate: float = opt(50.0, "new calls a second one source address may start (a "
                                        "token bucket, checked before pjsua opens anything; "
                                        "default 50); past it 503 with Retry-After")
    source_call_burst: int = opt(100, "new calls one source may start at once (default 100)")
    max_calls_per_source: int = opt(500, "calls one source address may have up at once "
                                         "(default 500); past it 503 with Retry-After")
    retry_after: int = opt(5, "seconds a caller refused for load is told to wait (Retry-After, "
                              "default 5)")
    strict_rtp: str = opt("on", "take a call's RTP/RTCP only from its caller: the address "
                                "the SDP named or, behind NAT, the source learned from the "
                                "call's first packets (default on; off: pjmedia's own switch "
                                "after 10 packets from anywhere)", choices=("on", "off"))
    rtp_timeout: float = opt(30.0, "hang up (BYE with a Reason) a call that sent no RTP for "
                                   "this many seconds while not on hold, or never had media "
                                   "(default 30; 0: never)")
    session_expires: int = opt(1800, "RFC 4028 session timer on every call: the caller "
                                     "refreshes it if it can, else the node does; a call "
                                     "whose refresh fails is ended (default 1800 s, 90-86400)")
    rtp_relatch_seconds: float = opt(5.0, "with strict_rtp, seconds the call's RTP source must "
                                          "be silent before another one carrying its SSRC is "
                                          "taken instead (default 5)")
    log_level: str = opt("info", "default info", choices=LOG_LEVELS)
    mixer_clocks: int = opt(max(1, min(4, os.cpu_count() or 1)),
                            "mixer clock threads (default: cores, at most 4)")
    media_threads: int = 1
    # Jitter buffer (ms): small, because the node adds as little delay as it can.
    jb_init_ms: int = 20
    jb_min_ms: int = 10
    jb_max_ms: int = opt(20, "the most a leg's jitter buffer prefetches after running empty, "
                             "ms (default 20: one packet; 20-500): more holds quality under "
                             "heavy jitter (measured at 40+-40 ms: 60 gave PESQ 2.4 at 130 ms "
                             "where 20 gave 1.4-1.9 at 80-100 ms) but lets a lost packet delay "
                             "the rest of the call")
    jb_size_ms: int = opt(500, "the most audio a leg's jitter buffer holds, ms (default 500, "
                               "pjmedia's; 40-1000): its delay never grows past it, however "
                               "much the network jitters; past it the oldest frames give way "
                               "(a smaller one bounds delay at a cost in quality under jitter)")
    jb_wait_pct: int = opt(99, "the share of a leg's packets its jitter buffer waits for, by "
                               "how late each came over the last 5 s, percent (default 99; "
                               "50-100); later ones are concealed in place")
    jb_delay_max_ms: int = opt(70, "the most a leg's jitter buffer delays audio to wait for late "
                                   "packets, ms (default 70; 0-400): bounds the delay at any "
                                   "jitter, at a cost in quality past it")
    jb_catchup_ms: int = opt(1000, "a leg whose jitter buffer kept a whole frame more than it "
                                   "needed on every read for this long (ms, default 1000; 0: "
                                   "never) drops one, on a quiet frame: 20 ms less delay")
    tick_align: str = opt("on", "a room's 20 ms tick moves to read its talker's packets 3 ms "
                                "after they arrive, when they arrive steadily (default on; "
                                "off: every room ticks at its clock's phase, and a packet "
                                "arriving just after a tick waits 20 ms)",
                          choices=("on", "off"))
    shared_encoding: str = opt("on", "call legs of a room that hear the same frame (everyone "
                                     "not talking) share one encode of it per codec "
                                     "configuration (default on; off: every leg encodes its "
                                     "own)", choices=("on", "off"))
    opus_bitrate: int = opt(32000, "bits a second each Opus encoder codes, 6000-510000 "
                                   "(default 32000)")
    opus_application: str = opt("voip", "how Opus legs are coded, at the room's 16 kHz: voip "
                                        "(default) or audio (libopus' modes with SILK for "
                                        "speech), or lowdelay (CELT only: 4 ms less "
                                        "lookahead and 40 % of voip's encoding cost, but "
                                        "speech at 32 kbit/s scores 1.2 PESQ lower)",
                                choices=("voip", "lowdelay", "audio"))
    opus_decoding: str = opt("direct", "how Opus packets are decoded: direct (default: at "
                                       "once, a lost frame rebuilt from the FEC of a packet "
                                       "the jitter buffer holds, a frame held only for a peer "
                                       "that codes FEC on a short buffer) or held (pjmedia's way: "
                                       "every packet a frame late, 20 ms more delay)",
                             choices=("direct", "held"))
    sound_fetch_timeout: float = opt(10.0, "seconds a sound file or sound document may take "
                                           "to fetch in all (default 10)")
    sound_cache_bytes: int = opt(20 * 1024 * 1024, "bytes of decoded sounds kept in memory "
                                                   "(default 20 MiB)")
    # Webhooks: signing key, the spool's directory, how long and how patiently to retry.
    auth_id: str | None = opt(None, "Plivo-style account id (default: $SIPCONF_AUTH_ID): "
                                    "with --auth-token, the user name of the Plivo-shaped "
                                    "Conference API's Basic auth")
    auth_token: str | None = opt(None, "key that signs every request to your web app "
                                       "(default: $SIPCONF_AUTH_TOKEN; unsigned without one)")
    signature: str = opt("plivo", "how requests are signed with --auth-token: plivo "
                                  "(default: X-Plivo-Signature-V3 and V2, as the plivo SDK "
                                  "validates them), sipconf (X-Sipconf-*) or both",
                         choices=("plivo", "sipconf", "both"))
    data_dir: str = opt(None, "where the node keeps its webhook spool and recordings (default: "
                              "$SIPCONF_DATA_DIR or ~/.local/state/sipconf)",
                        default_factory=lambda: default_data_dir())
    webhook_ttl: float = opt(24 * 3600.0, "seconds an undelivered event is retried before it "
                                          "goes to the dead letters (default 86400)")
    webhook_max_backoff: float = opt(30.0, "longest wait between retries, seconds (default 30)")
    webhook_timeout: float = opt(5.0, "seconds one event delivery may take in all (default 5)")
    # The node's HTTP server (recordings); public_url is how your web app reaches it.
    http_host: str | None = opt(None, "address of the node's HTTP server (recordings, control "
                                      "API, metrics; default 127.0.0.1)")
    http_port: int = opt(8080, "HTTP port (default 8080)")
    public_url: str | None = opt(None, "base URL your web app uses to reach the HTTP server "
                                       "(RecordUrl); default http://HTTP-HOST:HTTP-PORT")
    recording_retention_days: float = opt(0.0, "delete recordings older than this (default 0: "
                                               "keep)")
    api_token: str | None = opt(None, "bearer token for the control API on the HTTP port "
                                      "(default: $SIPCONF_API_TOKEN; without one the API "
                                      "answers 401)")
    log_format: str = opt("text", "text (default) or json: one JSON object per line",
                          choices=("text", "json"))
    # Registration on a PBX (sip:USER@PBX[:PORT]) with digest credentials.
    register: str | None = opt(None, "register the node on a PBX as this address of record",
                               metavar="sip:USER@PBX[:PORT]")
    auth_user: str | None = opt(None, "digest user for --register (default: its USER)")
    auth_password: str | None = opt(None, "digest password for --register (default: "
                                          "$SIPCONF_AUTH_PASSWORD)")
    register_expires: int = opt(120, "registration lifetime asked of the PBX, seconds (default "
                                     "120; the node refreshes it before then, and so is back "
                                     "within this long after a PBX restart)")
    # Who may call: networks (CIDR) the node takes calls from; the registrar is added to them.
    trust: tuple[str, ...] = opt(DEFAULT_TRUST, "a network the node takes calls from, "
                                                "repeatable (default 127.0.0.0/8 and ::1; the "
                                                "registrar is always trusted); calls from "
                                                "anywhere else get 403; 0.0.0.0/0 takes calls "
                                                "from anyone", metavar="CIDR")
    # Dial-out (POST /v1/rooms/{room}/dial): nowhere unless allowed, a few at a time.
    dial_allow: tuple[str, ...] = opt((), "a destination the control API may dial into a "
                                          "room, as a glob on the whole SIP URI (e.g. "
                                          "'sip:*@pbx.example.com'), repeatable; default "
                                          "none: dial-out is off (no toll fraud)",
                                      metavar="PATTERN")
    max_dials: int = opt(10, "dial-outs ringing at once; the API answers 429 past it "
                             "(default 10)")
    dial_rate: float = opt(2.0, "dial-outs a second the API may start (a token bucket of "
                                "max_dials; default 2); past it 429 with Retry-After")
    noise_suppression: bool = opt(False, "denoise (speexdsp) and gate every member's voice: a "
                                         "member not talking adds nothing to the mix (its "
                                         "noise neither); per member: Conference "
                                         "noiseSuppression, the API's .../denoise")
    agc: bool = opt(False, "automatic level for every member's voice: quiet talkers brought "
                           "up and loud ones down towards -22 dBFS (at most 12 dB either way, "
                           "adapting on speech only); per member: Conference agc, the API's "
                           ".../agc")
    stream_chunk_ms: int = opt(20, "audio per media message of a <Stream> or agent, ms: 20 "
                                   "(default, the least delay) to 200; longer chunks cost the "
                                   "node less CPU per stream (--stream-chunk-ms 100: about "
                                   "half) and add their length to the delay")
    max_agents: int = opt(20, "AI agent members (POST /v1/rooms/{room}/agents) at once; the API "
                              "answers 429 past it (default 20)")
    agent_reconnects: int = opt(3, "times an agent member's WebSocket is opened again after it "
                                   "failed or dropped (backoff 1, 2, 4 ... s; 0: never); one "
                                   "the agent closed normally is not (default 3)")
    # Limits on what a document or an API request controls (each hit is logged and counted).
    max_wait_seconds: int = opt(3600, "longest <Wait>; longer ones are cut to it (default 3600)")
    max_play_loops: int = opt(100, "most times a <Play>/<Speak> loops; more is cut to it "
                                   "(default 100; loop=\"0\" still plays until the call ends)")
    max_sound_seconds: float = opt(600.0, "longest sound (decoded file, speech or sound "
                                          "document); longer ones are refused before they are "
                                          "decoded (default 600)")
    max_sound_bytes: int = opt(20 * 1024 * 1024, "largest sound file fetched (default 20 MiB)")
    max_speak_chars: int = opt(3000, "longest <Speak> text or API speech (default 3000)")
    max_tts_processes: int = opt(4, "espeak-ng processes at once; more wait (default 4)")
    max_document_bytes: int = opt(256 * 1024, "largest answer/action/sound document "
                                              "(default 256 KiB)")
    max_document_elements: int = opt(100, "most elements in one document (default 100)")
    max_documents_per_call: int = opt(20, "most documents one call runs: answer, Redirects "
                                          "and action replies (default 20); then it hangs up")
    max_room_sounds: int = opt(8, "most sounds playing in one room at once; the API answers "
                                  "409 past it and a document's sound is skipped (default 8)")
    document_concurrency: int = opt(64, "answer/Redirect/action requests at once (default 64)")
    webhook_concurrency: int = opt(32, "event deliveries at once (default 32)")
    sound_concurrency: int = opt(8, "sound file and sound document fetches at once (default 8)")
    api_concurrency: int = opt(8, "control API requests handled at once; the rest wait their "
                                  "turn, so a burst of them cannot delay calls (default 8)")

    def __post_init__(self) -> None:
        if not (0 < self.sip_port < 65536):
            raise ValueError(f"SIP port {self.sip_port} out of range")
        if not (0 < self.rtp_port_min <= self.rtp_port_max < 65536):
            raise ValueError(f"bad RTP port range {self.rtp_port_min}-{self.rtp_port_max}")
        if (self.rtp_port_max - self.rtp_port_min + 1) < 4:
            raise ValueError("RTP port range needs at least 4 ports")
        for f in dataclasses.fields(self):  # the options with choices: the table says which
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"{f.name.replace('_', ' ')} must be "
                                 f"{', '.join(choices[:-1])} or {choices[-1]}, not "
                                 f"{getattr(self, f.name)!r}")
        if not (0 < len(self.user_agent) <= 100 and self.user_agent.isprintable()
                and self.user_agent.isascii()):
            raise ValueError(f"user agent must be 1-100 printable ASCII characters, not "
                             f"{self.user_agent!r}")
        if not (self.source_call_rate > 0 and self.source_call_burst >= 1
                and self.max_calls_per_source >= 1 and 0 < self.retry_after <= 3600):
            raise ValueError("source_call_rate, source_call_burst and max_calls_per_source must "
                             "be positive, retry_after 1-3600")
        if self.sip_tls_port:
            if not 0 < self.sip_tls_port < 65536 or self.sip_tls_port == self.sip_port:
                raise ValueError(f"SIP TLS port {self.sip_tls_port} out of range or the same "
                                 "as the SIP port")
            why = tls_files_problem(self.tls_cert, self.tls_key)
            if why:
                raise ValueError(f"sip_tls_port: {why}")
        if not 6000 <= self.opus_bitrate <= 510000:
            raise ValueError("opus_bitrate must be 6000-510000 (libopus' range)")
        if not 40 <= self.jb_size_ms <= 1000:
            raise ValueError("jb_size_ms must be 40-1000")
        if not 20 <= self.jb_max_ms <= 500:
            raise ValueError("jb_max_ms must be 20-500")
        if not 50 <= self.jb_wait_pct <= 100:
            raise ValueError("jb_wait_pct must be 50-100")
        if not 0 <= self.jb_delay_max_ms <= 400:
            raise ValueError("jb_delay_max_ms must be 0-400")
        if self.jb_catchup_ms and not 200 <= self.jb_catchup_ms <= 60000:
            raise ValueError("jb_catchup_ms must be 0 (never) or 200-60000")
        if self.rtp_timeout and not 2 <= self.rtp_timeout <= 86400:
            raise ValueError("rtp_timeout must be 0 (never) or 2-86400 seconds")
        if not 90 <= self.session_expires <= 86400:
            raise ValueError("session_expires must be 90-86400 seconds (RFC 4028's Min-SE)")
        if not 0 <= self.rtp_relatch_seconds <= 3600:
            raise ValueError("rtp_relatch_seconds must be 0-3600")
        if self.answer_timeout <= 0:
            raise ValueError("answer timeout must be positive")
        if not (0 < self.http_port < 65536):
            raise ValueError(f"HTTP port {self.http_port} out of range")
        if self.webhook_ttl <= 0 or self.webhook_max_backoff <= 0:
            raise ValueError("webhook TTL and backoff must be positive")
        if not (1 <= self.max_calls <= PJSUA_MAX_CALLS):
            raise ValueError(f"max calls must be 1-{PJSUA_MAX_CALLS} (the pjproject build's "
                             "PJSUA_MAX_CALLS, scripts/build-pjproject.sh)")
        if self.register is not None:
            RegisterTarget.parse(self.register)
            if not self.auth_password:
                raise ValueError("register needs auth_password (or $SIPCONF_AUTH_PASSWORD)")
        if not (10 <= self.register_expires <= 86400):
            raise ValueError("register expires must be 10-86400 seconds")
        if self.stream_chunk_ms not in range(20, 201, 20):
            raise ValueError("stream_chunk_ms must be 20-200, a multiple of 20")
        if not 0 <= self.agent_reconnects <= 100:
            raise ValueError("agent_reconnects must be 0-100")
        if not (1 <= self.max_dials <= 1000 and 0 < self.dial_rate <= 1000):
            raise ValueError("max_dials must be 1-1000 and dial_rate 0-1000 a second")
        if len(self.dial_allow) > 100 or any(len(p) > 256 for p in self.dial_allow):
            raise ValueError("dial_allow: at most 100 patterns of at most 256 characters")
        if len(parse_networks(self.trust)) > 48:  # the SIP guard's table holds 64, registrar too
            raise ValueError("trust: at most 48 networks")
        for name in LIMITS:
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if not 60 <= self.max_speak_chars <= 100_000:
            raise ValueError("max_speak_chars must be 60-100000")

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
    def call_capacity(self) -> int:
        """Calls the node can hold: --max-calls, and two RTP ports (RTP, RTCP) a call."""
        return min(self.max_calls, (self.rtp_port_max - self.rtp_port_min + 1) // 2)

    @property
    def pj_log_level(self) -> int:
        """pjlib's own console verbosity: quiet unless debugging."""
        return {"debug": 4, "info": 1, "warning": 1, "error": 0}[self.log_level]


LIMITS = ("max_wait_seconds", "max_play_loops", "max_sound_seconds", "max_sound_bytes",
          "max_speak_chars", "max_tts_processes", "max_document_bytes", "max_document_elements",
          "max_documents_per_call", "max_room_sounds", "document_concurrency",
          "webhook_concurrency", "sound_concurrency", "api_concurrency", "webhook_timeout",
          "sound_fetch_timeout", "sound_cache_bytes")


def tls_files_problem(cert: str | None, key: str | None) -> str | None:
    """Why ``cert`` and ``key`` cannot serve TLS (missing, unreadable, not PEM, a key that is
    not the certificate's), or None. pjsip reads them only when its listener (re)starts and
    then fails every handshake without a word; this says it first."""
    import ssl

    for what, path in (("tls_cert", cert), ("tls_key", key)):
        if not path or not os.access(path, os.R_OK):
            return f"{what} must name a readable PEM file, not {path!r}"
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        return f"{cert} and {key} are not a certificate and its key ({exc})"
    return None


def option_fields() -> list:
    """The NodeConfig fields that are options, in declaration order."""
    return [f for f in dataclasses.fields(NodeConfig) if "help" in f.metadata]


# Options a config file (TOML) or the command line may set: the option fields, with rtp_ports
# ("LOW-HIGH" or [LOW, HIGH]) standing for rtp_port_min/rtp_port_max.
RTP_PORTS_HELP = "RTP port range (default 40000-40999)"
OPTIONS = tuple(f.name for f in option_fields()) + ("rtp_ports",)


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
    opts = {k: v for k, v in options.items() if v is not None}
    ports = opts.pop("rtp_ports", None)
    if ports is not None:
        try:
            lo, hi = (ports.split("-", 1) if isinstance(ports, str) else ports)
            opts["rtp_port_min"], opts["rtp_port_max"] = int(lo), int(hi)
        except (TypeError, ValueError):
            raise ValueError(f"rtp_ports must be LOW-HIGH, not {ports!r}") from None
    for key in ("trust", "dial_allow"):  # the repeatable options: a list, or comma-separated
        value = opts.get(key)
        if isinstance(value, str):
            opts[key] = tuple(t.strip() for t in value.split(",") if t.strip())
        elif isinstance(value, list | tuple):
            if not all(isinstance(t, str) for t in value):
                raise ValueError(f"{key} must be a list of strings, not {value!r}")
            opts[key] = tuple(value)
    for key, env in (("auth_id", "SIPCONF_AUTH_ID"), ("auth_token", "SIPCONF_AUTH_TOKEN"),
                     ("api_token", "SIPCONF_API_TOKEN"),
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
