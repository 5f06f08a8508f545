"""Episode recorder: turns the robot's streams into Episodes and writes each to the on-disk spool.

Joins, per executed control tick, the camera frame and joint state (same stamp), the policy's
proposed chunk and the ExecutedStep (who acted, policy version, executed action) between the
episode's start and end events. The success label comes from the end event (the simulator's
success signal) with `label_source: environment`, or, on hardware (`label_source: operator`),
from the LabelEpisode service; an episode nobody labels within `label_timeout_s` is spooled
unlabelled. Publishes EpisodeStatus on `episode_status`, and `recorder_ready` (latched Bool) once
every stream it joins per step has a matched publisher: the sim robot holds its first episode until
then, because a reliable stream's messages sent before discovery matched the recorder are lost to it
(the first steps would be recorded without their proposed chunks). A managed node
(sop_ros/nodes/_lifecycle.py): configure opens the spool; deactivate spools what already ended
(an episode in its end grace, one waiting for its label: unlabelled) and drops the running one.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional

import numpy as np
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool

from sop_ros.core.episodes.assembly import EpisodeAssembler, ExecutedStepRecord, IncompleteEpisode
from sop_ros.core.episodes.episode import Actor, Episode, LabelSource
from sop_ros.core.robot.backend import SIM_ARM_JOINT_NAMES
from sop_ros.core.storage.spool import Spool
from sop_ros.msg import ActionChunk, EpisodeStatus, ExecutedStep, InterventionState
from sop_ros.nodes import _qos
from sop_ros.nodes._convert import image_array, stamp_ns, time_msg
from sop_ros.nodes._defaults import AT_LEAST_ONE, PERIOD_S, Params, assign
from sop_ros.nodes._lifecycle import ManagedNode
from sop_ros.nodes._recorder_gate import READY_TOPIC
from sop_ros.nodes._runtime import run_nodes
from sop_ros.srv import LabelEpisode

# Best effort like the camera, but a deep queue: the recorder must not lose frames to a burst.
_RECORDING_SENSOR = QoSProfile(depth=100, reliability=ReliabilityPolicy.BEST_EFFORT)
_END_GRACE_S = 1.0  # wait this long after an end event for the episode's last messages


class EpisodeRecorderNode(ManagedNode):
    def __init__(self, **kwargs):
        super().__init__("episode_recorder", **kwargs)
        p = Params(self, "episode_recorder")
        self.robot_id = p("robot_id", "robot id from the fleet description")
        self.spool_dir = p("spool_dir", "on-robot episode spool directory")
        self.spool_max_bytes = p(
            "spool_max_bytes", "spool size above which every write warns", value_range=AT_LEAST_ONE
        )
        self.chunk_shape = (
            p("chunk_size", "K of the recorded proposed chunks", value_range=AT_LEAST_ONE),
            p("action_dim", "dimension of one action", value_range=AT_LEAST_ONE),
        )
        source = p("label_source", "environment (sim success signal) or operator (LabelEpisode service)")
        # Read when an episode starts waiting for its label.
        self.label_timeout_s = p(
            "label_timeout_s",
            "spool an episode unlabelled after this long without a label (operator mode)",
            value_range=PERIOD_S,
            on_change=assign(self, "label_timeout_s"),
        )
        self.label_source = LabelSource(source)
        if self.label_source not in (LabelSource.ENVIRONMENT, LabelSource.OPERATOR):
            raise ValueError(f"parameter 'label_source': {source!r} must be 'environment' or 'operator'")
        self.joint_names = SIM_ARM_JOINT_NAMES

    def configure(self) -> None:
        self.spool = Spool(self.spool_dir, self.spool_max_bytes)
        self.assembler = EpisodeAssembler(self.robot_id, self.chunk_shape)
        self._start_msg: Optional[EpisodeStatus] = None
        self._ending: Optional[tuple[EpisodeStatus, float]] = None  # end event, deadline
        self._unlabelled: Optional[tuple[Episode, float]] = None  # waiting for LabelEpisode
        self.status_pub = self.managed_publisher(EpisodeStatus, "episode_status", _qos.EVENTS)
        self.ready_pub = self.managed_publisher(Bool, READY_TOPIC, _qos.LATCHED)
        self._ready = False
        self._streams = [
            self.managed_subscription(Image, "camera/image_raw", self._on_image, _RECORDING_SENSOR),
            self.managed_subscription(JointState, "joint_states", self._on_joint_state, _RECORDING_SENSOR),
            self.managed_subscription(ActionChunk, "action_chunk", self._on_chunk, _qos.CONTROL),
            self.managed_subscription(ExecutedStep, "executed_step", self._on_executed, _qos.CONTROL),
            self.managed_subscription(EpisodeStatus, "episode_event", self._on_episode_event, _qos.EVENTS),
        ]
        # Not a readiness condition: intervention changes are published only when control changes.
        self.managed_subscription(InterventionState, "intervention_state", self._on_intervention, _qos.EVENTS)
        self.managed_service(LabelEpisode, "label_episode", self._on_label)
        self.managed_timer(0.1, self._check_pending)

    def deactivate(self) -> None:
        # What already ended is kept; the running episode cannot end any more and is dropped.
        if self._ending is not None:
            self._finish()
        if self._unlabelled is not None:
            episode, self._unlabelled = self._unlabelled[0], None
            self.get_logger().warning(f"episode {episode.episode_id}: stopping before a label; spooled unlabelled")
            self._spool(episode)
        if self._start_msg is not None:
            self.get_logger().info(f"episode {self._start_msg.episode_id} not recorded: it had not ended")
            self._start_msg = None
        self._ready = False

    # --- streams ----------------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        self.assembler.observation(stamp_ns(msg.header.stamp), image=image_array(msg))

    def _on_joint_state(self, msg: JointState) -> None:
        names = list(msg.name)
        try:
            state = np.asarray([msg.position[names.index(n)] for n in self.joint_names], dtype=np.float32)
        except ValueError:
            return
        self.assembler.observation(stamp_ns(msg.header.stamp), state=state)

    def _on_chunk(self, msg: ActionChunk) -> None:
        try:
            self.assembler.proposal(
                stamp_ns(msg.header.stamp),
                np.asarray(msg.actions, dtype=np.float32).reshape(msg.chunk_length, msg.action_dim),
            )
        except ValueError as exc:
            self.get_logger().warning(
                f"ignoring an ActionChunk that does not fit the recorded chunk shape: {exc}", throttle_duration_sec=5.0
            )

    def _on_intervention(self, msg: InterventionState) -> None:
        self.assembler.control_change(stamp_ns(msg.header.stamp), msg.reason)

    def _on_executed(self, msg: ExecutedStep) -> None:
        record = ExecutedStepRecord(
            stamp_ns(msg.header.stamp),
            msg.episode_step,
            Actor(msg.actor),
            msg.policy_version,
            np.asarray(msg.action, dtype=np.float32),
        )
        self.assembler.executed(msg.episode_id, record)

    # --- episode boundaries -----------------------------------------------------------------
    def _on_episode_event(self, msg: EpisodeStatus) -> None:
        if msg.outcome == EpisodeStatus.OUTCOME_RUNNING:
            if self._start_msg is not None and self._start_msg.episode_id == msg.episode_id:
                return  # transient-local replay of the start we already have
            if self._ending is not None:
                self._finish()
            self._start_msg = msg
            self.assembler.start(msg.episode_id, msg.task_id, msg.instruction, stamp_ns(msg.header.stamp))
            self._publish_status(msg.episode_id, 0, EpisodeStatus.OUTCOME_RUNNING, EpisodeStatus.UPLOAD_RECORDING)
        elif self._start_msg is not None and msg.episode_id == self._start_msg.episode_id:
            self._ending = (msg, time.monotonic() + _END_GRACE_S)

    def _announce_ready(self) -> None:
        """Once every per-step stream has a matched publisher, say so (latched) for the robot's episode gate."""
        waiting = [s.topic_name for s in self._streams if s.get_publisher_count() == 0]
        if waiting:
            return
        self._ready = True
        self.ready_pub.publish(Bool(data=True))
        self.get_logger().info("recording: every per-step stream has a matched publisher")

    def _check_pending(self) -> None:
        if not self._ready:
            self._announce_ready()
        if self._ending is not None:
            end, deadline = self._ending
            if self.assembler.step_count >= end.step or time.monotonic() >= deadline:
                self._finish()
        if self._unlabelled is not None and time.monotonic() >= self._unlabelled[1]:
            episode = self._unlabelled[0]
            self._unlabelled = None
            self.get_logger().warning(
                f"episode {episode.episode_id}: no label within {self.label_timeout_s:g} s; spooling it unlabelled"
            )
            self._spool(episode)

    def _finish(self) -> None:
        end, _ = self._ending
        self._ending, self._start_msg = None, None
        success = end.outcome == EpisodeStatus.OUTCOME_SUCCESS
        try:
            if self.label_source == LabelSource.ENVIRONMENT:
                episode = self.assembler.finish(
                    end.episode_id, success, LabelSource.ENVIRONMENT, stamp_ns(end.header.stamp)
                )
            else:
                episode = self.assembler.finish(end.episode_id, None, LabelSource.NONE, stamp_ns(end.header.stamp))
        except IncompleteEpisode as exc:
            self.get_logger().error(f"dropping episode {end.episode_id}: {exc}")
            return
        if self.label_source == LabelSource.OPERATOR:
            if self._unlabelled is not None:
                self._spool(self._unlabelled[0])
            self._unlabelled = (episode, time.monotonic() + self.label_timeout_s)
            self._publish_status(
                episode.episode_id,
                episode.num_steps,
                EpisodeStatus.OUTCOME_UNLABELED,
                EpisodeStatus.UPLOAD_RECORDING,
                episode,
            )
            self.get_logger().info(
                f"episode {episode.episode_id} finished ({episode.num_steps} steps); waiting for a label (LabelEpisode)"
            )
        else:
            self._spool(episode)

    def _spool(self, episode: Episode) -> None:
        entry = self.spool.write(episode)
        outcome = {
            True: EpisodeStatus.OUTCOME_SUCCESS,
            False: EpisodeStatus.OUTCOME_FAILURE,
            None: EpisodeStatus.OUTCOME_UNLABELED,
        }[episode.success]
        self._publish_status(episode.episode_id, episode.num_steps, outcome, EpisodeStatus.UPLOAD_SPOOLED, episode)
        self.get_logger().info(
            f"spooled episode {episode.episode_id}: {episode.num_steps} steps, {episode.human_step_count} human, "
            f"success={episode.success}, {entry.size_bytes} bytes"
        )

    def _on_label(self, request: LabelEpisode.Request, response: LabelEpisode.Response) -> LabelEpisode.Response:
        waiting = self._unlabelled
        if waiting is None:
            response.accepted, response.message = False, "no finished episode is waiting for a label"
            return response
        episode = waiting[0]
        if request.episode_id and request.episode_id != episode.episode_id:
            response.accepted, response.message = (
                False,
                f"episode {request.episode_id} is not the one waiting ({episode.episode_id})",
            )
            return response
        self._unlabelled = None
        labelled = dataclasses.replace(episode, success=bool(request.success), label_source=LabelSource.OPERATOR)
        self._spool(labelled)
        response.accepted, response.episode_id, response.message = True, episode.episode_id, "labelled and spooled"
        return response

    def _publish_status(
        self, episode_id: str, step: int, outcome: int, upload: int, episode: Optional[Episode] = None
    ) -> None:
        start = self._start_msg
        msg = EpisodeStatus(
            episode_id=episode_id,
            robot_id=self.robot_id,
            step=step,
            outcome=outcome,
            upload_state=upload,
            task_id=episode.task_id if episode else (start.task_id if start else ""),
            instruction=episode.instruction if episode else (start.instruction if start else ""),
            human_steps=episode.human_step_count if episode else 0,
        )
        pending = self.spool.pending()
        msg.spooled_episodes, msg.spooled_bytes = len(pending), sum(e.size_bytes for e in pending)
        msg.header.stamp = time_msg(time.time_ns())
        self.status_pub.publish(msg)


def main(args=None) -> int:
    return run_nodes([EpisodeRecorderNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
