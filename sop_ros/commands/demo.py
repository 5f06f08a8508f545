"""`sop demo`: the whole loop on one machine, from the embedded defaults.

Starts the learner and the simulated robots of config/fleet.yaml (scripted operator,
HG-DAgger by default) and shows live progress until the duration ends or Ctrl-C. On first use
(no checkpoint in the learner data dir) it installs the base policy shipped with the package as
v1 and collects the offline demos (about 10 s); --train-base trains one from scratch instead
(`sop pretrain`, up to --pretrain-minutes). At the end it plots success and intervention
rate over time per task, says where the TensorBoard logs are, and stops every process.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from sop_ros.commands.errors import CliError
from sop_ros.commands.plain_progress import PlainProgress, add_progress_argument
from sop_ros.core.evaluation.fleet_metrics import window_stats
from sop_ros.core.storage.checkpoint_store import MANIFEST_FILE, CheckpointManifest
from sop_ros.core.storage.data_layout import CHECKPOINTS_DIR, EPISODES_DIR, OFFLINE_DIR, TENSORBOARD_DIR
from sop_ros.core.storage.episode_store import read_index
from sop_ros.fleet.description import FleetConfigError, default_fleet_path, load_fleet
from sop_ros.fleet.launcher import FleetLauncher
from sop_ros.fleet.specs import node_specs

_LOG = logging.getLogger(__name__)
RECENT_EPISODES = 10  # per robot, for the live success / intervention rates


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the local fleet demo: learner + simulated robots training online",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--fleet", default=str(default_fleet_path()), help="fleet description (default: the embedded config/fleet.yaml)"
    )
    parser.add_argument(
        "--duration-min",
        type=float,
        default=30.0,
        help="stop after this many minutes (default 30; Ctrl-C stops earlier)",
    )
    parser.add_argument(
        "--train-base",
        action="store_true",
        help="on first use, train the base policy from scratch with `sop pretrain` (10-16 min on 2 cores) "
        "instead of installing the shipped one",
    )
    # Passed on to `sop pretrain` only when given: its defaults stay the only ones.
    parser.add_argument(
        "--demos-per-task",
        type=int,
        help="demos to collect into the offline buffer on first use (default: sop pretrain's)",
    )
    parser.add_argument(
        "--pretrain-minutes",
        type=float,
        help="with --train-base: time budget for training the base policy (default: sop pretrain's --max-minutes)",
    )
    add_progress_argument(parser)
    parser.set_defaults(func=run)


def latest_manifests(checkpoints_dir: Path) -> list[CheckpointManifest]:
    """Published checkpoints, oldest first, read without opening (and so without repairing) the learner's store."""
    out = []
    for manifest in sorted(checkpoints_dir.glob(f"v*/{MANIFEST_FILE}")):
        try:
            out.append(CheckpointManifest.from_json(manifest.read_bytes()))
        except (OSError, ValueError):
            continue  # being written right now
    return sorted(out, key=lambda m: m.version)


def ensure_base_policy(data_dir: Path, args: argparse.Namespace, console: Console) -> None:
    """On first use: the shipped base policy as v1 (or, with --train-base, one trained by `sop pretrain`)."""
    if args.pretrain_minutes is not None and not args.train_base:
        raise CliError("--pretrain-minutes applies only with --train-base")
    if latest_manifests(data_dir / CHECKPOINTS_DIR):
        return
    if args.train_base:
        train_base_policy(data_dir, args, console)
        return
    from sop_ros.commands.shipped_base import install_shipped_base, success_summary

    console.print(
        f"[bold]No base policy in {data_dir}: using the shipped base policy ({success_summary()}).[/bold] "
        "Collecting its offline demos first (about 10 s); --train-base trains one from scratch instead."
    )
    install_shipped_base(data_dir, data_dir.parent / "demos", args.demos_per_task)


def train_base_policy(data_dir: Path, args: argparse.Namespace, console: Console) -> None:
    from sop_ros.commands.shipped_base import pretrain_args

    options = []
    if args.pretrain_minutes is not None:
        options += ["--max-minutes", str(args.pretrain_minutes)]
    if args.demos_per_task:
        options += ["--demos-per-task", str(args.demos_per_task)]
    pre = pretrain_args(data_dir.parent / "demos", data_dir, *options)
    console.print(
        f"[bold]No base policy cached in {data_dir}.[/bold] Collecting scripted-expert demos and training one "
        f"by behaviour cloning first (once; up to {pre.max_minutes:g} min)."
    )
    code = pre.func(pre)
    if code or not latest_manifests(data_dir / CHECKPOINTS_DIR):
        raise CliError(f"training the base policy failed (exit code {code}); see the messages above")


def _rate(values) -> str:
    values = [v for v in values if v is not None]
    return f"{sum(values) / len(values):.2f}" if values else "-"


def progress_summary(data_dir: Path, started: float, duration_s: float) -> str:
    """The live view in one line: fleet time, episodes, recent success and operator share, policy version."""
    rows = read_index(data_dir / EPISODES_DIR)
    recent = rows[-RECENT_EPISODES * 4 :]
    steps = sum(r.num_steps for r in recent)
    share = f"{sum(r.human_steps for r in recent) / steps:.2f}" if steps else "-"
    success = _rate([None if r.success is None else float(r.success) for r in recent])
    manifests = latest_manifests(data_dir / CHECKPOINTS_DIR)
    version = f"v{manifests[-1].version}" if manifests else "-"
    return (
        f"demo {time.monotonic() - started:.0f}/{duration_s:.0f} s | {len(rows)} episodes | recent success {success} "
        f"| operator share {share} | policy {version}"
    )


