"""Progress without a terminal: one plain line per interval; nothing extra on a terminal."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from sop_ros.commands.experiment_progress import ExperimentProgress
from sop_ros.commands.plain_progress import PlainProgress
from sop_ros.commands.pretrain_report import PretrainProgress


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=200), out


def test_one_line_per_interval_when_not_a_terminal():
    console, out = _console(terminal=False)
    now = [0.0]
    plain = PlainProgress(console, interval_s=30.0, clock=lambda: now[0])
    printed = []
    for t in range(0, 100, 5):  # 0, 5, ..., 95 s
        now[0] = float(t)
        printed.append(plain.maybe_print(lambda: f"at {now[0]:.0f} s"))
    assert [t for t, p in zip(range(0, 100, 5), printed) if p] == [0, 30, 60, 90]
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and lines[1].endswith("at 30 s") and lines[0].startswith("[")
    with pytest.raises(ValueError):
        PlainProgress(console, interval_s=0)


def test_experiment_and_pretrain_progress_print_plain_lines_only_without_a_terminal():
    for terminal in (False, True):
        console, out = _console(terminal)
        progress = ExperimentProgress(console, runs=3, fleet_duration_s=1200.0, plain_interval_s=1e-9)
        progress.phase("sop_hg_dagger-r4-s0: offline hg_dagger: 100 updates", 100)
        progress.offline_update(50, 100)
        pretrain = PretrainProgress(console, max_seconds=60.0, plain_interval_s=1e-9)
        pretrain.on_update(10, 0.5, 2.0)
        text = out.getvalue()
        plain = [line for line in text.splitlines() if line.startswith("[")]
        if terminal:
            assert plain == []
        else:
            assert any("runs 0/3" in line and "offline hg_dagger: 100 updates 50/100" in line for line in plain)
            assert any("update 10 | loss 0.5000" in line for line in plain)


def test_demo_summary_reads_an_empty_fleet(tmp_path):
    import time

    from sop_ros.commands.demo import progress_summary

    line = progress_summary(tmp_path, time.monotonic(), 360.0)
    assert "0 episodes" in line and "policy -" in line
