"""ros2 launch sop_ros fleet.launch.py [fleet:=FILE] [robot:=ID] [learner:=auto|true|false]

Starts the fleet described by a fleet description (default: the package's
config/fleet.yaml) for users with a full ROS 2 install. The node list comes from
sop_ros.fleet.specs.node_specs(), the same function `sop launch` uses, so the two
launchers cannot drift. That includes each robot's lifecycle_manager node, which brings the
robot's managed nodes up in dependency order through their change_state services. On Ctrl-C
launch signals every process at once (`sop launch` stops the managers first): each managed node
then deactivates itself (its threads joined) before it exits, in no particular order across nodes.
"""

import os
import sys

from launch.actions import DeclareLaunchArgument, ExecuteProcess, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from sop_ros.fleet.description import load_fleet
from sop_ros.fleet.specs import NodeSpec, node_specs

# Installed: share/sop_ros/launch/ -> share/sop_ros/config/; in the checkout: launch/ -> config/.
# launch's default (SIGTERM 5 s after SIGINT) is too short for a loaded 2-core machine:
# the learner drains in-flight uploads and nodes may be mid-forward-pass.
SIGTERM_TIMEOUT_S = "20"
DEFAULT_FLEET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "config", "fleet.yaml")


def _actions_for(context):
    fleet = load_fleet(LaunchConfiguration("fleet").perform(context))
    robot = LaunchConfiguration("robot").perform(context)
    learner = LaunchConfiguration("learner").perform(context)
    with_learner = {"auto": None, "true": True, "false": False}[learner.lower()]
    actions = []
    for spec in node_specs(fleet, robot_ids=[robot] if robot else None, with_learner=with_learner):
        if isinstance(spec, NodeSpec):
            actions.append(
                Node(
                    package=spec.package,
                    executable=spec.executable,
                    name=spec.name,
                    namespace=spec.namespace,
                    parameters=[spec.parameters],
                    remappings=list(spec.remappings),
                    respawn=spec.respawn,
                    respawn_delay=spec.respawn_delay_s,
                    sigterm_timeout=SIGTERM_TIMEOUT_S,
                    output="screen",
                )
            )
        else:
            actions.append(
                ExecuteProcess(
                    cmd=[sys.executable, "-m", spec.module, *spec.args],
                    name=spec.name,
                    respawn=spec.respawn,
                    respawn_delay=spec.respawn_delay_s,
                    sigterm_timeout=SIGTERM_TIMEOUT_S,
                    output="screen",
                )
            )
    return actions


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument("fleet", default_value=DEFAULT_FLEET, description="fleet description YAML"),
            DeclareLaunchArgument(
                "robot", default_value="", description="start only this robot's nodes (empty: all robots)"
            ),
            DeclareLaunchArgument(
                "learner",
                default_value="auto",
                choices=["auto", "true", "false"],
                description="start the learner here (auto: as the fleet file says)",
            ),
            OpaqueFunction(function=_actions_for),
        ]
    )