def progress_view(data_dir: Path, robot_ids: list[str], started: float, duration_s: float, log_path: Path) -> Group:
    rows = read_index(data_dir / EPISODES_DIR)
    robots = Table(title=f"robots  ({time.monotonic() - started:.0f} s of {duration_s:.0f} s; node logs: {log_path})")
    for col in (
        "robot",
        "episodes",
        f"success (last {RECENT_EPISODES})",
        f"intervention share (last {RECENT_EPISODES})",
        "policy version",
    ):
        robots.add_column(col, justify="left" if col == "robot" else "right")
    for robot_id in robot_ids:
        mine = [r for r in rows if r.robot_id == robot_id]
        recent = mine[-RECENT_EPISODES:]
        steps = sum(r.num_steps for r in recent)
        robots.add_row(
            robot_id,
            str(len(mine)),
            _rate([None if r.success is None else float(r.success) for r in recent]),
            f"{sum(r.human_steps for r in recent) / steps:.2f}" if steps else "-",
            str(max((r.policy_version_max for r in mine), default="-")),
        )
    manifests = latest_manifests(data_dir / CHECKPOINTS_DIR)
    learner = Table(title="learner")
    for col in ("latest checkpoint", "algorithm", "training step", "updates/s", "fleet episodes", "offline episodes"):
        learner.add_column(col, justify="right")
    rate = "-"
    if len(manifests) >= 2 and manifests[-1].created_ns > manifests[-2].created_ns:
        a, b = manifests[-2], manifests[-1]
        rate = f"{(b.training_step - a.training_step) / ((b.created_ns - a.created_ns) / 1e9):.1f}"
    last = manifests[-1] if manifests else None
    learner.add_row(
        f"v{last.version}" if last else "-",
        last.algorithm if last else "-",
        str(last.training_step) if last else "-",
        rate,
        str(len(rows)),
        str(len(read_index(data_dir / OFFLINE_DIR))),
    )
    return Group(robots, learner)


def plot_progress(data_dir: Path, start_ns: int, duration_s: float, out_png: Path) -> Path:
    """Success and intervention share over time per task, from the learner's episode index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in read_index(data_dir / EPISODES_DIR) if r.end_ns >= start_ns]
    window_s = max(60.0, duration_s / 10)
    fig, (ax_success, ax_human) = plt.subplots(1, 2, figsize=(11, 4))
    for task in sorted({r.task_id for r in rows}):
        windows = window_stats(rows, start_ns, duration_s, window_s, task_id=task)
        minutes = [(w.start_s + w.end_s) / 120 for w in windows]
        ax_success.plot(minutes, [w.success_rate for w in windows], marker="o", label=task)
        ax_human.plot(minutes, [w.intervention_share for w in windows], marker="o", label=task)
    ax_success.set(title="episode success rate", xlabel="minutes", ylim=(-0.05, 1.05))
    ax_human.set(title="share of steps corrected by the operator", xlabel="minutes", ylim=(-0.05, 1.05))
    for ax in (ax_success, ax_human):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png


def run(args: argparse.Namespace) -> int:
    console = Console()
    try:
        fleet = load_fleet(args.fleet)
    except FleetConfigError as err:
        raise CliError(str(err)) from None
    if not fleet.learner.run_locally:
        raise CliError(f"{args.fleet}: learner.run_locally is false; the demo runs the learner on this machine")
    data_dir = fleet.learner_data_dir()
    ensure_base_policy(data_dir, args, console)

    demo_dir = fleet.resolved_state_dir / "demo"
    demo_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_path = demo_dir / f"fleet-{stamp}.log"
    duration_s = args.duration_min * 60
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    with log_path.open("w") as log:
        launcher = FleetLauncher(node_specs(fleet), out=log)
        runner = threading.Thread(target=launcher.run, name="fleet", daemon=True)
        start_ns, started = time.time_ns(), time.monotonic()
        console.print(
            f"Starting the learner ({fleet.learner.algorithm}) and {len(fleet.robots)} simulated robots; Ctrl-C stops."
        )
        runner.start()
        robot_ids = [r.id for r in fleet.robots]
        plain = PlainProgress(console, args.progress_interval_s)  # no terminal: the live view draws nothing
        with Live(
            progress_view(data_dir, robot_ids, started, duration_s, log_path), console=console, refresh_per_second=1
        ) as live:
            while not stop.wait(2.0) and runner.is_alive() and time.monotonic() - started < duration_s:
                live.update(progress_view(data_dir, robot_ids, started, duration_s, log_path))
                plain.maybe_print(lambda: progress_summary(data_dir, started, duration_s))
        console.print("Stopping every process ...")
        launcher.request_stop()
        runner.join(timeout=120)
    elapsed = time.monotonic() - started
    png = plot_progress(data_dir, start_ns, elapsed, demo_dir / f"progress-{stamp}.png")
    console.print(f"Success and intervention rate over time: {png}")
    console.print(
        f"TensorBoard logs: {data_dir / TENSORBOARD_DIR}  (tensorboard --logdir {data_dir / TENSORBOARD_DIR})"
    )
    console.print(f"Node logs: {log_path}")
    if launcher.exit_code:
        console.print(f"[red]A fleet process died (see {log_path}); the demo stopped early.[/red]")
    return launcher.exit_code
