"""Actions <-> joint-space goals for an arm behind a joint_trajectory_controller.

The policy's action space (MetaWorld's) is a normalised end-effector delta plus a gripper
command, each in [-1, 1]. A ros2_control arm takes joint positions, so an action becomes a
one-point trajectory reaching `state + delta * position_scale` one control period from now,
and the gripper joint's target is the gripper command itself. The simulated arm decodes the
same goal back against the state it published, so sim and hardware take identical commands.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class ArmGoal:
    joint_names: tuple[str, ...]
    positions: np.ndarray  # float64 [J]
    velocities: np.ndarray  # float64 [J]
    time_from_start_s: float


@dataclasses.dataclass(frozen=True)
class ArmCommandCodec:
    joint_names: tuple[str, ...]
    position_scale: float = 0.01  # metres per unit action (MetaWorld's action scale)
    period_s: float = 0.1

    def __post_init__(self) -> None:
        if not self.joint_names:
            raise ValueError("ArmCommandCodec.joint_names: at least one joint is required")
        if not self.position_scale > 0 or not self.period_s > 0:
            raise ValueError("ArmCommandCodec: position_scale and period_s must be positive")

    def encode(self, state: np.ndarray, action: np.ndarray) -> ArmGoal:
        state = np.asarray(state, dtype=np.float64)
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        n = len(self.joint_names)
        if state.shape != (n,) or action.shape != (n,):
            raise ValueError(f"arm command: state {state.shape} and action {action.shape} must both be ({n},)")
        delta = action[:-1] * self.position_scale
        positions = np.concatenate([state[:-1] + delta, action[-1:]])
        velocities = np.concatenate([delta / self.period_s, [0.0]])
        return ArmGoal(self.joint_names, positions, velocities, self.period_s)

    def decode(self, state: np.ndarray, joint_names: Sequence[str], positions: Sequence[float]) -> np.ndarray:
        """The action a goal encodes relative to `state` (the arm's state when the goal was made)."""
        if tuple(joint_names) != self.joint_names:
            raise ValueError(f"arm command: joint names {list(joint_names)} do not match {list(self.joint_names)}")
        positions = np.asarray(positions, dtype=np.float64)
        if positions.shape != (len(self.joint_names),):
            raise ValueError(f"arm command: {positions.shape[0]} positions for {len(self.joint_names)} joints")
        state = np.asarray(state, dtype=np.float64)
        action = np.concatenate([(positions[:-1] - state[:-1]) / self.position_scale, positions[-1:]])
        return np.clip(action, -1.0, 1.0).astype(np.float32)


class GoalDeduplicator:
    """Never send the same goal twice in a row (a controller would restart the same motion)."""

    def __init__(self, atol: float = 1e-9):
        self._last: Optional[np.ndarray] = None
        self._atol = atol

    def is_new(self, goal: ArmGoal) -> bool:
        if (
            self._last is not None
            and self._last.shape == goal.positions.shape
            and np.allclose(self._last, goal.positions, atol=self._atol, rtol=0)
        ):
            return False
        self._last = goal.positions.copy()
        return True
