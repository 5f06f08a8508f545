"""What `sop pretrain` shows and writes: the progress bar while it trains, the result table, the JSON summary."""

from __future__ import annotations

import json

from sop_ros.commands.plain_progress import DEFAULT_PROGRESS_INTERVAL_S, PlainProgress, progress_line


class PretrainProgress:
    """A progress bar over the time budget, with the loss, the update rate and the evaluations so far."""

    def __init__(self, console, max_seconds: float, plain_interval_s: float = DEFAULT_PROGRESS_INTERVAL_S):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("pretrain"),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self._budget = self.bar.add_task("train", total=max_seconds, status="")
        self._best = self._last = "-"
        self._plain = PlainProgress(console, plain_interval_s)

    def on_update(self, updates: int, loss: float, elapsed: float) -> None:
        if updates % 10 == 0:
            rate = updates / max(elapsed, 1e-9)
            status = (
                f"update {updates} | loss {loss:.4f} | {rate:.1f} upd/s | last eval {self._last} | best {self._best}"
            )
            self.bar.update(self._budget, completed=elapsed, status=status)
            self._plain.maybe_print(lambda: progress_line(self.bar))

    def on_eval(self, point, is_best: bool) -> None:
        self._last = f"{point.mean_success:.2f}"
        if is_best:
            self._best = f"{point.mean_success:.2f}@{point.updates}"
        per_task = ", ".join(f"{t.task_id} {t.success_rate:.2f}" for t in point.report.tasks)
        new_best = " (new best)" if is_best else ""
        self.bar.console.print(
            f"update {point.updates} ({point.elapsed_s / 60:.1f} min): "
            f"eval {point.mean_success:.2f} [{per_task}] in {point.eval_s:.0f} s{new_best}"
        )


def print_result(console, result, checkpoints, wall: float) -> None:
    from rich.table import Table

    manifest = result.manifest
    table = Table(
        title=f"base policy v{manifest.version}: update {result.best.updates} of {result.updates}, "
        f"stopped on {result.stop_reason}, {wall / 60:.1f} min"
    )
    for col in ("task", "validation success", "95% CI", "episodes"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for t in result.best.report.tasks:
        table.add_row(t.task_id, f"{t.success_rate:.2f}", f"[{t.ci_low:.2f}, {t.ci_high:.2f}]", str(t.episodes))
    table.add_row("mean", f"{result.best.mean_success:.2f}", "", "")
    console.print(table)
    version_dir = checkpoints.version_dir(manifest.version)
    console.print(
        f"published {version_dir} (sha256 {manifest.content_hash[:12]}...); evaluate it with: sop eval {version_dir}"
    )


def write_summary(path, result, checkpoints, wall: float) -> None:
    from sop_ros.bench.report import write_json

    write_json(
        path,
        {
            "checkpoint": str(checkpoints.version_dir(result.manifest.version)),
            "manifest": json.loads(result.manifest.to_json()),
            "stop_reason": result.stop_reason,
            "total_updates": result.updates,
            "best": result.best.as_dict(),
            "history": [p.as_dict() for p in result.history],
            "wall_clock_s": wall,
        },
    )
