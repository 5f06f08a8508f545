"""Which fleet steps should be training labels? An offline ablation on one fixed set of fleet episodes.

Online post-training couples two things: what the fleet collects and what the learner makes of it.
This separates the second: take the episodes a fleet collected with the fixed base policy (a
`non_sop` run of `sop experiment`: its <run>/learner holds them, the offline demos and the base v1),
train the same learner (build_learner_trainer: warm start from v1, the task-aware online/offline
sampler) for the same number of updates once per variant of the algorithm's config, and evaluate
each result on `sop experiment`'s fixed test scenes. Variants differ only in their algorithm
config, so differences are the labels' (and the training noise's: run several --seed values).

    python -m sop_ros.experiment.label_ablation --fleet-data RUN/learner --out OUT --updates 2400 \\
        --variant all='{}' --variant successful='{"corrections": "successful"}'

Each (variant, seed) is a unit cached on disk (<out>/<variant>-s<seed>/result.json, with the
config it ran): rerunning the command completes only what is missing. <out>/results.md tabulates.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sop_ros.core.evaluation.harness import DEFAULT_EVAL_SEED, wilson_interval
from sop_ros.core.robot.tasks import load_task_specs
from sop_ros.core.storage.checkpoint_store import CheckpointStore
from sop_ros.core.storage.data_layout import CHECKPOINTS_DIR, EPISODES_DIR, OFFLINE_DIR
from sop_ros.core.storage.episode_store import EpisodeStore
from sop_ros.experiment.checkpoint_eval import CheckpointEvaluator
from sop_ros.experiment.offline_training import train_offline
from sop_ros.resources import default_tasks_path

log = logging.getLogger(__name__)
RESULT_FILE = "result.json"


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    algorithm: str
    config: dict[str, Any]


def parse_variant(text: str, algorithm: str) -> Variant:
    """NAME=JSON (the algorithm config's fields, e.g. all='{}' or successful='{"corrections": "successful"}')."""
    name, sep, config = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"--variant: expected NAME=JSON, got {text!r}")
    try:
        parsed = json.loads(config or "{}")
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--variant {name}: not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"--variant {name}: the config must be a JSON object")
    return Variant(name.strip(), algorithm, parsed)


def fleet_label_counts(episodes_dir: Path) -> dict[str, int]:
    """What the fleet data offers as labels: episodes, human steps, and how many of each come from successes."""
    with EpisodeStore(episodes_dir, cache_in_background=False) as store:
        stored = store.query()
    ok = [e for e in stored if e.success]
    taken_over = [e for e in stored if e.human_steps > 0]
    return {
        "episodes": len(stored),
        "successful_episodes": len(ok),
        "takeover_episodes": len(taken_over),
        "successful_takeover_episodes": sum(1 for e in taken_over if e.success),
        "steps": sum(e.num_steps for e in stored),
        "human_steps": sum(e.human_steps for e in stored),
        "human_steps_in_successful": sum(e.human_steps for e in ok),
        "policy_steps_in_successful": sum(e.num_steps - e.human_steps for e in ok),
    }


def prepare_variant_dir(fleet_data: Path, unit_dir: Path) -> Path:
    """A learner dir with the fleet's episodes, the offline demos and only the base (lowest) checkpoint."""
    base = CheckpointStore(fleet_data / CHECKPOINTS_DIR).versions()
    if not base:
        raise ValueError(f"{fleet_data / CHECKPOINTS_DIR}: no base checkpoint")
    learner = unit_dir / "learner"
    if learner.exists():
        shutil.rmtree(learner)  # a unit cut short starts again from the base
    ignore = shutil.ignore_patterns(".*.tmp*", "*.lock")
    shutil.copytree(fleet_data / EPISODES_DIR, learner / EPISODES_DIR, ignore=ignore)
    shutil.copytree(fleet_data / OFFLINE_DIR, learner / OFFLINE_DIR, ignore=ignore)
    src = CheckpointStore(fleet_data / CHECKPOINTS_DIR).version_dir(base[0])
    shutil.copytree(src, learner / CHECKPOINTS_DIR / src.name, ignore=ignore)
    return learner


def unit_config(variant: Variant, seed: int, updates: int, eval_episodes: int, fleet_data: Path) -> dict[str, Any]:
    return {
        "variant": variant.name,
        "algorithm": variant.algorithm,
        "algorithm_config": variant.config,
        "seed": seed,
        "updates": updates,
        "eval_episodes_per_task": eval_episodes,
        "eval_first_seed": DEFAULT_EVAL_SEED,
        "fleet_data": str(fleet_data),
    }


