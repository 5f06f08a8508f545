"""`sop bench robots` end to end: a real 1-robot sim control loop, figures in the table and the JSON."""

import json

import pytest
from conftest import sop_cli

pytestmark = pytest.mark.timeout(300)


def test_bench_robots_measures_rate_latency_and_forward_time_of_a_real_control_loop(tmp_path):
    out = tmp_path / "robots.json"
    result = sop_cli("bench", "robots", "--robots", "1", "--duration", "6", "--json", str(out), timeout=280)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "achieved Hz" in result.stdout and "policy forward ms" in result.stdout
    figures = json.loads(out.read_text())
    (run,) = figures["runs"]
    assert {"robots", "achieved_hz", "step_latency_p50_ms", "step_latency_p99_ms", "policy_forward_ms"} <= set(run)
    assert run["robots"] == 1 and figures["control_rate_hz"] == 10.0
    # The arm is paced by the sim's wall clock: never faster than the control rate, and it did act.
    assert 0 < run["achieved_hz"] <= 10.5 and run["steps"] >= 6
    assert 0 < run["step_latency_p50_ms"] <= run["step_latency_p99_ms"] < 5000
    assert 0 < run["policy_forward_ms"] < 5000 and 0 <= run["cpu_percent"] <= 100
    assert figures["machine"]["cpu_count"] >= 1
