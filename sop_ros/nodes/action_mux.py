"""Action mux: executes the human's command whenever one is active, else the policy's proposal.

Per control tick (a policy ActionChunk, stamped with its observation) it decides who acts
(sop_ros.core.robot.action_mux), sends the executed action to the arm as a stamped JointTrajectory
goal (the same goal a ros2_control joint_trajectory_controller takes), publishes ExecutedStep
for the recorder and, on every change of who acts, InterventionState. It executes only while an
episode runs (`episode_event`): the arm stops at the end event even if the policy, which hears of
the end on its own, still proposes. A managed node (sop_ros/nodes/_lifecycle.py): it commands the
arm only while active, so a lifecycle manager activates it after the policy and deactivates it first.
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from sop_ros.backends.ros2_control_arm import Ros2ControlArm
from sop_ros.core.episodes.episode import Actor
from sop_ros.core.robot.action_mux import ActionMux, Execution, HumanInput, MuxConfig
from sop_ros.core.robot.arm_command import ArmCommandCodec
from sop_ros.core.robot.backend import SIM_ARM_JOINT_NAMES
from sop_ros.msg import ActionChunk, EpisodeStatus, ExecutedStep, HumanCommand, InterventionState
from sop_ros.nodes import _qos
from sop_ros.nodes._convert import stamp_ns, time_msg
from sop_ros.nodes._defaults import PERIOD_S, POSITION_SCALE_M, RATE_HZ, Params
from sop_ros.nodes._lifecycle import ManagedNode
from sop_ros.nodes._runtime import run_nodes


class ActionMuxNode(ManagedNode):
    def __init__(self, **kwargs):
        super().__init__("action_mux", **kwargs)
        p = Params(self, "action_mux")
        self.rate_hz = p("control_rate_hz", "control rate in Hz", value_range=RATE_HZ)
        self.human_timeout_s = p(
            "human_timeout_s", "human control lapses this long after its last command", value_range=PERIOD_S
        )
        self.position_scale = p(
            "position_scale", "metres of end-effector motion per unit action", value_range=POSITION_SCALE_M
        )
        self.trajectory_topic = p("trajectory_topic", "joint_trajectory_controller command topic")

    def configure(self) -> None:
        self.mux = ActionMux(MuxConfig(human_timeout_s=self.human_timeout_s))
        self.arm = Ros2ControlArm(ArmCommandCodec(SIM_ARM_JOINT_NAMES, self.position_scale, 1.0 / self.rate_hz))
        self._state: Optional[np.ndarray] = None
        self._episode_id = ""
        self._episode_step = 0
        self._segments = 0
        self._policy_version = 0

        self.goal_pub = self.managed_publisher(JointTrajectory, self.trajectory_topic, _qos.CONTROL)
        self.executed_pub = self.managed_publisher(ExecutedStep, "executed_step", _qos.CONTROL)
        self.intervention_pub = self.managed_publisher(InterventionState, "intervention_state", _qos.EVENTS)
        self.managed_subscription(ActionChunk, "action_chunk", self._on_chunk, _qos.CONTROL)
        self.managed_subscription(HumanCommand, "intervention/command", self._on_human, _qos.CONTROL)
        self.managed_subscription(JointState, "joint_states", self._on_joint_state, _qos.SENSOR)
        self.managed_subscription(EpisodeStatus, "episode_event", self._on_episode_event, _qos.EVENTS)
        self.managed_timer(min(self.human_timeout_s / 5.0, 0.5 / self.rate_hz), self._poll)

    def deactivate(self) -> None:
        # No command after this: the episode running now gets no more steps from this node.
        if self.mux.episode_running:
            self.mux.end_episode()

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            self._state = self.arm.state_from(msg)
        except ValueError as exc:
            self.get_logger().warning(str(exc), throttle_duration_sec=5.0)

    def _on_episode_event(self, msg: EpisodeStatus) -> None:
        if msg.outcome != EpisodeStatus.OUTCOME_RUNNING:
            if msg.episode_id == self._episode_id and self.mux.episode_running:
                if self.mux.actor == Actor.HUMAN:
                    self.get_logger().info("episode ended while the human acted: the next one starts with the policy")
                # The arm stops with the episode, not when the policy node hears of the end too.
                self.mux.end_episode()
            return
        if msg.episode_id == self._episode_id:
            return  # transient-local replay of the start we already have
        self._episode_id, self._episode_step, self._segments = msg.episode_id, 0, 0
        self.mux.start_episode(stamp_ns(msg.header.stamp))
        self._poll()  # a proposal for its first frame may have come first

    def _on_chunk(self, msg: ActionChunk) -> None:
        if msg.chunk_length < 1 or len(msg.actions) != msg.chunk_length * msg.action_dim:
            self.get_logger().warning("ignoring a malformed ActionChunk", throttle_duration_sec=5.0)
            return
        self._policy_version = msg.policy_version
        self.mux.propose(stamp_ns(msg.header.stamp), np.asarray(msg.actions[: msg.action_dim], dtype=np.float32))
        self._poll()

    def _on_human(self, msg: HumanCommand) -> None:
        self.mux.human(
            HumanInput(
                np.asarray(msg.action, dtype=np.float32), stamp_ns(msg.header.stamp), time.monotonic_ns(), msg.reason
            )
        )
        self._poll()

    def _poll(self) -> None:
        execution = self.mux.poll(time.monotonic_ns())
        if execution is not None:
            self._execute(execution)

    def _execute(self, ex: Execution) -> None:
        now = time.time_ns()
        if self._state is None:
            self.get_logger().warning("no joint state yet: cannot command the arm", throttle_duration_sec=5.0)
            return
        goal = self.arm.goal_message(self._state, ex.action, now)
        if goal is not None:
            self.goal_pub.publish(goal)
        if ex.changed:
            if ex.actor == Actor.HUMAN:
                self._segments += 1
            self._publish_intervention(ex.actor, ex.tick_stamp_ns, ex.reason)
        step = ExecutedStep(
            episode_id=self._episode_id,
            episode_step=self._episode_step,
            actor=int(ex.actor),
            policy_version=self._policy_version,
            action=ex.action.tolist(),
            executed_at=time_msg(now),
        )
        step.header.stamp = time_msg(ex.tick_stamp_ns)
        self.executed_pub.publish(step)
        self._episode_step += 1

    def _publish_intervention(self, actor: Actor, tick_ns: int, reason: str) -> None:
        msg = InterventionState(
            actor=int(actor),
            since=time_msg(tick_ns),
            segment_index=self._segments - 1,
            episode_step=self._episode_step,
            reason=reason,
            episode_id=self._episode_id,
        )
        msg.header.stamp = time_msg(tick_ns)
        self.intervention_pub.publish(msg)
        self.get_logger().info(
            f"{'human' if actor == Actor.HUMAN else 'policy'} acts from step {self._episode_step}: {reason}"
        )


def main(args=None) -> int:
    return run_nodes([ActionMuxNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
