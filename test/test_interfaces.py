"""Every custom message and service crosses a real process boundary through DDS."""

import json
import signal

import pytest
from conftest import run_peer, start_peer

pytestmark = pytest.mark.timeout(120)


def test_two_processes_exchange_every_custom_message_and_service(ros_environment):
    peer = start_peer("interface_peer.py", "--ros-args", "-r", "__ns:=/robot7", env=ros_environment)
    try:
        assert peer.stdout.readline().strip() == "PEER READY"
        result = run_peer("interface_client.py", "--ros-args", "-r", "__ns:=/robot7", env=ros_environment, timeout=90)
        assert result.returncode == 0, result.stdout + result.stderr
        out = json.loads(result.stdout.strip().splitlines()[-1])
    finally:
        peer.send_signal(signal.SIGINT)
        peer.wait(timeout=20)
    assert out["echoed"] == {
        "action_chunk": True,
        "intervention_state": True,
        "policy_update": True,
        "episode_status": True,
    }
    services = out["services"]
    assert services["set_task"] == [True, "next task push-v3: push it"]
    assert services["set_task_refused"][0] is False
    assert services["label_episode"] == [True, "e1", "failure"]
    assert services["get_robot_status"] == ["robot7", "/robot7", ["reach-v3", "push-v3"], 42]


def test_every_field_of_every_interface_is_commented():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "msg").glob("*.msg")) + sorted((root / "srv").glob("*.srv"))
    assert {f.stem for f in files} >= {
        "ActionChunk",
        "InterventionState",
        "PolicyUpdate",
        "EpisodeStatus",
        "SetTask",
        "LabelEpisode",
        "GetRobotStatus",
    }
    for f in files:
        lines = f.read_text().splitlines()
        for i, line in enumerate(lines):
            stripped = line.strip()
            if not stripped or stripped.startswith("#") or stripped == "---" or "=" in stripped.split("#")[0]:
                continue
            # a field: a comment on the line itself or in the comment block right above it
            j = i - 1
            while j >= 0 and lines[j].strip() and not lines[j].strip().startswith("#"):
                j -= 1  # consecutive fields share the comment above them
            has_comment = "#" in line or (j >= 0 and lines[j].strip().startswith("#"))
            assert has_comment, f"{f.name}: field '{stripped}' has no comment"
