"""The RViz config and the arm's URDF agree with what the fleet really publishes.

RViz cannot be installed here, so: the URDF parses and its movable joints are the JointState the
arm driver publishes; its end-effector frame is where the simulator says the hand is; every topic
rviz/sop_fleet.rviz names is published by a running 1-robot sim fleet with the display's type; and
every frame it names is connected to its fixed frame by the transforms the monitor publishes.
"""

import dataclasses
import json
import subprocess
import sys
import threading

import numpy as np
import pytest
import yaml
from conftest import PEERS, REPO, ros_env

from sop_ros.core.robot.arm_model import ArmModel, UrdfError, rotate
from sop_ros.core.robot.backend import SIM_ARM_JOINT_NAMES
from sop_ros.fleet.description import parse_fleet
from sop_ros.fleet.launcher import FleetLauncher
from sop_ros.fleet.specs import NodeSpec, node_specs, select_nodes
from sop_ros.nodes.monitor import tf_message_type
from sop_ros.resources import default_urdf_path

pytestmark = pytest.mark.timeout(180)

RVIZ = REPO / "rviz" / "sop_fleet.rviz"
# The message type each RViz display subscribes to.
DISPLAY_TYPES = {
    "rviz_default_plugins/MarkerArray": "visualization_msgs/msg/MarkerArray",
    "rviz_default_plugins/Image": "sensor_msgs/msg/Image",
    "rviz_default_plugins/RobotModel": "std_msgs/msg/String",
}


def rviz_config() -> dict:
    return yaml.safe_load(RVIZ.read_text())


def rviz_topics() -> dict[str, str]:
    """topic -> message type for every display of the config that names a topic."""
    out = {}
    for d in rviz_config()["Visualization Manager"]["Displays"]:
        if d["Class"] in DISPLAY_TYPES:
            key = "Description Topic" if d["Class"].endswith("RobotModel") else "Topic"
            out[d[key]["Value"]] = DISPLAY_TYPES[d["Class"]]
    return out


def frame_tree(model: ArmModel, prefix: str, positions: dict) -> dict[str, tuple[str, np.ndarray, tuple]]:
    return {
        t.child: (t.parent, np.asarray(t.translation), t.rotation)
        for t in model.joint_transforms(positions, prefix=prefix)
    }


def position_in(tree: dict, frame: str, root: str) -> np.ndarray:
    """Origin of `frame` expressed in `root`, following the tree (fails if not connected)."""
    point = np.zeros(3)
    while frame != root:
        assert frame in tree, f"frame {frame} is not connected to {root}"
        parent, translation, rotation = tree[frame]
        point = rotate(rotation, point) + translation
        frame = parent
    return point


def test_urdf_parses_and_its_movable_joints_are_the_arm_joint_states():
    model = ArmModel.from_file(default_urdf_path())
    assert model.movable_joint_names == SIM_ARM_JOINT_NAMES
    assert model.root == "base_link"
    assert len(model.links) == len(model.joints) + 1  # a tree
    for joint in model.joints:
        if joint.movable:
            assert joint.lower < joint.upper, joint


def test_the_hand_frame_is_where_the_joint_state_puts_the_end_effector():
    model = ArmModel.from_file(default_urdf_path())
    for xyz in ([0.0, 0.6, 0.2], [-0.3, 0.9, 0.05], [0.45, 0.4, 0.3]):
        tree = frame_tree(model, "", dict(zip(SIM_ARM_JOINT_NAMES, [*xyz, 0.5])))
        np.testing.assert_allclose(position_in(tree, "hand", "base_link"), xyz, atol=1e-9)
    # The gripper jaw turns with the opening; the hand does not move with it.
    closed = frame_tree(model, "", dict(zip(SIM_ARM_JOINT_NAMES, [0, 0.6, 0.2, 0.0])))
    opened = frame_tree(model, "", dict(zip(SIM_ARM_JOINT_NAMES, [0, 0.6, 0.2, 1.0])))
    assert closed["left_finger"][2] != opened["left_finger"][2]
    np.testing.assert_allclose(closed["hand"][1], opened["hand"][1])


def test_a_urdf_error_names_what_is_wrong():
    with pytest.raises(UrdfError, match="joint 'j'.*floating"):
        ArmModel.from_xml(
            '<robot name="r"><link name="a"/><link name="b"/><joint name="j" type="floating">'
            '<parent link="a"/><child link="b"/></joint></robot>'
        )
    with pytest.raises(UrdfError, match="link 'c' is not defined"):
        ArmModel.from_xml(
            '<robot name="r"><link name="a"/><link name="b"/><joint name="j" type="fixed">'
            '<parent link="a"/><child link="c"/></joint></robot>'
        )
    with pytest.raises(UrdfError, match="not well-formed"):
        ArmModel.from_xml("<robot")


