"""Command line: `sipconf serve ...` (also `python -m sipconf serve ...`)."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys

import trio

from .config import LOG_LEVELS, OPTIONS, NodeConfig, build, load_file


def _port_range(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in text.split("-", 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH, got {text!r}") from None
    return lo, hi


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sipconf", description="SIP/RTP conferencing node")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the node")
    s.add_argument("--sip-host", default=None,
                   help="address for SIP and RTP (default 127.0.0.1)")
    s.add_argument("--sip-port", type=int, default=None, help="SIP UDP port (default 5080)")
    s.add_argument("--sip-tcp", action="store_true", default=None,
                   help="also listen for SIP over TCP")
    s.add_argument("--answer-url", default=None,
                   help="URL returning answer XML; without it every call joins the room "
                        "named by the dialled user")
    s.add_argument("--answer-method", default=None, choices=("GET", "POST"),
                   help="default POST")
    s.add_argument("--answer-timeout", type=float, default=None,
                   help="seconds to wait for the answer URL (default 5)")
    s.add_argument("--rtp-ports", type=_port_range, default=None,
                   metavar="LOW-HIGH", help="RTP port range (default 40000-40999)")
    s.add_argument("--max-calls", type=int, default=None, help="default 500")
    s.add_argument("--mixer-clocks", type=int, default=None,
                   help="mixer clock threads (default: cores, at most 4)")
    s.add_argument("--auth-token", default=None,
                   help="key for the X-Sipconf-Signature on every request to your web app "
                        "(default: $SIPCONF_AUTH_TOKEN; unsigned without one)")
    s.add_argument("--data-dir", default=None,
                   help="where the node keeps its webhook spool (default: $SIPCONF_DATA_DIR "
                        "or ~/.local/state/sipconf)")
    s.add_argument("--webhook-ttl", type=float, default=None,
                   help="seconds an undelivered event is retried before it is dropped "
                        "(default 86400)")
    s.add_argument("--webhook-max-backoff", type=float, default=None,
                   help="longest wait between retries, seconds (default 30)")
    s.add_argument("--http-host", default=None,
                   help="address of the node's HTTP server (recordings, control API, metrics; "
                        "default 127.0.0.1)")
    s.add_argument("--http-port", type=int, default=None, help="HTTP port (default 8080)")
    s.add_argument("--public-url", default=None,
                   help="base URL your web app uses to reach the HTTP server (RecordUrl); "
                        "default http://HTTP-HOST:HTTP-PORT")
    s.add_argument("--recording-retention-days", type=float, default=None,
                   help="delete recordings older than this (default 0: keep)")
    s.add_argument("--api-token", default=None,
                   help="bearer token for the control API on the HTTP port (default: "
                        "$SIPCONF_API_TOKEN; without one the API answers 401)")
    s.add_argument("--log-level", default=None, choices=LOG_LEVELS, help="default info")
    s.add_argument("--log-format", default=None, choices=("text", "json"),
                   help="text (default) or json: one JSON object per line")
    s.add_argument("--register", default=None, metavar="sip:USER@PBX[:PORT]",
                   help="register the node on a PBX as this address of record")
    s.add_argument("--auth-user", default=None,
                   help="digest user for --register (default: its USER)")
    s.add_argument("--auth-password", default=None,
                   help="digest password for --register (default: $SIPCONF_AUTH_PASSWORD)")
    s.add_argument("--register-expires", type=int, default=None,
                   help="registration lifetime asked of the PBX, seconds (default 120; the "
                        "node refreshes it before then, and so is back within this long "
                        "after a PBX restart)")
    s.add_argument("--trust", action="append", default=None, metavar="CIDR",
                   help="a network the node takes calls from, repeatable (default "
                        "127.0.0.0/8 and ::1; the registrar is always trusted); calls from "
                        "anywhere else get 403; 0.0.0.0/0 takes calls from anyone")
    s.add_argument("--config", default=None, metavar="FILE",
                   help="TOML file with any of these options (e.g. sip_port = 5080, "
                        "rtp_ports = \"40000-40999\"); the command line overrides it")
    c = sub.add_parser("check-config", help="validate a config file and exit")
    c.add_argument("file")
    return p


async def _serve(config: NodeConfig) -> None:
    from .node import Node

    log = logging.getLogger("sipconf")
    node = Node(config)
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:

            async def run_node(task_status=trio.TASK_STATUS_IGNORED) -> None:
                await node.run(task_status=task_status)
                nursery.cancel_scope.cancel()  # stopped: the signal watcher goes too

            await nursery.start(run_node)
            log.info("sipconf ready on %s:%d (%s)", config.sip_host, config.sip_port,
                     f"answer URL {config.answer_url}" if config.answer_url
                     else "built-in document: each call joins the room it dialled")
            stopping = False
            async for signum in signals:
                name = signal.Signals(signum).name
                if stopping:  # a second signal: stop now
                    log.warning("%s again: stopping at once", name)
                    nursery.cancel_scope.cancel()
                    break
                log.info("%s: hanging up and stopping", name)
                stopping = True
                node.stop()


class JsonFormatter(logging.Formatter):
    """One JSON object a line; call events carry ``call_uuid`` and ``room`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": round(record.created, 3), "level": record.levelname.lower(),
               "logger": record.name, "msg": record.getMessage()}
        for key in ("call_uuid", "room", "event"):
            if hasattr(record, key):
                out[key] = getattr(record, key)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out)


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "check-config":
            build(load_file(args.file))
            print(f"{args.file}: ok")
            return 0
        opts = load_file(args.config) if args.config else {}
        opts.update({k: v for k in OPTIONS if (v := getattr(args, k, None)) is not None})
        config = build(opts)
    except ValueError as exc:
        print(f"sipconf: {exc}", file=sys.stderr)
        return 2
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if config.log_format == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, config.log_level.upper()), handlers=[handler])
    from .sip import EngineError
    from .web import HttpError

    failures: list[BaseException] = []
    try:
        trio.run(_serve, config)
    except* (EngineError, HttpError) as group:
        failures.extend(_leaves(group))
    for exc in failures:
        print(f"sipconf: {exc}", file=sys.stderr)
    return 1 if failures else 0
