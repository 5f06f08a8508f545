"""`sop dataset export|import`: LeRobot v3.0 datasets out of and into sop_ros episodes.

    sop dataset export runs/learner/episodes runs/lerobot-fleet      # an episode store, offline buffer or spool
    sop dataset import runs/lerobot-fleet runs/demos-imported --reference runs/learner/episodes
    sop dataset import some-dataset runs/demos --mapping mapping.yaml --data-dir runs/learner
    sop pretrain --demos runs/demos --data-dir runs/learner

Export writes meta/info.json, stats.json, tasks.parquet, meta/episodes, data/ (parquet) and one mp4 per camera
and file; sop_ros's extras ride along (per frame: intervention, actor, policy_version, stamp_ns; per
episode: success, label_source, episode_uuid, robot_id, task_id). Import writes episode files, the
directory `sop pretrain --demos` takes; `--data-dir` also commits them to <data-dir>/offline, the learner's
offline buffer. `--reference` compares the imported episodes with the originals (exact fields, PSNR).
Both build their output in a temp directory next to it and rename it at the end.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sop_ros.commands.errors import CliError
from sop_ros.core.training.demo_recording import recorded_chunk_size
from sop_ros.datasets import lerobot_format as fmt
from sop_ros.datasets.import_mapping import ImportMapping, TaskTarget, load_mapping
from sop_ros.datasets.video import VideoSettings
from sop_ros.resources import node_defaults


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dataset",
        help="export episodes as a LeRobot v3.0 dataset, import one as an offline buffer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="dataset_action", metavar="ACTION", required=True)
    export = actions.add_parser("export", help="stored episodes -> a LeRobot v3.0 dataset directory")
    export.add_argument("source", type=Path, help="an episode store, offline buffer (demo directory) or spool")
    export.add_argument("out", type=Path, help="dataset directory to create (must not exist or be empty)")
    export.add_argument(
        "--fps",
        type=int,
        default=round(node_defaults("policy")["control_rate_hz"]),
        help="frames per second: the rate the policy acted at (default: config/robot.yaml's control rate, "
        "%(default)s; demo timestamps are simulator time, not the control rate)",
    )
    export.add_argument("--camera-key", default=fmt.DEFAULT_CAMERA_KEY, help="video feature name (%(default)s)")
    defaults = VideoSettings()
    export.add_argument("--codec", default=defaults.codec, choices=["h264", "hevc", "libsvtav1"], help="%(default)s")
    export.add_argument("--pix-fmt", default=defaults.pix_fmt, help="pixel format (default %(default)s)")
    export.add_argument("--crf", type=int, default=defaults.crf, help="quality, lower is better (%(default)s)")
    export.add_argument("--frames-per-file", type=int, default=50_000, help="frames per data/video file (%(default)s)")
    export.set_defaults(func=_export)
    imp = actions.add_parser("import", help="a LeRobot v3.0 dataset -> episode files (an offline buffer)")
    imp.add_argument("dataset", type=Path, help="LeRobot v3.0 dataset directory")
    imp.add_argument("out", type=Path, help="directory of episode files to create (must not exist or be empty)")
    imp.add_argument("--mapping", type=Path, help="YAML: camera, state, action, robot_id, success, tasks")
    imp.add_argument("--camera", help=f"video feature to use as the camera (default {fmt.DEFAULT_CAMERA_KEY})")
    imp.add_argument("--state", help=f"state feature (default {fmt.STATE_KEY})")
    imp.add_argument("--action", help=f"action feature (default {fmt.ACTION_KEY})")
    imp.add_argument("--task", action="append", default=[], metavar="TEXT=TASK_ID", help="dataset task -> task id")
    imp.add_argument("--robot-id", help="robot id of the imported episodes (default lerobot-import)")
    imp.add_argument("--chunk-size", type=int, default=recorded_chunk_size(), help="K of proposed chunks (%(default)s)")
    imp.add_argument("--data-dir", type=Path, help="also commit the episodes to <data-dir>/offline (learner)")
    imp.add_argument("--reference", type=Path, help="the exported source: compare (exact fields, image PSNR)")
    imp.set_defaults(func=_import)


def _export(args: argparse.Namespace) -> int:
    from sop_ros.datasets.episode_sources import episode_files
    from sop_ros.datasets.lerobot_export import ExportSettings, export_dataset

    if args.fps <= 0 or args.frames_per_file <= 0:
        raise CliError("--fps and --frames-per-file must be positive")
    video = VideoSettings(codec=args.codec, pix_fmt=args.pix_fmt, crf=args.crf)
    settings = ExportSettings(args.fps, args.camera_key, video, args.frames_per_file)
    try:
        summary = export_dataset(episode_files(args.source), args.out, settings)
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from None
    print(
        f"exported {summary.episodes} episodes ({summary.frames} frames, {summary.tasks} tasks, {summary.fps} fps) "
        f"to {summary.out} in {summary.seconds:.1f} s ({summary.frames / summary.seconds:.0f} frames/s)"
    )
    return 0


def mapping_from_args(args: argparse.Namespace) -> ImportMapping:
    """The mapping file's settings, each overridden by its flag."""
    try:
        mapping = load_mapping(args.mapping) if args.mapping else ImportMapping()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    tasks = dict(mapping.tasks)
    for item in args.task:
        text, sep, task_id = item.rpartition("=")
        if not sep or not text or not task_id:
            raise CliError(f"--task {item!r}: expected TEXT=TASK_ID")
        tasks[text] = TaskTarget(task_id, text)
    return ImportMapping(
        camera=args.camera or mapping.camera,
        state=args.state or mapping.state,
        action=args.action or mapping.action,
        robot_id=args.robot_id or mapping.robot_id,
        success=mapping.success,
        tasks=tasks,
    )


def _import(args: argparse.Namespace) -> int:
    from sop_ros.datasets.episode_sources import episode_files
    from sop_ros.datasets.lerobot_import import import_dataset
    from sop_ros.datasets.round_trip import compare_round_trip

    if args.chunk_size <= 0:
        raise CliError("--chunk-size must be positive")
    try:
        summary = import_dataset(args.dataset, args.out, mapping_from_args(args), args.chunk_size)
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from None
    print(
        f"imported {summary.episodes} episodes ({summary.frames} frames) into {summary.out} "
        f"in {summary.seconds:.1f} s ({summary.frames / summary.seconds:.0f} frames/s)"
    )
    if args.reference:
        try:
            print(compare_round_trip(episode_files(args.reference), episode_files(args.out)).summary())
        except (OSError, ValueError) as exc:
            raise CliError(f"--reference {args.reference}: {exc}") from None
    if args.data_dir:
        _ingest_offline(args.data_dir, episode_files(args.out))
    return 0


def _ingest_offline(data_dir: Path, files: list[Path]) -> None:
    """Commit the episode files to the learner's offline store, through its verified upload path."""
    from sop_ros.core.storage.data_layout import OFFLINE_DIR
    from sop_ros.core.storage.episode_store import EpisodeStore
    from sop_ros.core.training.pretrain import PretrainError, ingest_episode_files

    with EpisodeStore(data_dir / OFFLINE_DIR, cache_in_background=False) as offline:
        try:
            stored = ingest_episode_files(offline, files)
        except PretrainError as exc:
            raise CliError(str(exc)) from None
        print(f"offline buffer {offline.root}: {len(stored)} episodes committed ({offline.count()} in all)")
