"""Scripted operator (simulation only): plays the human who watches the rollout and intervenes.

On every observation's privileged state (sim/privileged_state) it applies the core takeover rule
(sop_ros.core.robot.operator: no progress for k steps, or a large deviation of the policy's latest
proposal from the expert) and, while intervening, sends a HumanCommand stamped with the observation it
answers: the simulator expert's action, and a few recovery steps (hand up, gripper open) where the
expert makes no progress (sop_ros.core.robot.operator_recovery; the arm's joint_states tell whether it
moves); it hands back by falling silent. A managed node (sop_ros/nodes/_lifecycle.py): it watches
and commands only while active.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from sensor_msgs.msg import JointState

from sop_ros.core.robot.operator import OperatorRuleConfig
from sop_ros.core.robot.operator_recovery import RecoveringOperator
from sop_ros.msg import ActionChunk, EpisodeStatus, HumanCommand, PrivilegedState
from sop_ros.nodes import _qos
from sop_ros.nodes._convert import stamp_ns
from sop_ros.nodes._defaults import Params
from sop_ros.nodes._lifecycle import ManagedNode
from sop_ros.nodes._runtime import run_nodes


class ScriptedOperatorNode(ManagedNode):
    def __init__(self, **kwargs):
        super().__init__("scripted_operator", **kwargs)
        p = Params(self, "scripted_operator")
        rule = OperatorRuleConfig(
            stall_steps=p("stall_steps", "policy steps without progress before a takeover (0 disables)"),
            stuck_steps=p("stuck_steps", "policy steps without progress or arm motion before a takeover (0 disables)"),
            min_progress_delta=p("min_progress_delta", "an improvement smaller than this is not progress"),
            deviation_threshold=p(
                "deviation_threshold", "L2 distance between policy and expert action that counts as deviating"
            ),
            deviation_steps=p("deviation_steps", "consecutive deviating steps before a takeover (0 disables)"),
            handback_progress_steps=p("handback_progress_steps", "expert steps with progress before handing back"),
            subgoal_gain=p("subgoal_gain", "progress gained since the takeover that also hands back"),
            progress_excuses_deviation=p(
                "progress_excuses_deviation",
                "a deviating step that made progress does not count toward deviation_steps",
            ),
            max_handbacks=p(
                "max_handbacks",
                "hand-backs per episode; at the takeover after the last one the operator finishes (-1 = no limit)",
            ),
            recovery_steps=p(
                "recovery_steps",
                "steps of recovery_action in a recovery, before the expert acts again (0 = never recover)",
            ),
            recovery_action=p(
                "recovery_action", "recovery command in the action space (MetaWorld: hand up, gripper open)"
            ),
            expert_stall_steps=p(
                "expert_stall_steps", "expert steps without progress or motion before recovering again (0 disables)"
            ),
            stall_motion=p("stall_motion", "an arm-state (joint position) value changing more than this is motion"),
            recovery_probe_steps=p(
                "recovery_probe_steps",
                "at a takeover the expert acts first; recover only if no new best progress in this many steps (0 = "
                "always)",
            ),
            recovery_probe_gain=p(
                "recovery_probe_gain", "progress above the episode's best within the probe that skips the recovery"
            ),
        )
        self.operator = RecoveringOperator(rule)

    def configure(self) -> None:
        self.operator.reset()
        self._episode_id = ""
        self._last_stamp = -1
        self._policy_action: Optional[np.ndarray] = None
        # Latest joint positions: is the arm moving (the stuck rule, the recovery's stall test).
        self._arm_state: Optional[np.ndarray] = None
        self._reason = ""
        self.command_pub = self.managed_publisher(HumanCommand, "intervention/command", _qos.CONTROL)
        self.managed_subscription(PrivilegedState, "sim/privileged_state", self._on_state, _qos.CONTROL)
        self.managed_subscription(ActionChunk, "action_chunk", self._on_chunk, _qos.CONTROL)
        self.managed_subscription(JointState, "joint_states", self._on_joint_state, _qos.SENSOR)
        self.managed_subscription(EpisodeStatus, "episode_event", self._on_episode_event, _qos.EVENTS)

    def _on_episode_event(self, msg: EpisodeStatus) -> None:
        if msg.outcome == EpisodeStatus.OUTCOME_RUNNING and msg.episode_id != self._episode_id:
            self._start(msg.episode_id)

    def _start(self, episode_id: str) -> None:
        self._episode_id = episode_id
        self.operator.reset()
        self._policy_action = None

    def _on_chunk(self, msg: ActionChunk) -> None:
        if msg.chunk_length >= 1 and msg.action_dim >= 1:
            self._policy_action = np.asarray(msg.actions[: msg.action_dim], dtype=np.float32)

    def _on_joint_state(self, msg: JointState) -> None:
        self._arm_state = np.asarray(msg.position, dtype=np.float64)

    def _on_state(self, msg: PrivilegedState) -> None:
        stamp = stamp_ns(msg.header.stamp)
        if stamp <= self._last_stamp:
            return  # a re-sent observation: already judged
        self._last_stamp = stamp
        if msg.episode_id != self._episode_id:
            self._start(msg.episode_id)
        expert = np.asarray(msg.expert_action, dtype=np.float32)
        command = self.operator.decide(float(msg.progress), self._policy_action, expert, self._arm_state)
        decision = command.decision
        if decision.changed:
            self._reason = decision.reason
            self.get_logger().info(
                f"{'taking over' if decision.intervening else 'handing back'} at step {msg.episode_step}: "
                f"{decision.reason}"
            )
        if command.recovery_started:
            cfg = self.operator.config
            why = {
                "takeover": "at the takeover",
                "probe": f"the expert gained less than {cfg.recovery_probe_gain:g} in {cfg.recovery_probe_steps} steps",
                "stall": f"the expert stalled (no progress, arm still for {cfg.expert_stall_steps} steps)",
            }[self.operator.recovery.recovery_cause]
            self.get_logger().info(
                f"recovering ({cfg.recovery_steps} steps of {list(cfg.recovery_action)}) at step {msg.episode_step}: "
                f"{why}"
            )
        if command.action is not None:
            cmd = HumanCommand(action=command.action.tolist(), source="scripted_operator", reason=self._reason)
            cmd.header.stamp = msg.header.stamp
            self.command_pub.publish(cmd)


def main(args=None) -> int:
    return run_nodes([ScriptedOperatorNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
