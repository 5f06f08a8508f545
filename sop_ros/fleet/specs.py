"""Fleet description -> the list of processes to start. The one function both launchers use.

`node_specs()` is the only place that decides which nodes a robot runs, with which
namespace, parameters and remappings; launch/fleet.launch.py turns the specs into
launch_ros Node actions and `sop launch` into supervised processes, so the two
cannot drift.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from typing import Any, Optional

from sop_ros import __version__
from sop_ros.fleet.description import FleetDescription, RobotConfig

PACKAGE = "sop_ros"


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
    ns = robot.resolved_namespace
    common = dict(namespace=ns, respawn=robot.respawn, respawn_delay_s=robot.respawn_delay_s, robot_id=robot.id)
    return [
        NodeSpec(
            name="robot_status",
            executable="robot_status",
            parameters={
                "robot_id": robot.id,
                "backend": robot.backend,
                "task_set": list(robot.tasks),
                "control_rate_hz": float(robot.control_rate_hz),
                "software_version": __version__,
                "heartbeat_period_s": 1.0,
            },
            # Standard diagnostics aggregators listen on the global topic.
            remappings=(("diagnostics", "/diagnostics"),),
            **common,
        ),
    ]


def _learner_process(fleet: FleetDescription) -> Optional[ProcessSpec]:
    # The learner exists once its command does (sop_ros/commands/learner.py).
    if importlib.util.find_spec("sop_ros.commands.learner") is None:
        return None
    cfg = fleet.learner
    args = ["learner", "--address", cfg.address, "--data-dir", str(fleet.learner_data_dir()), "--fleet", fleet.fleet,
            "--robots", str(len(fleet.robots))]
    if cfg.insecure:
        args.append("--insecure")
    else:
        args += ["--tls-cert", str(cfg.tls.cert), "--tls-key", str(cfg.tls.key), "--tokens-file", str(cfg.tokens_file)]
        if cfg.tls.client_ca:
            args += ["--client-ca", str(cfg.tls.client_ca)]
    return ProcessSpec(name="learner", module="sop_ros.cli", args=tuple(args))


def node_specs(fleet: FleetDescription, robot_ids: Optional[list[str]] = None, with_learner: Optional[bool] = None) -> list[NodeSpec | ProcessSpec]:
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
