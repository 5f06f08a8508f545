"""launch/fleet.launch.py starts exactly what `sop launch` starts, from the same fleet.yaml.

launch_ros cannot be installed from PyPI, so the launch file is evaluated here against a
minimal recorder of the launch / launch_ros API: keyword-only signatures copied from the
real classes (launch 3.7, launch_ros 0.28), so a misspelt or unknown argument fails as it
would under `ros2 launch`. The run against the real launch stack is recorded in the README.
"""

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from sop_ros.fleet.description import load_fleet
from sop_ros.fleet.launcher import command_for
from sop_ros.fleet.specs import NodeSpec, node_specs

pytestmark = pytest.mark.timeout(60)


class _Recorded:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class Node(_Recorded):
    def __init__(
        self,
        *,
        executable,
        package=None,
        name=None,
        namespace=None,
        exec_name=None,
        parameters=None,
        remappings=None,
        ros_arguments=None,
        arguments=None,
        respawn=False,
        respawn_delay=None,
        output="log",
        **kw,
    ):
        unknown = set(kw) - {
            "cwd",
            "env",
            "additional_env",
            "shell",
            "sigterm_timeout",
            "sigkill_timeout",
            "emulate_tty",
            "prefix",
            "on_exit",
            "log_cmd",
            "cached_output",
        }
        if unknown:
            raise TypeError(f"Node() got unexpected keyword arguments {unknown}")
        super().__init__(
            executable=executable,
            package=package,
            name=name,
            namespace=namespace,
            parameters=parameters,
            remappings=remappings,
            respawn=respawn,
            respawn_delay=respawn_delay,
            output=output,
        )


class ExecuteProcess(_Recorded):
    def __init__(
        self,
        *,
        cmd,
        name=None,
        cwd=None,
        env=None,
        additional_env=None,
        shell=False,
        sigterm_timeout=None,
        sigkill_timeout=None,
        emulate_tty=False,
        output="log",
        output_format=None,
        log_cmd=False,
        on_exit=None,
        respawn=False,
        respawn_delay=None,
        respawn_max_retries=-1,
        cached_output=False,
    ):
        super().__init__(cmd=cmd, name=name, respawn=respawn, respawn_delay=respawn_delay, output=output)


class DeclareLaunchArgument(_Recorded):
    def __init__(self, name, *, default_value=None, description=None, choices=None):
        super().__init__(name=name, default_value=default_value, description=description, choices=choices)


class OpaqueFunction(_Recorded):
    def __init__(self, *, function, args=None, kwargs=None):
        super().__init__(function=function, args=args or [], kwargs=kwargs or {})


class LaunchConfiguration:
    def __init__(self, variable_name, *, default=None):
        self.variable_name = variable_name

    def perform(self, context):
        return context.launch_configurations[self.variable_name]


class LaunchDescription:
    def __init__(self, initial_entities=None, *, deprecated_reason=None):
        self.entities = list(initial_entities or [])


class _Context:
    def __init__(self, configurations):
        self.launch_configurations = configurations


@pytest.fixture
def launch_file(monkeypatch):
    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, m)

    module("launch", LaunchDescription=LaunchDescription)
    module(
        "launch.actions",
        DeclareLaunchArgument=DeclareLaunchArgument,
        ExecuteProcess=ExecuteProcess,
        OpaqueFunction=OpaqueFunction,
    )
    module("launch.substitutions", LaunchConfiguration=LaunchConfiguration)
    module("launch_ros")
    module("launch_ros.actions", Node=Node)
    spec = importlib.util.spec_from_file_location("fleet_launch", REPO / "launch" / "fleet.launch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def evaluate(launch_mod, **overrides):
    ld = launch_mod.generate_launch_description()
    args = {e.kwargs["name"]: e.kwargs["default_value"] for e in ld.entities if isinstance(e, DeclareLaunchArgument)}
    args.update(overrides)
    actions = []
    for e in ld.entities:
        if isinstance(e, OpaqueFunction):
            actions += e.kwargs["function"](_Context(args), *e.kwargs["args"], **e.kwargs["kwargs"])
    return args, actions


def from_launch_file(actions):
    """(kind, executable-or-cmd, name, namespace, parameters, remappings, respawn) per action."""
    out = []
    for a in actions:
        k = a.kwargs
        if isinstance(a, Node):
            assert k["package"] == "sop_ros"
            params = {}
            for p in k["parameters"]:
                params.update(p)
            out.append(
                (
                    "node",
                    k["executable"],
                    k["name"],
                    k["namespace"],
                    params,
                    tuple(map(tuple, k["remappings"])),
                    k["respawn"],
                )
            )
        else:
            out.append(("process", tuple(k["cmd"][1:]), k["name"], None, None, None, k["respawn"]))
    return out


def from_sop_launch(specs, tmp_path):
    """The same tuple, parsed back from the command lines the pip-only launcher runs."""
    out = []
    for spec in specs:
        cmd = command_for(spec, tmp_path)
        if isinstance(spec, NodeSpec):
            assert cmd[1:4] == ["-m", "sop_ros.nodes", spec.executable]
            ros_args = cmd[cmd.index("--ros-args") + 1 :]
            remaps, params = [], None
            it = iter(ros_args)
            for flag in it:
                value = next(it)
                if flag == "-r":
                    remaps.append(tuple(value.split(":=")))
                elif flag == "--params-file":
                    ((fqn, body),) = yaml.safe_load(Path(value).read_text()).items()
                    params = body["ros__parameters"]
            name = dict(remaps).pop("__node")
            ns = dict(remaps).pop("__ns")
            remaps = tuple(r for r in remaps if r[0] not in ("__node", "__ns"))
            assert fqn == f"{ns}/{name}"
            out.append(("node", cmd[3], name, ns, params, remaps, spec.respawn))
        else:
            out.append(("process", tuple(cmd[1:]), spec.name, None, None, None, spec.respawn))
    return out


@pytest.mark.parametrize("robot,learner", [("", "auto"), ("robot2", "false"), ("robot1", "true")])
def test_launch_file_starts_the_same_nodes_as_sop_launch(launch_file, tmp_path, robot, learner):
    args, actions = evaluate(launch_file, robot=robot, learner=learner)
    assert Path(args["fleet"]).resolve() == (REPO / "config" / "fleet.yaml").resolve()
    fleet = load_fleet(args["fleet"])
    specs = node_specs(
        fleet, robot_ids=[robot] if robot else None, with_learner={"auto": None, "true": True, "false": False}[learner]
    )
    launched = from_launch_file(actions)
    assert launched == from_sop_launch(specs, tmp_path)
    nodes = [n for n in launched if n[0] == "node"]
    assert nodes, "the fleet starts no ROS node"
    expected_ns = {f"/{robot}"} if robot else {r.resolved_namespace for r in fleet.robots}
    assert {n[3] for n in nodes} == expected_ns


def test_every_launched_executable_is_an_installed_node_with_main(launch_file):
    _, actions = evaluate(launch_file)
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert "sop_ros/nodes/[a-z]*.py" in cmake  # CMake installs every node module as lib/sop_ros/<name>
    for a in actions:
        if isinstance(a, Node):
            spec = importlib.util.find_spec(f"sop_ros.nodes.{a.kwargs['executable']}")
            assert spec is not None and "def main(" in Path(spec.origin).read_text()
