"""`sop learner`: run the cloud learner's gRPC services (Ingest, Policy, Fleet) over --data-dir.

    sop learner --data-dir runs/learner --credentials creds/            # TLS + tokens from `sop certs init`
    sop learner --data-dir runs/learner --credentials creds/ --mtls     # ... and require robot certificates
    sop learner --data-dir runs/learner --insecure                      # plaintext, no auth: tests only
Settings come from --config YAML (keys = LearnerServerConfig fields) with flags on top.
Besides serving, the learner post-trains the fleet's policy continuously (--algorithm;
--no-train only serves) and announces every new checkpoint to the robots.
SIGTERM/SIGINT stop training, stop accepting calls and drain in-flight uploads for --grace seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import yaml

from sop_ros.commands.errors import CliError
from sop_ros.core.algorithms.registry import ALGORITHMS
from sop_ros.learner.process import LearnerProcess, NothingToTrainError
from sop_ros.learner.settings import LearnerSettings, default, server_config, server_default

_LOGGER = logging.getLogger(__name__)
# Flags that override the --config YAML's server keys (argparse dest = LearnerServerConfig field).
_SERVER_FLAGS = ("address", "tls_cert", "tls_key", "client_ca", "tokens_file", "expected_robots", "shutdown_grace_s")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "learner",
        help="serve the learner's gRPC link (uploads, checkpoints, fleet status)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


# Long by design: one declaration per flag, the command's whole interface in one place.
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, required=True, help="episode and checkpoint stores live here")
    parser.add_argument(
        "--config",
        type=Path,
        help="YAML with LearnerServerConfig fields (address, tls_cert, tokens_file, expected_robots, ...)",
    )
    parser.add_argument("--address", help=f"host:port to listen on (default {server_default('address')})")
    parser.add_argument(
        "--credentials",
        type=Path,
        metavar="DIR",
        help="directory from `sop certs init` (learner.crt/key, tokens.json, ca.crt)",
    )
    parser.add_argument(
        "--mtls", action="store_true", help="with --credentials: require robot client certificates signed by ca.crt"
    )
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    parser.add_argument("--client-ca", type=Path, help="require client certificates from this CA (mutual TLS)")
    parser.add_argument("--tokens-file", type=Path, help="hashed bearer tokens (tokens.json)")
    parser.add_argument(
        "--insecure", action="store_true", help="plaintext gRPC (no TLS); without --tokens-file also no authentication"
    )
    parser.add_argument(
        "--robots",
        type=int,
        dest="expected_robots",
        help=f"robots expected (sizes the thread pool; default {server_default('expected_robots')})",
    )
    parser.add_argument(
        "--grace",
        type=float,
        dest="shutdown_grace_s",
        help=f"seconds to drain in-flight calls on shutdown (default {server_default('shutdown_grace_s')})",
    )
    train = parser.add_argument_group("training")
    train.add_argument(
        "--algorithm",
        default=default("algorithm"),
        choices=sorted(ALGORITHMS),
        help="post-training algorithm (default %(default)s)",
    )
    train.add_argument("--no-train", dest="train", action="store_false", help="only serve the link; do not train")
    train.add_argument(
        "--publish-every-updates",
        type=int,
        default=default("publish_every_updates"),
        help="publish a checkpoint every N updates (default %(default)s, as the paper)",
    )
    train.add_argument(
        "--publish-every-s",
        type=float,
        default=default("publish_every_s"),
        help="... or every T seconds, whichever comes first (default %(default)s)",
    )
    train.add_argument(
        "--keep-checkpoints",
        type=int,
        default=default("keep_checkpoints"),
        metavar="N",
        help="after each publish delete all but the newest N checkpoints (the base policy and each "
        "fleet's latest stay); 0 keeps every one (default %(default)s; a checkpoint every few "
        "seconds is gigabytes an hour)",
    )
    train.add_argument("--batch-size", type=int, default=default("batch_size"), help="(default %(default)s)")
    train.add_argument(
        "--lr",
        dest="learning_rate",
        type=float,
        default=default("learning_rate"),
        help="learning rate (default %(default)s)",
    )
    train.add_argument(
        "--ema-decay",
        type=float,
        default=default("ema_decay"),
        help="publish an exponential moving average of the weights with this decay per update (0: the raw "
        "weights; default %(default)s)",
    )
    train.add_argument(
        "--seed", type=int, default=default("seed"), help="seed of the sampler and torch (default %(default)s)"
    )
    train.add_argument(
        "--torch-threads",
        type=int,
        default=default("torch_threads"),
        help="CPU threads for training (robots share the machine in a local fleet; default %(default)s)",
    )
    train.add_argument(
        "--tasks-file",
        type=Path,
        help="the fleet's task set: uploads of other tasks are refused; RECAP normalises returns by its max steps "
        "(default config/tasks.yaml)",
    )


def _server_values(args: argparse.Namespace) -> dict[str, Any]:
    """The --config YAML's server keys with the flags on top."""
    values: dict[str, Any] = {}
    if args.config:
        try:
            values = yaml.safe_load(args.config.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise CliError(f"cannot read --config {args.config}: {exc}") from None
        if not isinstance(values, dict):
            raise CliError(f"--config {args.config}: expected a mapping of LearnerServerConfig fields")
    if args.credentials:
        values.update(
            tls_cert=args.credentials / "learner.crt",
            tls_key=args.credentials / "learner.key",
            tokens_file=args.credentials / "tokens.json",
        )
        if args.mtls:
            values["client_ca"] = args.credentials / "ca.crt"
    values.update({key: getattr(args, key) for key in _SERVER_FLAGS if getattr(args, key) is not None})
    if args.insecure:
        values["insecure"] = True
    return values


def settings_from_args(args: argparse.Namespace) -> LearnerSettings:
    try:
        server = server_config(_server_values(args))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    training = {
        field.name: getattr(args, field.name)
        for field in dataclasses.fields(LearnerSettings)
        if field.name not in ("data_dir", "server") and hasattr(args, field.name)
    }
    try:
        return LearnerSettings(data_dir=args.data_dir, server=server, **training)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    process = LearnerProcess(settings_from_args(args))

    def request_stop(signum, _frame) -> None:
        _LOGGER.info("received %s", signal.Signals(signum).name)
        process.request_stop()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        process.start()
    except NothingToTrainError as exc:
        raise CliError(
            f"{exc} (`sop pretrain` writes demonstrations there; or choose another --algorithm, "
            "or --no-train to only serve)"
        ) from None
    except OSError as exc:
        raise CliError(str(exc)) from None
    process.wait()
    process.stop()
    return 1 if process.training_failed else 0


def main(argv: list[str] | None = None) -> int:
    """`python -m sop_ros.commands.learner ...` (same as `sop learner`, without the other commands)."""
    parser = argparse.ArgumentParser(
        prog="sop learner", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
