"""`sop learner`: run the cloud learner's gRPC services (Ingest, Policy, Fleet) over --data-dir.

    sop learner --data-dir runs/learner --credentials creds/            # TLS + tokens from `sop certs init`
    sop learner --data-dir runs/learner --credentials creds/ --mtls     # ... and require robot certificates
    sop learner --data-dir runs/learner --insecure                      # plaintext, no auth: tests only
Settings come from --config YAML (keys = LearnerConfig fields) with flags on top.
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
    train = parser.add_argument_group("training")
    train.add_argument("--algorithm", default="hg_dagger", choices=["bc", "hg_dagger", "recap"], help="post-training algorithm (default hg_dagger)")
    train.add_argument("--no-train", dest="train", action="store_false", help="only serve the link; do not train")
    train.add_argument("--publish-every-updates", type=int, default=25, help="publish a checkpoint every N updates (default 25, as the paper)")
    train.add_argument("--publish-every-s", type=float, default=60.0, help="... or every T seconds, whichever comes first")
    train.add_argument("--keep-checkpoints", type=int, default=20, metavar="N",
                       help="after each publish delete all but the newest N checkpoints (the base policy and each fleet's "
                            "latest stay); 0 keeps every one (default %(default)s; a checkpoint every few seconds is gigabytes an hour)")
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--learning-rate", type=float, default=3e-4)
    train.add_argument("--seed", type=int, default=0, help="seed of the sampler and torch (default 0)")
    train.add_argument("--torch-threads", type=int, default=1, help="CPU threads for training (robots share the machine in a local fleet)")
    train.add_argument("--tasks-file", type=Path, help="task set (max steps per task, for RECAP's return normalisation); default config/tasks.yaml")


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


def _build_trainer(args: argparse.Namespace, service):
    import torch
    from torch.utils.tensorboard import SummaryWriter

    from sop_ros.core.robot.tasks import load_task_specs

    from sop_ros.resources import default_tasks_path
    from sop_ros.core.storage.data_layout import TENSORBOARD_DIR
    from sop_ros.core.training.learner_training import LearnerTrainingConfig, build_learner_trainer
    from sop_ros.core.training.trainer import TrainerConfig

    torch.set_num_threads(max(1, args.torch_threads))
    algorithm_config = {}
    if args.algorithm == "recap":
        specs = load_task_specs(args.tasks_file or default_tasks_path())
        algorithm_config["task_max_steps"] = {task_id: spec.max_steps for task_id, spec in specs.items()}
    config = LearnerTrainingConfig(
        algorithm=args.algorithm,
        algorithm_config=algorithm_config,
        trainer=TrainerConfig(batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed,
                              publish_every_updates=args.publish_every_updates, publish_every_s=args.publish_every_s),
        seed=args.seed,
    )
    writer = SummaryWriter(log_dir=str(args.data_dir / TENSORBOARD_DIR))
    def on_checkpoint(manifest) -> None:
        service.publish_checkpoint(manifest)
        if args.keep_checkpoints > 0:
            service.checkpoint_store.prune(args.keep_checkpoints)

    trainer = build_learner_trainer(config, args.data_dir, service.episode_store, service.checkpoint_store,
                                    on_checkpoint=on_checkpoint, summary_writer=writer)
    return trainer, writer


def run(args: argparse.Namespace) -> int:
    from sop_ros.link import options
    from sop_ros.link.server import LearnerService, create_server, open_stores

    config = build_config(args)
    if args.keep_checkpoints < 0:
        raise CliError(f"--keep-checkpoints: must be >= 0 (0 keeps every checkpoint), got {args.keep_checkpoints}")
    stop = threading.Event()

    def request_stop(signum, _frame) -> None:
        _LOGGER.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        service = LearnerService(config, *open_stores(args.data_dir, config.max_episode_bytes))
        server, port = create_server(service)
        server.start()
    except OSError as exc:
        raise CliError(str(exc)) from None
    _LOGGER.info("learner serving on %s (port %d), data in %s, %d worker threads", config.address, port, args.data_dir, options.worker_threads(config.expected_robots))
    training_failed = threading.Event()
    trainer_thread = None
    writer = None
    if args.train:
        trainer, writer = _build_trainer(args, service)
        latest = service.checkpoint_store.latest()
        if latest is not None:
            service.publish_checkpoint(latest)  # robots joining now get the current policy

        def train() -> None:
            try:
                trainer.run(should_stop=stop.is_set)
            except Exception:  # keep serving: robots' uploads stay safe even if training breaks
                _LOGGER.exception("training stopped with an error; the learner keeps serving uploads")
                training_failed.set()

        trainer_thread = threading.Thread(target=train, name="sop-trainer", daemon=True)
        trainer_thread.start()
        _LOGGER.info("training %s continuously; TensorBoard logs in %s", args.algorithm, args.data_dir / "tensorboard")
    stop.wait()
    if trainer_thread is not None:
        trainer_thread.join(timeout=60)
        writer.close()
    _LOGGER.info("stopping: draining in-flight calls for up to %.1f s", config.shutdown_grace_s)
    service.stop(server)
    return 1 if training_failed.is_set() else 0


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
