"""`sop experiment`'s live progress view: a bar over the runs and one for the current run's phase."""

from __future__ import annotations

from sop_ros.commands.plain_progress import DEFAULT_PROGRESS_INTERVAL_S, PlainProgress, progress_line


class ExperimentProgress:
    """One bar over the runs and one for the current run's phase (fleet time, evaluation episodes, offline updates)."""

    def __init__(
        self, console, runs: int, fleet_duration_s: float, plain_interval_s: float = DEFAULT_PROGRESS_INTERVAL_S
    ):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=console,
        )
        self._overall = self.bar.add_task("runs", total=runs, status="")
        self._phase = self.bar.add_task("", total=None, status="")
        self._fleet_duration_s = fleet_duration_s
        self._plain = PlainProgress(console, plain_interval_s)

    def _tick(self) -> None:
        self._plain.maybe_print(lambda: progress_line(self.bar))

    def run_done(self) -> None:
        self.bar.advance(self._overall)
        self._tick()

    def phase(self, text: str, total=None) -> None:
        # A fresh bar per phase: rich cannot make a bar indeterminate again once it had a total.
        self.bar.remove_task(self._phase)
        self._phase = self.bar.add_task(text, total=total, status="")
        self._tick()

    def fleet_tick(self, elapsed: float, counts) -> None:
        recent = "-" if counts.recent_success_rate is None else f"{counts.recent_success_rate:.2f}"
        share = "-" if counts.recent_intervention_share is None else f"{counts.recent_intervention_share:.2f}"
        self.bar.update(
            self._phase,
            total=round(self._fleet_duration_s),
            completed=round(elapsed),
            status=f"{counts.episodes} episodes | recent success {recent} | operator share {share} "
            f"| policy v{counts.latest_version}",
        )
        self._tick()

    def offline_update(self, done: int, total: int) -> None:
        if done % 10 == 0 or done == total:
            self.bar.update(self._phase, total=total, completed=done)
            self._tick()

    def eval_episode(self) -> None:
        self.bar.advance(self._phase)
        self._tick()

    def hooks(self, run_name: str):
        from sop_ros.experiment.runner import RunHooks

        return RunHooks(
            phase=lambda text, total=None: self.phase(f"{run_name}: {text}", total),
            fleet_tick=self.fleet_tick,
            eval_episode=self.eval_episode,
            offline_update=self.offline_update,
        )
