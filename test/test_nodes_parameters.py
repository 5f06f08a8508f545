"""Node parameters: descriptors with ranges and read-only flags, enforced by ROS (real rclpy nodes, in-process)."""

import pytest
from rcl_interfaces.msg import ParameterType
from rclpy.parameter import Parameter

import sop_ros
from sop_ros.core.robot.action_mux import MuxConfig
from sop_ros.fleet.description import RobotConfig
from sop_ros.nodes.episode_manager import EpisodeManagerNode
from sop_ros.nodes.robot_status import RobotStatusNode
from sop_ros.resources import node_defaults

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def context(rclpy_context):
    return rclpy_context


@pytest.fixture
def episode_manager(context):
    node = EpisodeManagerNode(context=context)
    yield node
    node.destroy_node()


def test_a_value_out_of_range_is_refused_and_one_in_range_is_applied(episode_manager):
    default = node_defaults("episode_manager")["max_duration_s"]
    refused = episode_manager.set_parameters([Parameter("max_duration_s", value=-5.0)])[0]
    assert not refused.successful and "out of range" in refused.reason
    assert episode_manager.get_parameter("max_duration_s").value == default
    assert episode_manager.max_duration_s == default

    assert episode_manager.set_parameters([Parameter("max_duration_s", value=12.5)])[0].successful
    assert episode_manager.max_duration_s == 12.5  # applied to the running node, not only stored


def test_a_read_only_parameter_cannot_be_changed(episode_manager):
    result = episode_manager.set_parameters([Parameter("robot_id", value="robot9")])[0]
    assert not result.successful and "read-only" in result.reason
    expected = node_defaults("episode_manager")["robot_id"]
    assert episode_manager.robot_id == episode_manager.get_parameter("robot_id").value == expected


def test_descriptors_carry_the_range_and_the_read_only_flag(episode_manager):
    duration, pause, robot_id = episode_manager.describe_parameters(["max_duration_s", "reset_pause_s", "robot_id"])
    assert duration.type == ParameterType.PARAMETER_DOUBLE and not duration.read_only
    assert (duration.floating_point_range[0].from_value, duration.floating_point_range[0].to_value) == (0.1, 86400.0)
    assert pause.floating_point_range[0].from_value == 0.0
    assert robot_id.read_only and robot_id.description


def test_an_out_of_range_start_up_override_stops_the_node_with_one_clear_error(context):
    with pytest.raises(ValueError, match="parameter 'heartbeat_period_s'"):
        RobotStatusNode(context=context, parameter_overrides=[Parameter("heartbeat_period_s", value=0.0)])


def test_robot_status_reads_its_defaults_from_the_yaml_and_reports_the_installed_version(context):
    node = RobotStatusNode(context=context)
    try:
        defaults = node_defaults("robot_status")
        expected = (defaults["robot_id"], defaults["backend"], defaults["task_set"])
        assert (node.robot_id, node.backend, node.task_set) == expected
        assert defaults["software_version"] == "" and node.software_version == sop_ros.__version__
        assert node.describe_parameter("control_rate_hz").read_only  # read once, at start
    finally:
        node.destroy_node()


def test_a_value_two_nodes_and_the_fleet_share_has_one_source():
    spool = node_defaults("episode_recorder")["spool_max_bytes"]
    assert node_defaults("bridge")["spool_max_bytes"] == spool == 20 * 2**30
    assert RobotConfig(id="r1", backend="sim", tasks=["push-v3"]).spool_max_bytes == spool


def test_the_mux_config_is_built_from_the_node_section():
    section = node_defaults("action_mux")
    assert MuxConfig.from_mapping(section) == MuxConfig(human_timeout_s=section["human_timeout_s"])
    with pytest.raises(KeyError):
        MuxConfig.from_mapping({"control_rate_hz": 10.0})  # no hidden default fills a missing value
