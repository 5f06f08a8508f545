"""Fleet description -> the list of processes to start. The one function both launchers use.

`node_specs()` is the only place that decides which nodes a robot runs, with which
namespace, parameters and remappings; launch/fleet.launch.py turns the specs into
launch_ros Node actions and `sop launch` into supervised processes, so the two
cannot drift.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable, Sequence
from typing import Any, Optional

from sop_ros.fleet.description import FleetDescription, RobotConfig

PACKAGE = "sop_ros"
# The managed (lifecycle) nodes, in the order a robot's lifecycle_manager brings them up: the link and
# the recorder first, then the policy and the operator, the action mux (the arm moves only once the
# policy is active), and the drivers that start episodes last. They go down in reverse.
BRING_UP_ORDER = (
    "bridge",
    "episode_recorder",
    "policy",
    "scripted_operator",
    "teleop",
    "action_mux",
    "camera_driver",
    "episode_manager",
    "sim_robot",
)
MANAGER = "lifecycle_manager"


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """One ROS 2 node (`executable` is a module sop_ros/nodes/<executable>.py with main())."""

    name: str
    executable: str
    namespace: str
    parameters: dict[str, Any]
    remappings: tuple[tuple[str, str], ...] = ()
    respawn: bool = False
    respawn_delay_s: float = 0.0
    robot_id: Optional[str] = None
    package: str = PACKAGE
    stops_first: bool = False  # the pip-only launcher stops it, and waits, before the rest (a lifecycle manager)

    @property
    def module(self) -> str:
        return f"{self.package}.nodes.{self.executable}"

    @property
    def fully_qualified_name(self) -> str:
        return f"{self.namespace.rstrip('/')}/{self.name}"


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
    """A non-ROS process of the fleet (the learner): run as `python -m <module> <args>`."""

    name: str
    module: str
    args: tuple[str, ...]
    respawn: bool = False
    respawn_delay_s: float = 0.0


def _robot_nodes(fleet: FleetDescription, robot: RobotConfig) -> list[NodeSpec]:
    """The robot's nodes. Only fleet-specific parameters are set here; every other parameter
    takes its default from config/robot.yaml / config/teleop.yaml (the nodes read them)."""
    common = dict(
        namespace=robot.resolved_namespace,
        respawn=robot.respawn,
        respawn_delay_s=robot.respawn_delay_s,
        robot_id=robot.id,
    )
    rate = float(robot.control_rate_hz)
    ident = {"robot_id": robot.id}
    specs = [_robot_status_node(robot, rate, common), *_driver_nodes(robot, rate, common)]
    specs += [
        NodeSpec("policy", "policy", parameters={**ident, "control_rate_hz": rate}, **common),
        NodeSpec("action_mux", "action_mux", parameters={"control_rate_hz": rate}, **common),
        _operator_node(robot, rate, common),
        _recorder_node(fleet, robot, common),
    ]
    return _managed(specs + _installed_extra_nodes(fleet, robot, common), common)


def _managed(specs: list[NodeSpec], common: dict[str, Any]) -> list[NodeSpec]:
    """The robot's managed nodes wait for its lifecycle manager (autostart off), which comes last."""
    managed = sorted((s for s in specs if s.name in BRING_UP_ORDER), key=lambda s: BRING_UP_ORDER.index(s.name))
    out = [
        dataclasses.replace(s, parameters={**s.parameters, "autostart": False}) if s in managed else s for s in specs
    ]
    manager = NodeSpec(
        MANAGER, MANAGER, parameters={"managed_nodes": [s.name for s in managed]}, stops_first=True, **common
    )
    return out + [manager]


def _robot_status_node(robot: RobotConfig, rate: float, common: dict[str, Any]) -> NodeSpec:
    return NodeSpec(
        name="robot_status",
        executable="robot_status",
        parameters={
            "robot_id": robot.id,
            "backend": robot.backend,
            "task_set": list(robot.tasks),
            "control_rate_hz": rate,
        },
        # Standard diagnostics aggregators listen on the global topic.
        remappings=(("diagnostics", "/diagnostics"),),
        **common,
    )


def _driver_nodes(robot: RobotConfig, rate: float, common: dict[str, Any]) -> list[NodeSpec]:
    """What plays the hardware drivers (camera, arm) and owns the episode boundaries."""
    ident = {"robot_id": robot.id}
    if robot.backend == "sim":
        # One node plays both hardware drivers (camera + ros2_control arm) and owns the episodes.
        return [
            NodeSpec(
                "sim_robot",
                "sim_robot",
                parameters={**ident, "tasks": list(robot.tasks), "control_rate_hz": rate},
                **common,
            )
        ]
    # Hardware drivers: the camera (config/robot.yaml camera_driver.source) and the episode boundaries.
    specs = []
    for name, params in (
        ("camera_driver", {"rate_hz": rate}),
        ("episode_manager", {**ident, "tasks": list(robot.tasks)}),
    ):
        if importlib.util.find_spec(f"sop_ros.nodes.{name}") is not None:
            specs.append(NodeSpec(name, name, parameters=params, **common))
    return specs


def _operator_node(robot: RobotConfig, rate: float, common: dict[str, Any]) -> NodeSpec:
    """Who takes over from the policy: the scripted operator in simulation, a teleop joystick on hardware."""
    if robot.backend == "sim":
        return NodeSpec("scripted_operator", "scripted_operator", parameters={}, **common)
    return NodeSpec("teleop", "teleop", parameters={"control_rate_hz": rate}, remappings=(("joy", "/joy"),), **common)


