"""`sop bench model` runs through the CLI and reports real figures."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.timeout(120)


def test_bench_model_tiny_writes_figures(tmp_path, capsys):
    from sop_ros.cli import main

    out = tmp_path / "model.json"
    assert (
        main(["bench", "model", "--configs", "tiny", "--iterations", "2", "--batch-size", "4", "--json", str(out)]) == 0
    )
    figures = json.loads(out.read_text())
    (row,) = figures["rows"]
    assert row["preset"] == "tiny" and row["batch_size"] == 4
    assert 0.1 < row["params_policy_m"] < 5.0  # the tiny preset stays small enough for 2 CPU cores
    assert row["act_ms"] > 0 and row["train_step_ms"] > 0 and row["act_ratio_vs_tiny"] == 1.0
    assert "tiny" in capsys.readouterr().out
