"""The wall-vs-virtual cross-check reads two runs' result.json files and judges each figure within the tolerance."""

from __future__ import annotations

import json

import pytest

from sop_ros.experiment.cross_check import compare, main, read_figures


def _result(path, clock, episodes, updates, share, robots=2, duration_s=600.0):
    result = {
        "robots": robots,
        "duration_s": duration_s,
        "learner_updates": updates,
        "fleet": {"clock": clock, "achieved_step_hz": 9.9},
        "online_totals": {"episodes": episodes, "intervention_share": share},
    }
    path.write_text(json.dumps(result))
    return path


def test_figures_per_robot_hour_and_per_episode(tmp_path):
    figures = read_figures(_result(tmp_path / "w.json", "wall", episodes=120, updates=4800, share=0.3))
    assert figures.episodes_per_robot_hour == pytest.approx(360.0)  # 120 episodes / (2 robots x 1/6 h)
    assert figures.updates_per_episode == pytest.approx(40.0) and figures.learner_updates_per_s == pytest.approx(8.0)


def test_compare_flags_the_figure_outside_the_tolerance(tmp_path, capsys):
    wall = _result(tmp_path / "w.json", "wall", episodes=100, updates=4000, share=0.30)
    virtual = _result(tmp_path / "v.json", "virtual", episodes=110, updates=4000, share=0.36)
    rows = {row.figure: row for row in compare(read_figures(wall), read_figures(virtual))}
    assert rows["episodes per robot-hour"].agrees(0.15)  # +10 %
    assert not rows["operator share of steps"].agrees(0.15)  # +20 %
    assert rows["learner updates per episode"].ratio == pytest.approx(100 / 110)
    assert main(["compare", str(wall), str(virtual)]) == 1
    assert "| operator share of steps | 0.300 | 0.360 | 1.200 | **no** |" in capsys.readouterr().out
    assert main(["compare", str(wall), str(virtual), "--tolerance", "0.25"]) == 0


def test_wrong_files_and_swapped_clocks_are_clear_errors(tmp_path, capsys):
    wall = _result(tmp_path / "w.json", "wall", episodes=100, updates=4000, share=0.3)
    (tmp_path / "junk.json").write_text("{}")
    assert main(["compare", str(tmp_path / "junk.json"), str(wall)]) == 2
    assert "junk.json: not a fleet run's result.json" in capsys.readouterr().err
    assert main(["compare", str(wall), str(wall)]) == 2  # two wall-clock runs
    assert main(["rate", str(wall)]) == 0 and capsys.readouterr().out.strip() == "6.6667"
