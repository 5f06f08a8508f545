"""The fleet description is validated up front: a bad file is one clear line, never a traceback."""

from pathlib import Path

import pytest
import yaml
from conftest import sop_cli

from sop_ros.fleet.description import FleetConfigError, default_fleet_path, load_fleet
from sop_ros.fleet.specs import NodeSpec, node_specs

pytestmark = pytest.mark.timeout(120)

GOOD = {
    "fleet": "t",
    "learner": {"address": "127.0.0.1:50999", "insecure": True},
    "robots": [
        {"id": "robot1", "backend": "sim", "tasks": ["reach-v3"], "control_rate_hz": 10.0},
        {"id": "robot2", "backend": "sim", "tasks": ["push-v3"]},
    ],
}


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def with_change(change):
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    change(data)
    return data


BAD = {
    "unknown key": (lambda d: d["robots"][0].update(colour="red"), "robots.0.colour", "unknown key"),
    "missing robot id": (lambda d: d["robots"][1].pop("id"), "robots.1.id", "required field is missing"),
    "duplicate namespace": (
        lambda d: d["robots"][1].update(namespace="/robot1"),
        "robots.1.namespace",
        "duplicate namespace '/robot1'",
    ),
    "wrong type": (lambda d: d["robots"][0].update(control_rate_hz="fast"), "robots.0.control_rate_hz", "'fast'"),
    "missing file": (
        lambda d: d["robots"][0].update(credentials={"token_file": "nope/robot1.token"}),
        "robots.0.credentials.token_file",
        "file not found",
    ),
    "bad backend": (lambda d: d["robots"][0].update(backend="cloud"), "robots.0.backend", "'sim' or 'hardware'"),
    "secure learner without tls": (lambda d: d["learner"].update(insecure=False), "learner", "set tls and tokens_file"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_fleet_names_file_field_and_problem(tmp_path, case):
    change, field, problem = BAD[case]
    path = write(tmp_path, with_change(change))
    with pytest.raises(FleetConfigError) as err:
        load_fleet(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {field}: "), message
    assert problem in message
    assert "\n" not in message


@pytest.mark.parametrize("case", ["unknown key", "missing file"])
def test_cli_exits_nonzero_with_one_line_and_no_traceback(tmp_path, case):
    change, field, _ = BAD[case]
    path = write(tmp_path, with_change(change))
    for args in (["fleet", "check", str(path)], ["launch", str(path), "--dry-run"]):
        result = sop_cli(*args)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and field in lines[0], result.stderr


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(FleetConfigError, match="cannot read"):
        load_fleet(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("robots: [\n")
    with pytest.raises(FleetConfigError, match="invalid YAML"):
        load_fleet(bad)


def test_embedded_default_fleet_is_valid_and_paths_resolve(tmp_path):
    fleet = load_fleet(default_fleet_path())
    assert len(fleet.robots) == 2 and all(r.backend == "sim" for r in fleet.robots)
    token = tmp_path / "creds" / "robot1.token"
    token.parent.mkdir()
    token.write_text("secret")
    path = write(
        tmp_path, with_change(lambda d: d["robots"][0].update(credentials={"token_file": "creds/robot1.token"}))
    )
    assert load_fleet(path).robots[0].credentials.token_file == token


def test_node_specs_select_robots_and_namespaces(tmp_path):
    fleet = load_fleet(write(tmp_path, GOOD))
    nodes = [s for s in node_specs(fleet) if isinstance(s, NodeSpec)]
    assert {s.namespace for s in nodes} == {"/robot1", "/robot2"}
    only = [s for s in node_specs(fleet, robot_ids=["robot2"], with_learner=False)]
    assert only and all(isinstance(s, NodeSpec) and s.robot_id == "robot2" for s in only)
    with pytest.raises(FleetConfigError, match="no robot with id 'robot9'"):
        node_specs(fleet, robot_ids=["robot9"])


def test_learner_address_defaults_agree_with_the_shipped_fleet(tmp_path):
    """One default learner address: the link's constant, used by the learner server and the fleet description."""
    from sop_ros.fleet.description import FleetLearnerConfig
    from sop_ros.link.options import DEFAULT_LEARNER_ADDRESS
    from sop_ros.link.server import LearnerServerConfig

    assert FleetLearnerConfig(insecure=True).address == DEFAULT_LEARNER_ADDRESS
    assert LearnerServerConfig(insecure=True).address == DEFAULT_LEARNER_ADDRESS
    assert load_fleet(default_fleet_path()).learner.address == DEFAULT_LEARNER_ADDRESS  # config/fleet.yaml states it


def test_a_robot_without_its_own_rate_and_spool_limit_gets_config_robot_yaml_values(tmp_path):
    from sop_ros.resources import node_defaults

    path = tmp_path / "fleet.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "fleet": "defaults",
                "learner": {"run_locally": False, "insecure": True},
                "robots": [{"id": "r1", "backend": "sim", "tasks": ["push-v3"]}],
            }
        )
    )
    (robot,) = load_fleet(path).robots
    assert robot.control_rate_hz == node_defaults("sim_robot")["control_rate_hz"]
    assert robot.spool_max_bytes == node_defaults("episode_recorder")["spool_max_bytes"]
