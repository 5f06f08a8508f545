"""`sop experiment --quick`: the CI form of the experiment, on real MetaWorld with the shipped base policy."""

from __future__ import annotations

import json

import pytest
from conftest import sop_cli

pytestmark = pytest.mark.timeout(900)


def test_quick_experiment_runs_and_finds_the_virtual_clock_deterministic(tmp_path):
    out = tmp_path / "quick"
    result = sop_cli("experiment", "--quick", "--out", str(out), "--workers", "1", timeout=880)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "deterministic: " in result.stdout and "NOT deterministic" not in result.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clock"] == "virtual" and summary["runs"] == ["base-r0-s0", "sop_hg_dagger-r2-s0"]
    assert summary["duration_s"] == 30.0 and summary["eval_episodes_per_task"] == 3
    assert not (out / "determinism").exists() or not any((out / "determinism").iterdir())
