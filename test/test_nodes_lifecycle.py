"""Managed nodes through the standard lifecycle services (lifecycle_msgs GetState / ChangeState).

The camera driver (a real video file) is walked through configure / activate / deactivate / cleanup
twice: in another process, read and driven only through its services, and in this process behind a
separate client node, where its capture thread can be looked at. It publishes only while active, and
its thread is joined by the time deactivate has answered. The lifecycle_manager node brings nodes of
other processes up in its order and down in reverse, seen on their transition_event topics.
"""

import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
import rclpy
from conftest import REPO, ros_env
from lifecycle_msgs.msg import Transition, TransitionEvent
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from sop_ros.nodes import _qos
from sop_ros.nodes.camera_driver import CameraDriverNode

pytestmark = pytest.mark.timeout(120)
QUIET_S = 1.5  # a window in which an inactive camera at 20 Hz would have published ~30 frames


@pytest.fixture
def video_file(tmp_path):
    path = tmp_path / "scene.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(10):
        writer.write(np.full((48, 64, 3), 20 * i, np.uint8))
    writer.release()
    return path


class LifecycleClient:
    """A node of its own that talks to `target` only through the standard lifecycle services, spun
    with the nodes under test on one executor in a background thread."""

    def __init__(self, context, target: str, executor: SingleThreadedExecutor):
        self.node = rclpy.create_node("lifecycle_test_client", context=context)
        self.get_state = self.node.create_client(GetState, f"{target}/get_state")
        self.change_state = self.node.create_client(ChangeState, f"{target}/change_state")
        self.images: list[tuple[float, Image]] = []  # (arrival, message)
        self.node.create_subscription(
            Image, "/robot1/camera/image_raw", lambda m: self.images.append((time.monotonic(), m)), _qos.SENSOR
        )
        executor.add_node(self.node)

    def _call(self, client, request, timeout_s: float = 30.0):
        assert client.wait_for_service(timeout_sec=timeout_s), f"no service {client.srv_name}"
        done = threading.Event()
        future = client.call_async(request)
        future.add_done_callback(lambda _: done.set())
        assert done.wait(timeout_s), f"{client.srv_name}: no answer within {timeout_s} s"
        return future.result()

    def state(self) -> str:
        return self._call(self.get_state, GetState.Request()).current_state.label

    def transition(self, transition_id: int) -> bool:
        return self._call(self.change_state, ChangeState.Request(transition=Transition(id=transition_id))).success

    def images_after(self, t: float) -> int:
        return sum(1 for arrival, _ in self.images if arrival > t)

    def wait_for_images(self, after: float, count: int, timeout_s: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while self.images_after(after) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.images_after(after) >= count


@pytest.fixture
def ros_domain(monkeypatch):
    """(env for a node process, a context of this process on the same domain, an executor spun in a thread)."""
    env = ros_env()
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(env["ROS_DOMAIN_ID"]))
    executor = SingleThreadedExecutor(context=context)
    thread = threading.Thread(target=executor.spin, daemon=True)
    yield env, context, executor, thread
    executor.shutdown()
    thread.join(timeout=10)
    rclpy.try_shutdown(context=context)


def walk(client: LifecycleClient, capture_alive=lambda: None) -> None:
    """configure -> activate -> deactivate -> cleanup, checking the state and the images at each step."""
    assert client.state() == "unconfigured"
    assert client.transition(Transition.TRANSITION_CONFIGURE)
    assert client.state() == "inactive"
    configured_at = time.monotonic()
    time.sleep(QUIET_S)  # a window for frames that must not come, not a synchronisation
    assert client.images_after(configured_at - 60) == 0, "published while inactive"
    assert capture_alive() in (None, False)

    activated_at = time.monotonic()
    assert client.transition(Transition.TRANSITION_ACTIVATE)
    assert client.state() == "active"
    assert client.wait_for_images(activated_at, 5), "no images while active"
    assert capture_alive() in (None, True)

    assert client.transition(Transition.TRANSITION_DEACTIVATE)
    deactivated_at = time.monotonic()
    assert capture_alive() in (None, False), "capture thread alive after deactivate answered"
    assert client.state() == "inactive"
    time.sleep(QUIET_S)
    # Best effort: a frame already on the wire may land just after the answer, none later.
    assert client.images_after(deactivated_at + 0.5) == 0, "published after deactivate"

    assert client.transition(Transition.TRANSITION_CLEANUP)
    assert client.state() == "unconfigured"
    assert not client.transition(Transition.TRANSITION_ACTIVATE), "activated without configure"


