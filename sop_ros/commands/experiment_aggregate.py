"""Finished run units from several `sop experiment` folders -> one results folder (the CLI's own writer).

    python -m sop_ros.commands.experiment_aggregate OUT RUN_DIR [RUN_DIR ...] [--seeds N] [--duration-min M]

Units of one experiment can be computed in different folders (a second seed started while the first
experiment still ran, a baseline added later); each RUN_DIR is a `<out>/runs/<run>` folder with its
result.json. OUT gets every unit's result.json, the CSVs, plots, results.md and summary.json, exactly
as `sop experiment` writes them. The units must share the experiment's settings (the caller's duty:
compare their folders' experiment.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import shutil
import sys
from pathlib import Path

from sop_ros.bench.report import machine_info
from sop_ros.commands.experiment import write_outputs
from sop_ros.experiment.results import load_run_result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--duration-min", type=float, default=60.0)
    parser.add_argument("--robot-hz", type=float, default=10.0)
    parser.add_argument("--threshold", type=float, default=0.8)
    args = parser.parse_args(argv)
    results = []
    for run_dir in args.run_dirs:
        result = load_run_result(run_dir)
        if result is None:
            parser.error(f"{run_dir}: no finished run (result.json) there")
        results.append(result)
    args.out.mkdir(parents=True, exist_ok=True)
    for run_dir, result in zip(args.run_dirs, results):
        shutil.copy(run_dir / "result.json", args.out / f"{result.name}.result.json")
    extra = {
        "command": "python -m sop_ros.commands.experiment_aggregate "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "aggregated_from": [str(d) for d in args.run_dirs],
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(),
    }
    data = write_outputs(args.out, results, args, extra)
    keys = (
        "final_success",
        "final_success_ci95",
        "human_steps",
        "success_gain_per_1000_human_steps",
        "ceiling_success",
    )
    print(json.dumps({k: data[k] for k in keys}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
