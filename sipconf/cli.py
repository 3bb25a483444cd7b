"""Command line: `sipconf serve ...` (also `python -m sipconf serve ...`)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

import trio

from sipconf.config import OPTIONS, RTP_PORTS_HELP, NodeConfig, build, load_file, option_fields

EXIT_BROKEN = 3  # the node broke (SIP thread died, a mixer clock stalled): restart it


def _port_range(text: str) -> tuple[int, int]:
    try:
        lo, hi = (int(x) for x in text.split("-", 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH, got {text!r}") from None
    return lo, hi


def build_parser() -> argparse.ArgumentParser:
    """The command line, derived from the option table (config.NodeConfig)."""
    p = argparse.ArgumentParser(prog="sipconf", description="SIP/RTP conferencing node")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the node")
    for f in option_fields():
        meta, flag = f.metadata, "--" + f.name.replace("_", "-")
        kw: dict = {"default": None, "help": meta["help"]}
        kind = str(f.type)
        if kind == "bool":
            kw["action"] = "store_true"
        elif kind.startswith("tuple"):
            kw["action"] = "append"
        else:
            kw["type"] = {"int": int, "float": float}.get(kind, str)
        if meta["choices"]:
            kw["choices"] = meta["choices"]
        if meta["metavar"]:
            kw["metavar"] = meta["metavar"]
        s.add_argument(flag, **kw)
        if f.name == "answer_timeout":
            s.add_argument("--rtp-ports", type=_port_range, default=None, metavar="LOW-HIGH",
                           help=RTP_PORTS_HELP)
    s.add_argument("--config", default=None, metavar="FILE",
                   help="TOML file with any of these options (e.g. sip_port = 5080, "
                        "rtp_ports = \"40000-40999\"); the command line overrides it")
    c = sub.add_parser("check-config", help="validate a config file and exit")
    c.add_argument("file")
    return p


async def _serve(config: NodeConfig) -> None:
    from sipconf.node import Node

    log = logging.getLogger("sipconf")
    node = Node(config)
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:

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
                if signum == signal.SIGHUP:
                    nursery.start_soon(node.reload_tls)
                    continue
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
    from sipconf.engine import EngineError
    from sipconf.http.server import HttpError
    from sipconf.node import NodeBroken

    failures: list[BaseException] = []
    broken: list[BaseException] = []
    try:
        trio.run(_serve, config)
    except* NodeBroken as group:
        broken.extend(_leaves(group))
    except* (EngineError, HttpError) as group:
        failures.extend(_leaves(group))
    for exc in failures + broken:
        print(f"sipconf: {exc}", file=sys.stderr)
    if broken:
        # A stuck SIP thread or mixer clock may never let the interpreter finish: leave now,
        # with the code a supervisor (systemd Restart=on-failure, Docker) restarts on.
        logging.shutdown()
        sys.stderr.flush()
        os._exit(EXIT_BROKEN)
    return 1 if failures else 0
