"""`sop bench transport --quick` end to end: a learner and a raw gRPC server in their own processes,
uploads, an 8-robot checkpoint fan-out (one process per robot), a small fleet, and 100 idle robots held
by one learner while one robot floods it; figures in the JSON."""

import json

import pytest
from conftest import sop_cli

pytestmark = pytest.mark.timeout(400)


def test_bench_transport_quick_measures_upload_fanout_and_fleet_against_raw_grpc(tmp_path):
    out = tmp_path / "transport.json"
    result = sop_cli(
        "bench", "transport", "--quick", "--robots", "8", "--fleet-seconds", "2", "--json", str(out), timeout=380
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "episode upload vs raw gRPC" in result.stdout
    figures = json.loads(out.read_text())
    assert {"upload_ratio_vs_raw", "checkpoint_fanout_ratio", "robots", "heartbeat_p99_ms", "errors"} <= set(figures)
    # Every figure comes from a run that moved real bytes: no errors, every episode stored, ratios positive.
    assert figures["errors"] == 0 and figures["robots"] == 8 and figures["episodes_uploaded"] == 16
    assert 0 < figures["upload_ratio_one_in_flight"] and 0 < figures["upload_ratio_vs_raw"] < 5
    assert figures["fanout_robots"] == 8 and figures["checkpoint_fanout_ratio"] > 0
    assert 0 < figures["heartbeat_p50_ms"] <= figures["heartbeat_p99_ms"]
    # 100 idle robots (a watch each, beyond the learner's worker threads) all held; the flooder alone refused.
    assert figures["idle_robots"] == 100 and figures["idle_watches_live"] == 100 and figures["idle_errors"] == 0
    assert figures["idle_heartbeats"] > 0 and figures["learner_threads_peak"] > 0
    assert figures["flood_refused"] > 0 and figures["flood_others_errors"] == 0
    assert figures["flood_health_failures"] == 0
    assert "idle robots held" in result.stdout
