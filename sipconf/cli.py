"""Command line: `sipconf serve ...` (also `python -m sipconf serve ...`)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import trio

from .config import LOG_LEVELS, NodeConfig


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
    s.add_argument("--sip-host", default="127.0.0.1",
                   help="address for SIP and RTP (default 127.0.0.1)")
    s.add_argument("--sip-port", type=int, default=5080, help="SIP UDP port (default 5080)")
    s.add_argument("--sip-tcp", action="store_true", help="also listen for SIP over TCP")
    s.add_argument("--answer-url", default=None,
                   help="URL returning answer XML; without it every call joins the room "
                        "named by the dialled user")
    s.add_argument("--answer-method", default="POST", choices=("GET", "POST"))
    s.add_argument("--answer-timeout", type=float, default=5.0,
                   help="seconds to wait for the answer URL (default 5)")
    s.add_argument("--rtp-ports", type=_port_range, default=(40000, 40999),
                   metavar="LOW-HIGH", help="RTP port range (default 40000-40999)")
    s.add_argument("--max-calls", type=int, default=500)
    s.add_argument("--mixer-clocks", type=int, default=None,
                   help="mixer clock threads (default: cores, at most 4)")
    s.add_argument("--auth-token", default=None,
                   help="key for the X-Sipconf-Signature on every request to your web app "
                        "(default: $SIPCONF_AUTH_TOKEN; unsigned without one)")
    s.add_argument("--data-dir", default=None,
                   help="where the node keeps its webhook spool (default: $SIPCONF_DATA_DIR "
                        "or ~/.local/state/sipconf)")
    s.add_argument("--webhook-ttl", type=float, default=24 * 3600.0,
                   help="seconds an undelivered event is retried before it is dropped "
                        "(default 86400)")
    s.add_argument("--webhook-max-backoff", type=float, default=30.0,
                   help="longest wait between retries, seconds (default 30)")
    s.add_argument("--http-host", default=None,
                   help="address of the node's HTTP server (recordings; default: --sip-host)")
    s.add_argument("--http-port", type=int, default=8080, help="HTTP port (default 8080)")
    s.add_argument("--public-url", default=None,
                   help="base URL your web app uses to reach the HTTP server (RecordUrl); "
                        "default http://HTTP-HOST:HTTP-PORT")
    s.add_argument("--recording-retention-days", type=float, default=0.0,
                   help="delete recordings older than this (default 0: keep)")
    s.add_argument("--api-token", default=None,
                   help="bearer token for the control API on the HTTP port (default: "
                        "$SIPCONF_API_TOKEN; without one the API answers 401)")
    s.add_argument("--log-level", default="info", choices=LOG_LEVELS)
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


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    kwargs = {}
    if args.mixer_clocks:
        kwargs["mixer_clocks"] = args.mixer_clocks
    if args.data_dir:
        kwargs["data_dir"] = args.data_dir
    try:
        config = NodeConfig(
            sip_host=args.sip_host, sip_port=args.sip_port, sip_tcp=args.sip_tcp,
            answer_url=args.answer_url, answer_method=args.answer_method,
            answer_timeout=args.answer_timeout, rtp_port_min=args.rtp_ports[0],
            rtp_port_max=args.rtp_ports[1], max_calls=args.max_calls,
            log_level=args.log_level,
            auth_token=args.auth_token or os.environ.get("SIPCONF_AUTH_TOKEN") or None,
            webhook_ttl=args.webhook_ttl, webhook_max_backoff=args.webhook_max_backoff,
            http_host=args.http_host, http_port=args.http_port, public_url=args.public_url,
            recording_retention_days=args.recording_retention_days,
            api_token=args.api_token or os.environ.get("SIPCONF_API_TOKEN") or None,
            **kwargs,
        )
    except ValueError as exc:
        print(f"sipconf: {exc}", file=sys.stderr)
        return 2
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
