"""Joystick teleoperation logic: Joy axes/buttons -> an action, with a deadman and a silence timeout.

The teleop node feeds every Joy message to `TeleopState.on_joy` and asks `command(now)` once per
control tick. A command exists only while the deadman button is held and the joystick has spoken
within `joy_timeout_s`; otherwise the human is not commanding and control goes back to the policy.
Each Joy message yields at most one command, so a stale reading is never repeated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class JoyMapping:
    """How joystick axes and buttons map to the robot's action (one axis per action dimension)."""

    deadman_button: int = 4
    axis_map: tuple[int, ...] = (1, 0, 4, -1)  # -1 = that action dimension is 0
    axis_scale: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0)
    deadzone: float = 0.1
    gripper_close_button: int = 0  # held = last action dimension +1, else -1; -1 = use axis_map

    def __post_init__(self) -> None:
        if len(self.axis_map) != len(self.axis_scale):
            raise ValueError(
                f"JoyMapping.axis_scale: {len(self.axis_scale)} values for {len(self.axis_map)} axes in axis_map"
            )
        if not self.axis_map:
            raise ValueError("JoyMapping.axis_map: at least one action dimension is required")
        if self.deadman_button < 0:
            raise ValueError(f"JoyMapping.deadman_button: must be a button index >= 0, got {self.deadman_button}")
        if not 0.0 <= self.deadzone < 1.0:
            raise ValueError(f"JoyMapping.deadzone: must be in [0, 1), got {self.deadzone}")

    @property
    def action_dim(self) -> int:
        return len(self.axis_map)

    def deadman_held(self, buttons: Sequence[int]) -> bool:
        return self.deadman_button < len(buttons) and bool(buttons[self.deadman_button])

    def action(self, axes: Sequence[float], buttons: Sequence[int]) -> np.ndarray:
        """The action for one joystick reading, each value in [-1, 1]."""
        out = np.zeros(self.action_dim, dtype=np.float32)
        for i, (axis, scale) in enumerate(zip(self.axis_map, self.axis_scale)):
            if 0 <= axis < len(axes):
                v = float(axes[axis])
                out[i] = 0.0 if abs(v) < self.deadzone else v * scale
        if self.gripper_close_button >= 0:
            held = self.gripper_close_button < len(buttons) and bool(buttons[self.gripper_close_button])
            out[-1] = 1.0 if held else -1.0
        return np.clip(out, -1.0, 1.0)


@dataclasses.dataclass(frozen=True)
class TeleopCommand:
    action: np.ndarray
    stamp_ns: int  # the Joy message's stamp
    reason: str


class TeleopState:
    """Deadman + silence timeout over a stream of Joy readings (times in ns of one clock)."""

    def __init__(self, mapping: JoyMapping, joy_timeout_s: float):
        if not joy_timeout_s > 0:
            raise ValueError(f"joy_timeout_s: must be positive, got {joy_timeout_s!r}")
        self.mapping = mapping
        self._timeout_ns = int(joy_timeout_s * 1e9)
        self._latest: Optional[tuple[np.ndarray, int, int, bool]] = None  # action, stamp, received, deadman
        self._consumed = True
        self.active = False
        self.last_change_reason = ""

    def on_joy(self, axes: Sequence[float], buttons: Sequence[int], stamp_ns: int, received_ns: int) -> None:
        held = self.mapping.deadman_held(buttons)
        self._latest = (self.mapping.action(axes, buttons), stamp_ns, received_ns, held)
        self._consumed = False

    @property
    def deadman_held(self) -> bool:
        """The deadman was held in the latest reading."""
        return self._latest is not None and self._latest[3]

    def command(self, now_ns: int) -> Optional[TeleopCommand]:
        """The command for this tick, or None (deadman up, joystick silent, or no new reading)."""
        latest = self._latest
        if latest is None:
            return self._set_active(False, "")
        action, stamp, received, held = latest
        if now_ns - received > self._timeout_ns:
            return self._set_active(False, "teleop silent")
        if not held:
            return self._set_active(False, "deadman released")
        self._set_active(True, "deadman pressed")
        if self._consumed:
            return None  # no new reading since the last command: do not repeat it
        self._consumed = True
        # Every command carries why the human is in control: the mux may drop the first one
        # (it came before the frame it acts on), and the one that takes control must still say why.
        return TeleopCommand(action, stamp, self.last_change_reason)

    def _set_active(self, active: bool, reason: str) -> None:
        if active != self.active:
            self.active = active
            self.last_change_reason = reason
        return None