def run_unit(variant: Variant, seed: int, args: argparse.Namespace, evaluator: CheckpointEvaluator) -> dict[str, Any]:
    config = unit_config(variant, seed, args.updates, args.eval_episodes, args.fleet_data)
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    unit_dir = args.out / f"{variant.name}-s{seed}"
    result_path = unit_dir / RESULT_FILE
    if result_path.is_file():
        done = json.loads(result_path.read_text())
        if done.get("config_hash") == key:
            return done
    unit_dir.mkdir(parents=True, exist_ok=True)
    learner = prepare_variant_dir(args.fleet_data, unit_dir)
    t0 = time.monotonic()
    manifest = train_offline(
        learner, args.updates, variant.algorithm, args.threads, seed=seed, algorithm_config=variant.config
    )
    train_s = time.monotonic() - t0
    result = evaluator.evaluate(learner / CHECKPOINTS_DIR, manifest.version, args.eval_episodes)
    n = args.eval_episodes * len(result.per_task)
    successes = round(sum(result.per_task.values()) * args.eval_episodes)
    done = {
        "config": config,
        "config_hash": key,
        "per_task": result.per_task,
        "mean_success": result.mean_success,
        "ci95": wilson_interval(successes, n),
        "train_s": round(train_s, 1),
        "content_hash": manifest.content_hash,
    }
    tmp = unit_dir / f".{RESULT_FILE}.tmp"
    tmp.write_text(json.dumps(done, indent=1, sort_keys=True))
    os.replace(tmp, result_path)
    shutil.rmtree(learner / EPISODES_DIR)  # the copy of the fleet data; the trained checkpoint stays
    return done


def results_markdown(rows: Sequence[Mapping[str, Any]], counts: Mapping[str, int], base: Mapping[str, Any]) -> str:
    tasks = list(base["per_task"])
    head = "| variant | seed | mean success | 95 % CI | " + " | ".join(tasks) + " |"
    lines = [
        "# Label ablation",
        "",
        "Fleet data: " + ", ".join(f"{k} {v}" for k, v in counts.items()),
        "",
        head,
        "|" + "---|" * (4 + len(tasks)),
    ]
    for r in [base, *rows]:
        ci = r["ci95"]
        cells = " | ".join(f"{r['per_task'][t]:.2f}" for t in tasks)
        lines.append(
            f"| {r['config']['variant']} | {r['config'].get('seed', '-')} | {r['mean_success']:.3f} | "
            f"{ci[0]:.2f}-{ci[1]:.2f} | {cells} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sop_ros.experiment.label_ablation", description=__doc__)
    parser.add_argument("--fleet-data", type=Path, required=True, help="a non_sop run's learner dir")
    parser.add_argument("--out", type=Path, required=True, help="results folder (resumable)")
    parser.add_argument("--algorithm", default="hg_dagger", help="algorithm of every variant (default hg_dagger)")
    parser.add_argument("--variant", action="append", required=True, help="NAME=JSON algorithm config (repeat)")
    parser.add_argument("--updates", type=int, default=2400, help="updates per training (default 2400)")
    parser.add_argument("--seeds", type=int, default=1, help="trainings per variant, seeds 0.. (default 1)")
    parser.add_argument("--eval-episodes", type=int, default=50, help="test scenes per task (default 50)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the training (default 1)")
    parser.add_argument("--workers", type=int, default=1, help="evaluation processes (default 1)")
    args = parser.parse_args(argv)
    args.variants = [parse_variant(v, args.algorithm) for v in args.variant]
    if len({v.name for v in args.variants}) != len(args.variants):
        parser.error("--variant: names must be unique")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    counts = fleet_label_counts(args.fleet_data / EPISODES_DIR)
    specs = load_task_specs(default_tasks_path())
    with EpisodeStore(args.fleet_data / EPISODES_DIR, cache_in_background=False) as store:
        present = set(store.tasks())
    # In the task file's order, as `sop experiment` evaluates them (the evaluation cache's key includes it).
    tasks = {t: spec for t, spec in specs.items() if t in present}
    evaluator = CheckpointEvaluator(tasks, args.out / "eval_cache.json", workers=args.workers)
    base_store = CheckpointStore(args.fleet_data / CHECKPOINTS_DIR)
    base_eval = evaluator.evaluate(base_store.root, base_store.versions()[0], args.eval_episodes)
    n = args.eval_episodes * len(tasks)
    base = {
        "config": {"variant": "base (no training)"},
        "per_task": base_eval.per_task,
        "mean_success": base_eval.mean_success,
        "ci95": wilson_interval(round(base_eval.mean_success * n), n),
    }
    rows = []
    for seed in range(args.seeds):
        for variant in args.variants:
            row = run_unit(variant, seed, args, evaluator)
            log.info("%s seed %d: mean success %.3f %s", variant.name, seed, row["mean_success"], row["per_task"])
            rows.append(row)
            (args.out / "results.md").write_text(results_markdown(rows, counts, base))
    print((args.out / "results.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