def test_every_frame_the_rviz_config_names_connects_to_its_fixed_frame():
    cfg = rviz_config()["Visualization Manager"]
    fixed = cfg["Global Options"]["Fixed Frame"]
    model = ArmModel.from_file(default_urdf_path())
    fleet = parse_fleet(yaml.safe_load((REPO / "config" / "fleet.yaml").read_text()))
    monitors = {
        s.robot_id: s for s in node_specs(fleet, with_learner=False) if isinstance(s, NodeSpec) and s.name == "monitor"
    }
    models = [d for d in cfg["Displays"] if d["Class"] == "rviz_default_plugins/RobotModel"]
    assert {d["TF Prefix"] for d in models} == set(monitors) == {r.id for r in fleet.robots}
    hands = []
    for display in models:
        robot = display["TF Prefix"]
        assert display["Description Topic"]["Value"] == f"/{robot}/robot_description"
        offset = monitors[robot].parameters["display_offset"]
        # What the monitor publishes: fixed -> <robot>/base_link at its display offset, then the joints.
        tree = frame_tree(model, f"{robot}/", dict(zip(SIM_ARM_JOINT_NAMES, [0.0, 0.6, 0.2, 0.5])))
        tree[f"{robot}/base_link"] = (fixed, np.asarray(offset, dtype=float), (0.0, 0.0, 0.0, 1.0))
        for link in model.links:
            position_in(tree, f"{robot}/{link}", fixed)
        hands.append(position_in(tree, f"{robot}/hand", fixed))
    assert np.linalg.norm(hands[0] - hands[1]) > 1.0  # the robots stand apart, not on top of each other


@pytest.fixture
def one_robot_fleet(tmp_path):
    """sim_robot + monitor of a 1-robot sim fleet, from node_specs (the launchers' specs)."""
    fleet = parse_fleet(
        {
            "fleet": "rviz_test",
            "state_dir": str(tmp_path / "state"),
            "learner": {"run_locally": False, "insecure": True},
            "robots": [{"id": "robot1", "backend": "sim", "tasks": ["push-v3"], "control_rate_hz": 10.0}],
        }
    )
    specs = select_nodes(node_specs(fleet, with_learner=False), lambda s: s.name in ("sim_robot", "monitor"))
    specs = [
        # No recorder here: the first episode need not wait for one.
        dataclasses.replace(s, parameters={**s.parameters, "max_steps": 20, "wait_for_recorder_s": 0.0})
        if s.name == "sim_robot"
        else s
        for s in specs
    ]
    assert [s.name for s in specs] == ["sim_robot", "monitor"]
    env = ros_env()
    log_path = tmp_path / "launch.log"
    with open(log_path, "w") as log:
        launcher = FleetLauncher(specs, out=log, env=env)
        thread = threading.Thread(target=launcher.run, daemon=True)
        thread.start()
        try:
            yield env, log_path
        finally:
            launcher.request_stop()
            thread.join(timeout=60)


def test_every_topic_the_rviz_config_names_is_published_by_a_running_sim_fleet(one_robot_fleet):
    env, log_path = one_robot_fleet
    # The config shows robot1 and robot2; the 1-robot fleet stands for both (same relative names).
    wanted = {}
    for topic, type_name in rviz_topics().items():
        ns, relative = topic.strip("/").split("/", 1)
        assert ns in ("robot1", "robot2"), topic
        wanted[f"/robot1/{relative}"] = type_name
    assert len(wanted) == 3
    probe = subprocess.run(
        [sys.executable, str(PEERS / "display_probe.py"), "90", *[f"{t}={ty}" for t, ty in wanted.items()]],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = log_path.read_text()
    assert probe.returncode == 0, probe.stderr + log[-3000:]
    seen = json.loads(probe.stdout)
    for topic, type_name in wanted.items():
        assert seen["graph"].get(topic) == [type_name], (topic, seen["graph"], log[-3000:])
        assert topic in seen["messages"], (topic, log[-3000:])
    markers = seen["messages"]["/robot1/monitor/markers"]
    fixed = rviz_config()["Visualization Manager"]["Global Options"]["Fixed Frame"]
    assert set(markers["frame_ids"]) == {fixed} and markers["ns"] == ["robot1", "robot1"]
    assert markers["texts"][0].startswith("robot1: push-v3")
    image = seen["messages"]["/robot1/monitor/image"]
    assert (image["width"], image["height"], image["encoding"]) == (256, 256, "rgb8")  # 64x64 camera, scale 4
    assert seen["messages"]["/robot1/robot_description"]["data"] == default_urdf_path().read_text()
    assert "Traceback" not in log


@pytest.mark.skipif(
    tf_message_type() is None, reason="tf2_msgs is not installed (pip-only install): the monitor publishes no TF"
)
def test_the_monitor_publishes_tf_for_every_frame_of_the_arm(one_robot_fleet):
    env, log_path = one_robot_fleet
    probe = subprocess.run(
        [
            sys.executable,
            str(PEERS / "display_probe.py"),
            "90",
            "/tf_static=tf2_msgs/msg/TFMessage",
            "/tf=tf2_msgs/msg/TFMessage",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    seen = json.loads(probe.stdout)["messages"]
    children = {c for _, c in seen["/tf_static"]["frames"] + seen["/tf"]["frames"]}
    model = ArmModel.from_file(default_urdf_path())
    assert children == {f"robot1/{link}" for link in model.links}
