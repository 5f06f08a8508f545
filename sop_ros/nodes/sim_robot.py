"""Simulated robot: one MetaWorld environment behind the topics a real camera + ros2_control arm have.

Publishes camera/image_raw + camera/camera_info (Image/CameraInfo, sensor QoS) and joint_states
(JointState, sensor QoS) with the same stamp per observation, takes JointTrajectory goals on
arm_controller/joint_trajectory like a joint_trajectory_controller, and steps the environment at
most once per control period on the wall clock. It owns the episode boundaries in simulation:
EpisodeStatus on `episode_event` when an episode starts (RUNNING) and ends (SUCCESS on the
environment's success, FAILURE at the step limit). `sim/privileged_state` carries what only
the scripted operator may read (full simulator state, progress, the expert's action).

Pacing: after publishing an observation the arm steps as soon as a new goal for it arrived (at
the next period). Without a new goal for `resend_after_s` it keeps tracking its last goal, as a
position-controlled arm does; before the first goal of an episode it re-sends the observation.

A managed node (sop_ros/nodes/_lifecycle.py): configure builds the environment, activate starts
the control timer, deactivate stops it (an episode it interrupts is abandoned, never labelled),
cleanup closes the environment.
"""

from __future__ import annotations

import concurrent.futures
import time
import uuid
from typing import Optional

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Header
from trajectory_msgs.msg import JointTrajectory

from sop_ros.backends.metaworld_sim import MetaWorldSimBackend, MetaWorldSimConfig, SimCameraConfig
from sop_ros.backends.ros2_control_arm import joint_state_message
from sop_ros.core.robot.arm_command import ArmCommandCodec
from sop_ros.core.robot.backend import Observation
from sop_ros.core.robot.tasks import TaskSpec, load_task_specs
from sop_ros.msg import EpisodeStatus, PrivilegedState
from sop_ros.nodes import _qos
from sop_ros.nodes._convert import image_message, time_msg
from sop_ros.nodes._defaults import (
    IMAGE_SIDE_PX,
    NON_NEGATIVE,
    PAUSE_S,
    PERIOD_S,
    POSITION_SCALE_M,
    RATE_HZ,
    Params,
    assign,
)
from sop_ros.nodes._lifecycle import ManagedNode
from sop_ros.nodes._recorder_gate import RecorderGate
from sop_ros.nodes._runtime import run_nodes
from sop_ros.resources import default_tasks_path


