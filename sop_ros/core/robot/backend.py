"""The robot backend contract: what every robot (simulated or real) offers the nodes above it.

A backend turns a task id + seed into an episode of (observation, action) exchanges. It does no
wall-clock pacing (the node paces) and knows nothing about ROS; nodes adapt it to topics
(Image, JointState, CameraInfo). Task specs live in sop_ros.core.robot.tasks.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Mapping
from typing import Optional

import numpy as np

from sop_ros.core.robot.tasks import TaskSpec

# Joint names of the simulated xyz+gripper arm, in action/state order. The sim's state is
# [x, y, z, gripper] (end-effector position in metres, gripper opening); urdf/ must use these names.
SIM_ARM_JOINT_NAMES: tuple[str, ...] = ("x_joint", "y_joint", "z_joint", "gripper_joint")


@dataclasses.dataclass(frozen=True)
class Observation:
    """What the robot senses at one instant."""

    image: np.ndarray  # uint8 [H, W, 3], RGB, upright
    state: np.ndarray  # float32 [state_dim] proprio state, order = joint_names
    stamp_ns: int  # time the observation was taken

    def as_policy_input(self) -> dict[str, np.ndarray]:
        """The dict the policy protocol takes (image + state)."""
        return {"image": self.image, "state": self.state}


@dataclasses.dataclass(frozen=True)
class StepResult:
    """Outcome of executing one action."""

    observation: Observation
    success: bool  # the task is done (sim: MetaWorld's info["success"])
    truncated: bool  # the step limit was reached without success

    @property
    def done(self) -> bool:
        """The episode is over: success ends it early, the limit ends it otherwise."""
        return self.success or self.truncated


@dataclasses.dataclass(frozen=True)
class CameraInfo:
    """Pinhole intrinsics of the (possibly resized) camera image, for sensor_msgs/CameraInfo."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    frame_id: str = "camera"

    @classmethod
    def from_vertical_fov(cls, width: int, height: int, fovy_deg: float, frame_id: str = "camera") -> CameraInfo:
        fy = (height / 2.0) / math.tan(math.radians(fovy_deg) / 2.0)
        return cls(width, height, fy, fy, (width - 1) / 2.0, (height - 1) / 2.0, frame_id)

    @property
    def k(self) -> tuple[float, ...]:
        """Row-major 3x3 intrinsic matrix (CameraInfo.k)."""
        return (self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0)


class RobotBackend(abc.ABC):
    """A robot the stack can drive: sim or hardware. One episode at a time; not thread-safe."""

    @property
    @abc.abstractmethod
    def action_dim(self) -> int: ...

    @property
    @abc.abstractmethod
    def state_dim(self) -> int: ...

    @property
    @abc.abstractmethod
    def joint_names(self) -> tuple[str, ...]: ...

    @property
    @abc.abstractmethod
    def camera_info(self) -> CameraInfo: ...

    @property
    @abc.abstractmethod
    def tasks(self) -> Mapping[str, TaskSpec]: ...

    @abc.abstractmethod
    def reset(self, task_id: str, seed: Optional[int] = None) -> Observation:
        """Start an episode of `task_id`; `seed` fixes the scene (goal/object placement) where the backend can."""

    @abc.abstractmethod
    def step(self, action: np.ndarray) -> StepResult:
        """Execute one action (float32 [action_dim], each in [-1, 1])."""

    @abc.abstractmethod
    def observation(self) -> Observation:
        """The latest observation (without acting)."""

    def close(self) -> None:  # noqa: B027 - optional hook: a default no-op, not abstract
        """Release resources (renderers, devices); subclasses that hold some override this."""

    def __enter__(self) -> RobotBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_action(action: np.ndarray, action_dim: int) -> np.ndarray:
    """Validate an action at the backend boundary: shape [action_dim], finite; returns float32 clipped to [-1, 1]."""
    arr = np.asarray(action, dtype=np.float32)
    if arr.shape != (action_dim,):
        raise ValueError(f"action: shape {arr.shape}, expected ({action_dim},)")
    if not np.isfinite(arr).all():
        raise ValueError(f"action: contains NaN or inf: {arr.tolist()}")
    return np.clip(arr, -1.0, 1.0)
