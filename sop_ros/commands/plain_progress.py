"""Progress without a terminal: one plain line every interval when stdout is not a TTY.

rich's live views (progress bars, `sop demo`'s tables) draw only on a terminal; piped, under nohup
or a service manager they print nothing until the end, and an hour-long run looks dead. There,
PlainProgress prints one timestamped line per interval instead (the first at once); on a terminal
it does nothing and the rich view stays.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

DEFAULT_PROGRESS_INTERVAL_S = 30.0


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--progress-interval-s",
        type=_positive_seconds,
        default=DEFAULT_PROGRESS_INTERVAL_S,
        help="when stdout is not a terminal, print one progress line this often (default %(default)s s)",
    )


class PlainProgress:
    def __init__(self, console, interval_s: float = DEFAULT_PROGRESS_INTERVAL_S, clock=time.monotonic):
        if not interval_s > 0:
            raise ValueError(f"--progress-interval-s: must be positive, got {interval_s}")
        self.enabled = not console.is_terminal
        self._console, self._interval_s, self._clock = console, interval_s, clock
        self._last = -float("inf")

    def maybe_print(self, line: Callable[[], str]) -> bool:
        """Print line() if the interval has passed since the last one (never on a terminal)."""
        now = self._clock()
        if not self.enabled or now - self._last < self._interval_s:
            return False
        self._last = now
        self._console.print(f"[{time.strftime('%H:%M:%S')}] {line()}", highlight=False, markup=False, soft_wrap=True)
        return True


def progress_line(progress) -> str:
    """A rich Progress's visible tasks as one line: description, done/total, status."""
    parts = []
    for task in progress.tasks:
        if not task.visible:
            continue
        done = f"{task.completed:.0f}" + ("" if task.total is None else f"/{task.total:.0f}")
        parts.append(" ".join(p for p in (task.description, done, str(task.fields.get("status", ""))) if p))
    return " | ".join(parts)
