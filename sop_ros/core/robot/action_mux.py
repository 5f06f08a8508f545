"""Who commands the arm at each control tick: the human when a fresh command exists, else the policy.

A control tick is one observation (camera frame), identified by its stamp. The policy proposes
one action per tick; a human source (teleop or the scripted operator) sends commands only while
it wants control. Rules (ROS-free, so they are unit-tested without a graph):
- a human command is executed at most once, and only for a tick after the one it was produced
  for (stamp > stamp of the last executed tick): a stale command is never repeated;
- while the human is in control (a command arrived within `human_timeout_s`), a tick waits for
  the human's next command instead of falling back to the policy at once;
- once the human has been silent for `human_timeout_s`, the policy's proposal is executed and
  control is back with the policy;
- nothing is executed outside an episode (after its end event the arm stops, even while a late
  policy still proposes), and a tick taken before the running episode started is never executed.
  A proposal that arrives before its episode's start event is held, not dropped: the two come on
  different topics, in either order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np

from sop_ros.core.episodes.episode import Actor


@dataclasses.dataclass(frozen=True)
class MuxConfig:
    """No defaults here: config/robot.yaml's action_mux section is their one source (the node declares them
    from it; other users build this with from_mapping(sop_ros.resources.node_defaults("action_mux")))."""

    human_timeout_s: float

    def __post_init__(self) -> None:
        if not self.human_timeout_s > 0:
            raise ValueError(f"MuxConfig.human_timeout_s: must be positive, got {self.human_timeout_s!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> MuxConfig:
        """The config from a parameter mapping (e.g. the node's YAML section); keys that are not fields are ignored."""
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class HumanInput:
    action: np.ndarray
    stamp_ns: int  # when it was produced
    received_ns: int  # when the mux got it (monotonic clock of the caller)
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class Execution:
    """The decision for one tick."""

    tick_stamp_ns: int
    action: np.ndarray
    actor: Actor
    changed: bool  # the actor differs from the previous tick's
    reason: str  # why control changed (empty when unchanged)


class ActionMux:
    """Feed it ticks (the policy's proposal per observation) and human commands; `poll()` decides."""

    def __init__(self, config: MuxConfig):
        self.config = config
        self._timeout_ns = int(config.human_timeout_s * 1e9)
        self.actor = Actor.POLICY
        self._pending: Optional[tuple[int, np.ndarray]] = None
        self._human: Optional[HumanInput] = None
        self._human_seen_ns: Optional[int] = None
        self._last_executed_stamp = -1
        self._episode_start_ns: Optional[int] = None  # None: no episode is running

    @property
    def last_executed_stamp_ns(self) -> int:
        return self._last_executed_stamp

    @property
    def episode_running(self) -> bool:
        return self._episode_start_ns is not None

    def start_episode(self, start_stamp_ns: int) -> None:
        """An episode starts with the policy; a human who still wants control commands again."""
        self._episode_start_ns = start_stamp_ns
        if self._pending is not None and self._pending[0] < start_stamp_ns:
            self._pending = None  # a tick of the previous episode (or between episodes)
        self._give_control_to_policy()

    def end_episode(self) -> None:
        """The episode ended: execute nothing until the next one starts."""
        self._episode_start_ns = None
        self._pending = None
        self._give_control_to_policy()

    def _give_control_to_policy(self) -> None:
        self._human = None
        self._human_seen_ns = None
        self.actor = Actor.POLICY

    def propose(self, tick_stamp_ns: int, policy_action: np.ndarray) -> bool:
        """The policy's action for a tick. False for a tick already executed (a duplicate) or taken
        before the running episode started."""
        if tick_stamp_ns <= self._last_executed_stamp:
            return False
        if self._episode_start_ns is not None and tick_stamp_ns < self._episode_start_ns:
            return False
        self._pending = (tick_stamp_ns, np.asarray(policy_action, dtype=np.float32))
        return True

    def human(self, command: HumanInput) -> None:
        self._human = command
        self._human_seen_ns = command.received_ns

    def _human_fresh(self, now_ns: int) -> bool:
        h = self._human
        return h is not None and h.stamp_ns > self._last_executed_stamp and now_ns - h.received_ns <= self._timeout_ns

    def _human_active(self, now_ns: int) -> bool:
        return self._human_seen_ns is not None and now_ns - self._human_seen_ns <= self._timeout_ns

    def poll(self, now_ns: int) -> Optional[Execution]:
        """Execute the pending tick if it can be decided now; None = nothing to do yet."""
        if self._pending is None or self._episode_start_ns is None:
            return None
        stamp, policy_action = self._pending
        if self._human_fresh(now_ns):
            assert self._human is not None
            action, actor, reason = self._human.action, Actor.HUMAN, self._human.reason or "human command"
            self._human = None  # executed once, never again
        elif self._human_active(now_ns):
            return None  # the human is in control: wait for their next command
        else:
            action, actor = policy_action, Actor.POLICY
            reason = "human silent" if self.actor == Actor.HUMAN else ""
        changed = actor != self.actor
        self.actor = actor
        self._pending = None
        self._last_executed_stamp = stamp
        return Execution(stamp, np.asarray(action, dtype=np.float32), actor, changed, reason if changed else "")
