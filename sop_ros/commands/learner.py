"""`sop learner`: run the cloud learner's gRPC services (Ingest, Policy, Fleet) over --data-dir.

    sop learner --data-dir runs/learner --credentials creds/            # TLS + tokens from `sop certs init`
    sop learner --data-dir runs/learner --credentials creds/ --mtls     # ... and require robot certificates
    sop learner --data-dir runs/learner --insecure                      # plaintext, no auth: tests only
Settings come from --config YAML (keys = LearnerConfig fields) with flags on top.
SIGTERM/SIGINT stop accepting calls and drain in-flight uploads for --grace seconds.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import yaml

from sop_ros.cli import CliError

_LOGGER = logging.getLogger(__name__)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("learner", help="serve the learner's gRPC link (uploads, checkpoints, fleet status)", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, required=True, help="episode and checkpoint stores live here")
    parser.add_argument("--config", type=Path, help="YAML with LearnerConfig fields (address, tls_cert, tokens_file, expected_robots, ...)")
    parser.add_argument("--address", help="host:port to listen on (default 127.0.0.1:50051)")
    parser.add_argument("--credentials", type=Path, metavar="DIR", help="directory from `sop certs init` (learner.crt/key, tokens.json, ca.crt)")
    parser.add_argument("--mtls", action="store_true", help="with --credentials: require robot client certificates signed by ca.crt")
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    parser.add_argument("--client-ca", type=Path, help="require client certificates from this CA (mutual TLS)")
    parser.add_argument("--tokens-file", type=Path, help="hashed bearer tokens (tokens.json)")
    parser.add_argument("--insecure", action="store_true", help="plaintext gRPC (no TLS); without --tokens-file also no authentication")
    parser.add_argument("--robots", type=int, dest="expected_robots", help="robots expected (sizes the thread pool)")
    parser.add_argument("--grace", type=float, dest="shutdown_grace_s", help="seconds to drain in-flight calls on shutdown")


def build_config(args: argparse.Namespace):
    from sop_ros.link.fleet_service import CompatibilityPolicy
    from sop_ros.link.server import LearnerConfig

    values: dict[str, Any] = {}
    if args.config:
        try:
            values = yaml.safe_load(args.config.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise CliError(f"cannot read --config {args.config}: {exc}") from None
        known = {f.name for f in dataclasses.fields(LearnerConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise CliError(f"--config {args.config}: unknown keys {unknown} (known: {sorted(known)})")
        if "compatibility" in values:
            compat = dict(values["compatibility"] or {})
            if compat.get("tasks") is not None:
                compat["tasks"] = frozenset(compat["tasks"])
            values["compatibility"] = CompatibilityPolicy(**compat)
    if args.credentials:
        values.update(tls_cert=args.credentials / "learner.crt", tls_key=args.credentials / "learner.key", tokens_file=args.credentials / "tokens.json")
        if args.mtls:
            values["client_ca"] = args.credentials / "ca.crt"
    for key in ("address", "tls_cert", "tls_key", "client_ca", "tokens_file", "expected_robots", "shutdown_grace_s"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    if args.insecure:
        values["insecure"] = True
    for key in ("tls_cert", "tls_key", "client_ca", "tokens_file"):
        if values.get(key) is not None:
            values[key] = Path(values[key])
            if not values[key].is_file():
                raise CliError(f"{key}: no such file {values[key]}")
    try:
        return LearnerConfig(**values)
    except (TypeError, ValueError) as exc:
        raise CliError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from sop_ros.link.server import serve

    config = build_config(args)
    stop = threading.Event()

    def request_stop(signum, _frame) -> None:
        _LOGGER.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        serve(config, args.data_dir, stop)
    except OSError as exc:
        raise CliError(str(exc)) from None
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m sop_ros.commands.learner ...` (same as `sop learner`, without the other commands)."""
    parser = argparse.ArgumentParser(prog="sop learner", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except CliError as exc:
        print(f"sop learner: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