def test_a_node_in_another_process_is_walked_through_its_states_by_the_standard_services(video_file, ros_domain):
    env, context, executor, thread = ros_domain
    camera = subprocess.Popen(
        [sys.executable, "-m", "sop_ros.nodes", "camera_driver", "--ros-args", "-r", "__ns:=/robot1"]
        + ["-p", f"source:={video_file}", "-p", "loop:=true", "-p", "rate_hz:=20.0", "-p", "autostart:=false"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        client = LifecycleClient(context, "/robot1/camera_driver", executor)
        thread.start()
        walk(client)
        assert client.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert client.state() == "finalized"
    finally:
        if camera.poll() is None:
            camera.send_signal(signal.SIGINT)
        log = camera.communicate(timeout=30)[0]
    assert camera.returncode == 0 and "Traceback" not in log, log


def test_deactivate_joins_the_worker_thread_of_a_node_in_this_process(video_file, ros_domain):
    _, context, executor, thread = ros_domain
    camera = CameraDriverNode(
        context=context,
        namespace="/robot1",
        parameter_overrides=[
            Parameter("source", value=str(video_file)),
            Parameter("loop", value=True),
            Parameter("rate_hz", value=20.0),
        ],
    )
    executor.add_node(camera)
    client = LifecycleClient(context, "/robot1/camera_driver", executor)
    thread.start()
    try:
        walk(client, capture_alive=lambda: getattr(camera, "capture", None) is not None and camera.capture.alive)
        assert not [t for t in threading.enumerate() if t.name == "camera_capture"]
    finally:
        executor.remove_node(camera)
        camera.destroy_node()


def test_the_lifecycle_manager_brings_nodes_up_in_order_and_down_in_reverse(video_file, ros_domain):
    """Three processes: teleop and the camera driver wait (autostart off) for a lifecycle_manager."""
    env, context, executor, thread = ros_domain
    events: list[tuple[int, str, str]] = []  # (publisher's timestamp, node, state reached or entered)
    watcher = rclpy.create_node("transition_watcher", context=context)

    def recorder(name: str):
        # Ordered by the publishers' send times: arrival order across two publishers is not guaranteed.
        return lambda msg, info: events.append((info["source_timestamp"], name, msg.goal_state.label))

    topics = [f"/robot1/{name}/transition_event" for name in ("teleop", "camera_driver")]
    for name, topic in zip(("teleop", "camera_driver"), topics):
        watcher.create_subscription(TransitionEvent, topic, recorder(name), 10)
    executor.add_node(watcher)
    thread.start()

    def node(executable, *params):
        args = [sys.executable, "-m", "sop_ros.nodes", executable, "--ros-args", "-r", "__ns:=/robot1"]
        for p in params:
            args += ["-p", p]
        return subprocess.Popen(
            args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )

    def states(*wanted: str) -> list[tuple[str, str]]:
        return [(name, label) for _, name, label in sorted(events) if label in wanted]

    processes = [
        node("teleop", "autostart:=false"),
        node("camera_driver", f"source:={video_file}", "loop:=true", "autostart:=false"),
    ]
    manager = None
    try:
        # Transition events are volatile: the manager starts once this watcher hears both nodes.
        deadline = time.monotonic() + 60
        while not all(watcher.count_publishers(t) for t in topics) and time.monotonic() < deadline:
            time.sleep(0.05)
        manager = node("lifecycle_manager", "managed_nodes:=[teleop, camera_driver]")
        up = [("teleop", "inactive"), ("camera_driver", "inactive"), ("teleop", "active"), ("camera_driver", "active")]
        deadline = time.monotonic() + 90
        while states("inactive", "active") != up and time.monotonic() < deadline:
            time.sleep(0.05)
        assert states("inactive", "active") == up, events
        manager.send_signal(signal.SIGINT)
        manager_log = manager.communicate(timeout=60)[0]
        assert states("deactivating") == [("camera_driver", "deactivating"), ("teleop", "deactivating")], events
        assert manager.returncode == 0 and "robot up" in manager_log and "Traceback" not in manager_log, manager_log
    finally:
        for proc in [*processes, manager]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        logs = [proc.communicate(timeout=30)[0] for proc in processes]
    assert all(p.returncode == 0 for p in processes) and not any("Traceback" in log for log in logs), logs


def test_the_launchers_manage_exactly_the_managed_nodes():
    import importlib
    import pkgutil

    import sop_ros.nodes
    from sop_ros.fleet.specs import BRING_UP_ORDER, MANAGER
    from sop_ros.nodes._lifecycle import ManagedNode

    managed = set()
    for module in pkgutil.iter_modules(sop_ros.nodes.__path__):
        if not module.name.startswith("_") and module.name != MANAGER:
            classes = vars(importlib.import_module(f"sop_ros.nodes.{module.name}")).values()
            if any(isinstance(c, type) and issubclass(c, ManagedNode) and c is not ManagedNode for c in classes):
                managed.add(module.name)
    # The joystick publisher is started by hand next to a fleet (it publishes the global /joy): it manages itself.
    assert managed == set(BRING_UP_ORDER) | {"joystick"}


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


@pytest.mark.parametrize(
    "node_class, parameters, thread_names",
    [
        ("sop_ros.nodes.policy:PolicyNode", {}, {"checkpoint_loader"}),
        ("sop_ros.nodes.joystick:JoystickNode", {"device_index": 0}, {"sdl_joystick"}),
        (
            "sop_ros.nodes.bridge:BridgeNode",
            {"address": "127.0.0.1:9", "insecure": True},  # nothing listens: the link threads retry
            {"sop-uploader-robot1", "sop-ckpt-watch", "sop-ckpt-download", "sop-heartbeat-robot1"},
        ),
    ],
)
def test_every_worker_thread_runs_from_activate_until_deactivate(
    node_class, parameters, thread_names, rclpy_context, tmp_path, monkeypatch
):
    """The in-process manager's path (run_nodes triggers the transitions directly) for the nodes with threads."""
    import importlib

    monkeypatch.setenv("SDL_VIDEODRIVER", "dummy")
    monkeypatch.setenv("SDL_AUDIODRIVER", "dummy")
    module, name = node_class.split(":")
    paths = {"spool_dir": str(tmp_path / "spool"), "cache_dir": str(tmp_path / "cache")}
    overrides = {**(paths if "bridge" in module else {}), **parameters}
    node = getattr(importlib.import_module(module), name)(
        context=rclpy_context, parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()]
    )
    before = _threads()
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS and node.lifecycle_state == "inactive"
        assert _threads() == before, "a thread started before activate"
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS and node.is_active
        assert thread_names <= {t.name for t in _threads() - before}
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS and node.lifecycle_state == "inactive"
        assert not [t.name for t in _threads() - before if t.is_alive()], "a worker outlived deactivate"
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS and node.lifecycle_state == "unconfigured"
    finally:
        node.trigger_shutdown()
        node.destroy_node()


class SlowToAnswerLifecycleNode:
    """Serves <name>/get_state and <name>/change_state like a lifecycle node, but holds its first
    get_state answer until a second request arrives (a request lost while discovery settles, or a node
    too busy to answer in time). Its own multi-threaded executor, so a held answer blocks nothing else."""

    def __init__(self, context, name: str):
        from rclpy.callback_groups import ReentrantCallbackGroup
        from rclpy.executors import MultiThreadedExecutor

        self.node = rclpy.create_node(name, namespace="/robot1", context=context)
        self.label, self.calls = "unconfigured", []
        self._second_request = threading.Event()
        group = ReentrantCallbackGroup()
        self.node.create_service(GetState, f"{name}/get_state", self._get_state, callback_group=group)
        self.node.create_service(ChangeState, f"{name}/change_state", self._change_state, callback_group=group)
        self.executor = MultiThreadedExecutor(num_threads=3, context=context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)

    def _get_state(self, request, response):
        self.calls.append("get_state")
        if len(self.calls) == 1:
            self._second_request.wait(60)
        else:
            self._second_request.set()
        response.current_state.label = self.label
        return response

    def _change_state(self, request, response):
        self.calls.append(f"change_state {request.transition.id}")
        self._second_request.set()
        moves = {
            Transition.TRANSITION_CONFIGURE: ("unconfigured", "inactive"),
            Transition.TRANSITION_ACTIVATE: ("inactive", "active"),
            Transition.TRANSITION_DEACTIVATE: ("active", "inactive"),
        }
        before, after = moves.get(request.transition.id, (None, None))
        response.success = self.label == before
        self.label = after if response.success else self.label
        return response


def test_the_manager_asks_again_when_a_node_does_not_answer(ros_domain):
    """One unanswered get_state must not stall the robot for the whole transition timeout (a CI run saw
    a policy left unconfigured for 120 s while its robot's twin ran); the manager asks again."""
    from sop_ros.nodes.lifecycle_manager import LifecycleManagerNode

    _, context, executor, thread = ros_domain
    slow = SlowToAnswerLifecycleNode(context, "slow")
    slow.thread.start()
    manager = LifecycleManagerNode(
        context=context,
        namespace="/robot1",
        parameter_overrides=[
            Parameter("managed_nodes", value=["slow"]),
            Parameter("transition_timeout_s", value=60.0),
        ],
    )
    executor.add_node(manager)
    thread.start()
    try:
        started = time.monotonic()
        assert manager.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert manager.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert manager.robot_up.wait(60), slow.calls
        assert time.monotonic() - started < 30, "waited out the timeout on the unanswered request"
        assert slow.label == "active" and manager.exit_code is None
        # Asked again after the held request; each transition sent once.
        assert slow.calls.count("get_state") >= 2, slow.calls
        assert [c for c in slow.calls if c.startswith("change_state")] == [
            f"change_state {Transition.TRANSITION_CONFIGURE}",
            f"change_state {Transition.TRANSITION_ACTIVATE}",
        ], slow.calls
        manager.trigger_deactivate()
        assert slow.label == "inactive"
    finally:
        executor.remove_node(manager)
        manager.destroy_node()
        slow.executor.shutdown()
        slow.thread.join(10)


class RestartedOnceLifecycleNode(SlowToAnswerLifecycleNode):
    """Answers at once, but comes back unconfigured right after its first configure, as a node whose
    process was signalled and respawned between the manager's configure and activate passes."""

    def _get_state(self, request, response):
        self.calls.append(f"get_state: {self.label}")
        if self.calls.count("get_state: inactive") == 2 and not self.restarted:  # asked again, to activate it
            self.restarted, self.label = True, "unconfigured"
        response.current_state.label = self.label
        return response


def test_a_node_restarted_during_bring_up_is_configured_again_not_given_up(ros_domain):
    """A signal stress run respawned action_mux between the two passes: the manager saw it unconfigured
    when activating, gave up with exit code 1 and took the whole robot down."""
    _, context, executor, thread = ros_domain
    from sop_ros.nodes.lifecycle_manager import LifecycleManagerNode

    node = RestartedOnceLifecycleNode(context, "mux")
    node.restarted = False
    node.thread.start()
    manager = LifecycleManagerNode(
        context=context,
        namespace="/robot1",
        parameter_overrides=[Parameter("managed_nodes", value=["mux"]), Parameter("transition_timeout_s", value=60.0)],
    )
    executor.add_node(manager)
    thread.start()
    try:
        assert manager.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert manager.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert manager.robot_up.wait(60), node.calls
        assert node.label == "active" and manager.exit_code is None, node.calls
        assert [c for c in node.calls if c.startswith("change_state")] == [
            f"change_state {Transition.TRANSITION_CONFIGURE}",
            f"change_state {Transition.TRANSITION_CONFIGURE}",
            f"change_state {Transition.TRANSITION_ACTIVATE}",
        ], node.calls
    finally:
        executor.remove_node(manager)
        manager.destroy_node()
        node.executor.shutdown()
        node.thread.join(10)


def executor_idle(executor, wait_s: float = 0.3) -> bool:
    """True when one spin found nothing to do for wait_s (every delivered message has been taken)."""
    started = time.monotonic()
    executor.spin_once(timeout_sec=wait_s)
    return time.monotonic() - started >= wait_s * 0.95


def test_a_checkpoint_announced_before_the_policy_activates_is_loaded_on_activation(rclpy_context, tmp_path):
    """The bridge announces its cached checkpoint (latched) as it activates, before the manager activates
    the policy; the policy gets it while inactive and must still load it (a signal stress run left a
    restarted robot without a policy, waiting for an announcement that had come and gone)."""
    import torch

    from sop_ros.core.episodes.hashing import file_sha256
    from sop_ros.core.model import VLAPolicy, preset
    from sop_ros.msg import PolicyUpdate
    from sop_ros.nodes.policy import PolicyNode

    torch.manual_seed(0)
    weights = VLAPolicy(preset("tiny"), device="cpu").save(tmp_path / "v3.safetensors")
    executor = SingleThreadedExecutor(context=rclpy_context)
    policy = PolicyNode(context=rclpy_context, namespace="/robot1")
    bridge = rclpy.create_node("bridge_stand_in", namespace="/robot1", context=rclpy_context)
    probe_seen = []
    bridge.create_subscription(PolicyUpdate, "policy_update", probe_seen.append, _qos.LATCHED)
    for node in (policy, bridge):
        executor.add_node(node)
    try:
        assert policy.trigger_configure() == TransitionCallbackReturn.SUCCESS
        announcement = bridge.create_publisher(PolicyUpdate, "policy_update", _qos.LATCHED)
        announcement.publish(PolicyUpdate(version=3, local_path=str(weights), content_hash=file_sha256(weights)))
        deadline = time.monotonic() + 20
        while not probe_seen and time.monotonic() < deadline:  # delivered to this process while inactive
            executor.spin_once(timeout_sec=0.05)
        while time.monotonic() < deadline and not executor_idle(executor):  # and taken by every subscription
            pass
        assert probe_seen and not policy.is_active
        assert policy.trigger_activate() == TransitionCallbackReturn.SUCCESS
        deadline = time.monotonic() + 60
        while (policy.slot.current is None or policy.slot.current.version != 3) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert policy.slot.current is not None and policy.slot.current.version == 3
    finally:
        policy.trigger_shutdown()
        executor.shutdown()
        for node in (policy, bridge):
            node.destroy_node()