def _recorder_node(fleet: FleetDescription, robot: RobotConfig, common: dict[str, Any]) -> NodeSpec:
    spool = {"spool_dir": str(fleet.spool_dir(robot)), "spool_max_bytes": int(robot.spool_max_bytes)}
    label_source = "environment" if robot.backend == "sim" else "operator"
    return NodeSpec(
        "episode_recorder",
        "episode_recorder",
        parameters={"robot_id": robot.id, **spool, "label_source": label_source},
        **common,
    )


def _installed_extra_nodes(fleet: FleetDescription, robot: RobotConfig, common: dict[str, Any]) -> list[NodeSpec]:
    """The monitor (RViz) and the bridge (learner link), where their modules are installed."""
    specs = []
    if importlib.util.find_spec("sop_ros.nodes.monitor") is not None:
        # Robots side by side in RViz's fixed frame, 1.5 m apart in fleet order.
        offset = [1.5 * [r.id for r in fleet.robots].index(robot.id), 0.0, 0.0]
        specs.append(
            NodeSpec("monitor", "monitor", parameters={"robot_id": robot.id, "display_offset": offset}, **common)
        )
    if importlib.util.find_spec("sop_ros.nodes.bridge") is not None:
        specs.append(
            NodeSpec(
                "bridge",
                "bridge",
                parameters=_bridge_parameters(fleet, robot),
                remappings=(("diagnostics", "/diagnostics"),),
                **common,
            )
        )
    return specs


def _bridge_parameters(fleet: FleetDescription, robot: RobotConfig) -> dict[str, Any]:
    creds = robot.credentials
    return {
        "robot_id": robot.id,
        "address": fleet.learner.address,
        "insecure": bool(fleet.learner.insecure),
        "ca_cert": str(creds.ca_cert or ""),
        "token_file": str(creds.token_file or ""),
        "client_cert": str(creds.client_cert or ""),
        "client_key": str(creds.client_key or ""),
        "spool_dir": str(fleet.spool_dir(robot)),
        "spool_max_bytes": int(robot.spool_max_bytes),
        "cache_dir": str(fleet.checkpoint_cache_dir(robot)),
        # The robot's config for the learner's compatibility handshake.
        "tasks": list(robot.tasks),
        "backend": robot.backend,
        "control_rate_hz": float(robot.control_rate_hz),
    }


def select_nodes(specs: Sequence[NodeSpec | ProcessSpec], keep: Callable[[NodeSpec], bool]) -> list[NodeSpec]:
    """The node specs `keep` accepts, for a caller that runs part of a robot (a benchmark, a test).

    A robot's managed nodes wait for its lifecycle manager only when the manager is kept too, and it
    then manages exactly the kept ones; without it they bring themselves up (autostart)."""
    kept = [s for s in specs if isinstance(s, NodeSpec) and keep(s)]
    present = {(s.robot_id, s.name) for s in kept}
    managed_by = {s.robot_id for s in kept if s.name == MANAGER}
    selected = []
    for spec in kept:
        if spec.name == MANAGER:
            names = [n for n in spec.parameters["managed_nodes"] if (spec.robot_id, n) in present]
            if not names:
                continue
            spec = dataclasses.replace(spec, parameters={**spec.parameters, "managed_nodes": names})
        elif spec.name in BRING_UP_ORDER and spec.robot_id not in managed_by:
            parameters = {k: v for k, v in spec.parameters.items() if k != "autostart"}  # back to the default
            spec = dataclasses.replace(spec, parameters=parameters)
        selected.append(spec)
    return selected


def _learner_process(fleet: FleetDescription) -> Optional[ProcessSpec]:
    # The learner exists once its command does (sop_ros/commands/learner.py).
    if importlib.util.find_spec("sop_ros.commands.learner") is None:
        return None
    cfg = fleet.learner
    args = [
        "learner",
        "--address",
        cfg.address,
        "--data-dir",
        str(fleet.learner_data_dir()),
        "--robots",
        str(len(fleet.robots)),
        "--algorithm",
        cfg.algorithm,
    ]
    if cfg.insecure:
        args.append("--insecure")
    else:
        args += ["--tls-cert", str(cfg.tls.cert), "--tls-key", str(cfg.tls.key), "--tokens-file", str(cfg.tokens_file)]
        if cfg.tls.client_ca:
            args += ["--client-ca", str(cfg.tls.client_ca)]
    return ProcessSpec(name="learner", module="sop_ros.cli", args=tuple(args))


def node_specs(
    fleet: FleetDescription, robot_ids: Optional[list[str]] = None, with_learner: Optional[bool] = None
) -> list[NodeSpec | ProcessSpec]:
    """Everything to start for `fleet`.

    robot_ids: only these robots' nodes (e.g. on one robot's own computer); None = all.
    with_learner: start the learner too; None = as the fleet's learner.run_locally says.
    """
    robots = fleet.robots if robot_ids is None else [fleet.robot(r) for r in robot_ids]
    specs: list[NodeSpec | ProcessSpec] = []
    if fleet.learner.run_locally if with_learner is None else with_learner:
        learner = _learner_process(fleet)
        if learner is not None:
            specs.append(learner)
    for robot in robots:
        specs.extend(_robot_nodes(fleet, robot))
    return specs