class SimRobotNode(ManagedNode):
    def __init__(self, **kwargs):
        super().__init__("sim_robot", **kwargs)
        task_ids, tasks_file, max_steps, self.rate_hz, self.camera_config, seed = self._declare_parameters()
        self.tasks = self._load_tasks(task_ids, tasks_file, max_steps)
        self._seed = None if seed < 0 else seed
        self._task_order = list(task_ids)
        self.episodes_started = 0
        self.backend: Optional[MetaWorldSimBackend] = None
        self._sim_thread: Optional[concurrent.futures.ThreadPoolExecutor] = None
        self._episode: Optional[dict] = None

    def configure(self) -> None:
        # MuJoCo's EGL context is bound to the thread that made it current, and executor callbacks
        # run on any thread: every backend call goes through this one thread.
        self._sim_thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mujoco")
        self.backend = self._sim(MetaWorldSimBackend, MetaWorldSimConfig(tasks=self.tasks, camera=self.camera_config))
        self.codec = ArmCommandCodec(self.backend.joint_names, self.position_scale, 1.0 / self.rate_hz)
        self._create_topics()
        self._episode = None
        self._obs: Optional[Observation] = None
        self._obs_sent_at = 0.0
        self._goal: Optional[np.ndarray] = None
        self._goal_is_new = False
        self._next_reset_at = time.monotonic()
        self._recorder_gate = RecorderGate(self, self.wait_for_recorder_s)
        self.managed_timer(1.0 / self.rate_hz, self._tick)
        self.get_logger().info(f"sim robot {self.robot_id}: tasks {self._task_order} at {self.rate_hz:g} Hz")

    def deactivate(self) -> None:
        if self._episode is not None:
            self.get_logger().info(f"episode {self._episode['id']} abandoned: the robot is stopping")
            self._episode = None

    def cleanup(self) -> None:
        if self.backend is not None:
            self._sim(self.backend.close)
            self.backend = None
        if self._sim_thread is not None:
            self._sim_thread.shutdown()
            self._sim_thread = None

    def _declare_parameters(self) -> tuple[list[str], str, int, float, SimCameraConfig, int]:
        """Declare the parameters; keep the node's own, return (task ids, task file, max steps, rate, camera, seed)."""
        p = Params(self, "sim_robot")
        self.robot_id = p("robot_id", "robot id from the fleet description")
        task_ids = p("tasks", "task ids to run; episodes cycle through them in order")
        tasks_file = p("tasks_file", "task file (empty = the package's config/tasks.yaml)") or str(default_tasks_path())
        max_steps = p("max_steps", "> 0 overrides every task's step limit", value_range=NON_NEGATIVE)
        rate = p("control_rate_hz", "the arm steps at most this often (wall clock)", value_range=RATE_HZ)
        cam = SimCameraConfig(
            width=p("camera_width", "image width in pixels", value_range=IMAGE_SIDE_PX),
            height=p("camera_height", "image height in pixels", value_range=IMAGE_SIDE_PX),
            fovy_deg=p("camera_fovy_deg", "vertical field of view in degrees", value_range=(1.0, 170.0)),
        )
        # Read at each tick / episode end: a new value applies from the next use.
        self.reset_pause_s = p(
            "reset_pause_s",
            "pause between an episode's end and the next reset",
            value_range=PAUSE_S,
            on_change=assign(self, "reset_pause_s"),
        )
        self.resend_after_s = p(
            "resend_after_s",
            "without a new goal for this long, hold the last goal (or re-send the observation)",
            value_range=PERIOD_S,
            on_change=assign(self, "resend_after_s"),
        )
        self.wait_for_recorder_s = p(
            "wait_for_recorder_s",
            "hold the first episode until the episode recorder reports ready, at most this long (0 = do not wait)",
            value_range=PAUSE_S,
        )
        seed = p("seed", "first episode's seed (-1 = random); episode n uses seed + n", value_range=(-1, None))
        self.max_episodes = p(
            "max_episodes",
            "stop after this many episodes (0 = unlimited)",
            value_range=NON_NEGATIVE,
            on_change=assign(self, "max_episodes"),
        )
        self.position_scale = p(
            "position_scale", "metres of end-effector motion per unit action", value_range=POSITION_SCALE_M
        )
        return task_ids, tasks_file, max_steps, rate, cam, seed

    @staticmethod
    def _load_tasks(task_ids: list[str], tasks_file: str, max_steps: int) -> dict[str, TaskSpec]:
        """The tasks to run from the task file, each with its step limit (`max_steps` > 0 overrides it)."""
        specs = load_task_specs(tasks_file)
        unknown = [t for t in task_ids if t not in specs]
        if unknown:
            raise ValueError(f"parameter 'tasks': {unknown} not in {tasks_file}")
        return {t: TaskSpec(t, specs[t].instruction, max_steps or specs[t].max_steps) for t in task_ids}

    def _create_topics(self) -> None:
        """The camera, arm and episode publishers, and the arm's goal subscription."""
        self.image_pub = self.managed_publisher(Image, "camera/image_raw", _qos.SENSOR)
        self.info_pub = self.managed_publisher(CameraInfo, "camera/camera_info", _qos.SENSOR)
        self.joint_pub = self.managed_publisher(JointState, "joint_states", _qos.SENSOR)
        self.privileged_pub = self.managed_publisher(PrivilegedState, "sim/privileged_state", _qos.CONTROL)
        self.event_pub = self.managed_publisher(EpisodeStatus, "episode_event", _qos.EVENTS)
        self.managed_subscription(JointTrajectory, "arm_controller/joint_trajectory", self._on_goal, _qos.CONTROL)

    # --- commands ---------------------------------------------------------------------------
    def _on_goal(self, msg: JointTrajectory) -> None:
        if not msg.points:
            self.get_logger().warning("ignoring a JointTrajectory with no points")
            return
        if tuple(msg.joint_names) != self.backend.joint_names:
            self.get_logger().warning(
                f"ignoring a JointTrajectory for joints {list(msg.joint_names)}; "
                f"this arm has {list(self.backend.joint_names)}"
            )
            return
        self._goal = np.asarray(msg.points[-1].positions, dtype=np.float64)
        self._goal_is_new = True

    # --- episode loop -----------------------------------------------------------------------
    def _tick(self) -> None:
        now = time.monotonic()
        if self._episode is None:
            if now >= self._next_reset_at and (not self.max_episodes or self.episodes_started < self.max_episodes):
                if self.episodes_started or self._recorder_gate.is_open(now):
                    self._start_episode()
            return
        if self._goal_is_new or (self._goal is not None and now - self._obs_sent_at >= self.resend_after_s):
            self._step()
        elif now - self._obs_sent_at >= self.resend_after_s:
            self._publish_observation()  # the first frame may have been lost (best effort)

    def _start_episode(self) -> None:
        task_id = self._task_order[self.episodes_started % len(self._task_order)]
        seed = None if self._seed is None else self._seed + self.episodes_started
        self._obs = self._sim(self.backend.reset, task_id, seed)
        self.episodes_started += 1
        self._goal, self._goal_is_new = None, False
        self._episode = dict(id=str(uuid.uuid4()), task=self.tasks[task_id], step=0)
        self._publish_event(EpisodeStatus.OUTCOME_RUNNING, self._obs.stamp_ns)
        self.get_logger().info(f"episode {self._episode['id']} started: {task_id} (seed {seed})")
        self._publish_observation()

    def _step(self) -> None:
        assert self._episode is not None and self._obs is not None and self._goal is not None
        action = self.codec.decode(self._obs.state, self.backend.joint_names, self._goal)
        self._goal_is_new = False
        result = self._sim(self.backend.step, action)
        self._obs = result.observation
        self._episode["step"] += 1
        if result.done:
            outcome = EpisodeStatus.OUTCOME_SUCCESS if result.success else EpisodeStatus.OUTCOME_FAILURE
            self._publish_event(outcome, self._obs.stamp_ns)
            self.get_logger().info(
                f"episode {self._episode['id']} ended after {self._episode['step']} steps: "
                f"{'success' if result.success else 'failure'}"
            )
            self._episode = None
            self._next_reset_at = time.monotonic() + self.reset_pause_s
            return
        self._publish_observation()

    # --- publishing -------------------------------------------------------------------------
    def _publish_event(self, outcome: int, stamp: int) -> None:
        ep = self._episode
        msg = EpisodeStatus(
            episode_id=ep["id"],
            robot_id=self.robot_id,
            task_id=ep["task"].task_id,
            instruction=ep["task"].instruction,
            step=ep["step"],
            outcome=outcome,
        )
        msg.header.stamp = time_msg(stamp)
        self.event_pub.publish(msg)

    def _publish_observation(self) -> None:
        obs, ep = self._obs, self._episode
        self.image_pub.publish(image_message(obs.image, obs.stamp_ns, "camera"))
        info = self.backend.camera_info
        self.info_pub.publish(
            CameraInfo(
                header=Header(stamp=time_msg(obs.stamp_ns), frame_id=info.frame_id),
                width=info.width,
                height=info.height,
                k=list(info.k),
                distortion_model="plumb_bob",
                d=[0.0] * 5,
                p=[info.fx, 0.0, info.cx, 0.0, 0.0, info.fy, info.cy, 0.0, 0.0, 0.0, 1.0, 0.0],
                r=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            )
        )
        self.joint_pub.publish(joint_state_message(self.backend.joint_names, obs.state, obs.stamp_ns))
        privileged = PrivilegedState(
            episode_id=ep["id"],
            task_id=ep["task"].task_id,
            episode_step=ep["step"],
            state=self.backend.privileged_state().tolist(),
            progress=float(self.backend.progress()),
            expert_action=self._sim(self.backend.expert_action).tolist(),
        )
        privileged.header.stamp = time_msg(obs.stamp_ns)
        self.privileged_pub.publish(privileged)
        self._obs_sent_at = time.monotonic()

    def _sim(self, fn, *args):
        return self._sim_thread.submit(fn, *args).result()


def main(args=None) -> int:
    return run_nodes([SimRobotNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
