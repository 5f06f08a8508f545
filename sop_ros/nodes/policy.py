"""Policy node: runs the VLA on each observation and proposes the action to execute (ActionChunk).

Pairs each camera frame with the joint state of the same instant, runs the loaded checkpoint
every `execute_horizon` frames (open-loop chunk execution in between) and publishes, per frame,
the rest of the current chunk with the policy version stamped on it; the action mux executes its
first action. Checkpoints are announced on `policy_update` (PolicyUpdate, reliable +
transient-local): each is re-verified against its sha256 and loaded in a background thread, and
replaces the running policy only at an episode boundary (`episode_event`). A checkpoint that
fails verification or loading is refused with the reason logged; the old policy keeps running.
A managed node (sop_ros/nodes/_lifecycle.py): the loader thread runs while it is active, and it
proposes actions only then; cleanup forgets the loaded policy.
"""

from __future__ import annotations

import queue
import threading
from typing import Optional

import numpy as np
import torch
from builtin_interfaces.msg import Duration
from sensor_msgs.msg import Image, JointState

from sop_ros.core.robot.backend import SIM_ARM_JOINT_NAMES
from sop_ros.core.robot.policy_runner import CheckpointRefused, ChunkExecutor, PolicySlot, load_checkpoint
from sop_ros.msg import ActionChunk, EpisodeStatus, PolicyUpdate
from sop_ros.nodes import _qos
from sop_ros.nodes._convert import image_array, stamp_ns
from sop_ros.nodes._defaults import AT_LEAST_ONE, NON_NEGATIVE, RATE_HZ, Params
from sop_ros.nodes._lifecycle import ManagedNode
from sop_ros.nodes._runtime import run_nodes


class PolicyNode(ManagedNode):
    def __init__(self, **kwargs):
        super().__init__("policy", **kwargs)
        p = Params(self, "policy")
        self.robot_id = p("robot_id", "robot id from the fleet description")
        rate = p("control_rate_hz", "control rate in Hz (the period stamped on chunks)", value_range=RATE_HZ)
        start_path = p("checkpoint_path", "safetensors checkpoint to start with (empty = wait for a PolicyUpdate)")
        start_sha = p("checkpoint_sha256", "expected sha256 of checkpoint_path (empty = not verified)")
        start_version = p(
            "checkpoint_version", "version stamped on steps of the start checkpoint", value_range=NON_NEGATIVE
        )
        self._start_checkpoint = (start_path, start_sha, start_version)
        self._horizon = p(
            "execute_horizon", "actions executed from each chunk before the next forward pass", value_range=AT_LEAST_ONE
        )
        self._indicator = p("indicator", "RECAP advantage indicator at inference: '', positive or negative")
        torch.set_num_threads(p("torch_threads", "CPU threads for inference", value_range=AT_LEAST_ONE))
        # Read at each pairing of an image with a joint state.
        max_state_age_s = p(
            "max_state_age_s",
            "pair an image with a joint state at most this far apart",
            value_range=(0.0, 10.0),
            on_change=self._set_max_state_age,
        )
        self._set_max_state_age(max_state_age_s)
        self.joint_names = SIM_ARM_JOINT_NAMES
        self.period_ns = int(1e9 / rate)

        self._load_requests: queue.Queue = queue.Queue()

    def configure(self) -> None:
        self.slot = PolicySlot()
        self.executor_ = ChunkExecutor(self._horizon, self._indicator or None)
        self._requested_version = 0
        self._episode: Optional[EpisodeStatus] = None
        self._image: Optional[Image] = None
        self._state: Optional[tuple[int, np.ndarray]] = None
        self._last_stamp = -1
        self._last_chunk: Optional[ActionChunk] = None
        self.chunk_pub = self.managed_publisher(ActionChunk, "action_chunk", _qos.CONTROL)
        self.managed_subscription(Image, "camera/image_raw", self._on_image, _qos.SENSOR)
        self.managed_subscription(JointState, "joint_states", self._on_joint_state, _qos.SENSOR)
        self.managed_subscription(EpisodeStatus, "episode_event", self._on_episode_event, _qos.EVENTS)
        self.managed_subscription(PolicyUpdate, "policy_update", self._on_policy_update, _qos.LATCHED)
        # Loads run on this thread (seconds on a busy robot); deactivate joins it after the load in hand.
        self.loader = self.managed_worker("checkpoint_loader", self._load_loop)
        self._load_requests = queue.Queue()
        path, sha256, version = self._start_checkpoint
        if path:
            self._request(path, sha256, version, "start checkpoint")

    def deactivate(self) -> None:
        self._load_requests.put(None)  # the loader's stop: after the load in hand

    def cleanup(self) -> None:
        self.slot = PolicySlot()

    # --- checkpoints ------------------------------------------------------------------------
    def _on_policy_update(self, msg: PolicyUpdate) -> None:
        self._request(msg.local_path, msg.content_hash, msg.version, "PolicyUpdate")

    def _set_max_state_age(self, seconds: float) -> None:
        self.max_state_age_ns = int(seconds * 1e9)

    def _request(self, path: str, sha256: str, version: int, what: str) -> None:
        current = self.slot.current.version if self.slot.current else 0
        if version <= max(current, self._requested_version) and self.slot.current is not None:
            self.get_logger().info(
                f"{what} v{version}: not newer than v{max(current, self._requested_version)}; ignored"
            )
            return
        self._requested_version = max(self._requested_version, version)
        self.get_logger().info(f"{what} v{version}: verifying and loading {path} in the background")
        self._load_requests.put((path, sha256, version, what))

    def _load_loop(self, _stop: threading.Event) -> None:
        while (request := self._load_requests.get()) is not None:
            self._load(*request)

    def _load(self, path: str, sha256: str, version: int, what: str) -> None:
        try:
            loaded = load_checkpoint(path, sha256, version)
        except CheckpointRefused as exc:
            running = self.slot.current.version if self.slot.current else None
            self.get_logger().error(f"refused {what} v{version}: {exc}; keeping policy v{running}")
            return
        except Exception as exc:  # a loader crash must not kill the robot's running policy
            self.get_logger().error(f"refused {what} v{version}: loading failed: {exc!r}")
            return
        if self.slot.offer(loaded, running_episode=self._episode is not None):
            self.get_logger().info(f"policy v{version} loaded and active (sha256 {loaded.content_hash[:12]})")
        else:
            self.get_logger().info(f"policy v{version} loaded; it takes over at the next episode boundary")

    # --- episode boundaries -----------------------------------------------------------------
    def _on_episode_event(self, msg: EpisodeStatus) -> None:
        if msg.outcome == EpisodeStatus.OUTCOME_RUNNING:
            self._episode = msg
            self.executor_.reset()
            self._try_act()
            return
        if self._episode is not None and msg.episode_id != self._episode.episode_id:
            return
        self._episode = None
        swapped = self.slot.at_episode_boundary()
        if swapped is not None:
            self.get_logger().info(f"episode boundary: switched to policy v{swapped}")

    # --- observations -----------------------------------------------------------------------
    def _on_image(self, msg: Image) -> None:
        if (
            stamp_ns(msg.header.stamp) == self._last_stamp
            and self._last_chunk is not None
            and self._episode is not None
        ):
            # The arm re-sends a frame when no command came for it: the chunk for it never led to one
            # (lost, or it reached the mux when it could not execute it). Answer again with the same
            # chunk; staying silent would leave the arm waiting on this frame forever.
            self.chunk_pub.publish(self._last_chunk)
            return
        self._image = msg
        self._try_act()

    def _on_joint_state(self, msg: JointState) -> None:
        names = list(msg.name)
        try:
            state = np.asarray([msg.position[names.index(n)] for n in self.joint_names], dtype=np.float32)
        except ValueError:
            self.get_logger().warning(
                f"joint_states without joints {list(self.joint_names)}; ignored", throttle_duration_sec=5.0
            )
            return
        self._state = (stamp_ns(msg.header.stamp), state)
        self._try_act()

    def _try_act(self) -> None:
        loaded, episode, image, state = self.slot.current, self._episode, self._image, self._state
        if loaded is None or episode is None or image is None or state is None:
            return
        stamp = stamp_ns(image.header.stamp)
        if (
            stamp <= self._last_stamp
            or stamp < stamp_ns(episode.header.stamp)
            or abs(stamp - state[0]) > self.max_state_age_ns
        ):
            return
        self._last_stamp = stamp
        proposal = self.executor_.step(loaded, {"image": image_array(image), "state": state[1]}, episode.instruction)
        msg = ActionChunk(
            policy_version=proposal.policy_version,
            chunk_length=proposal.chunk.shape[0],
            action_dim=proposal.chunk.shape[1],
            actions=proposal.chunk.reshape(-1).tolist(),
            instruction=episode.instruction,
            inference_ms=proposal.inference_ms,
            step_period=Duration(sec=self.period_ns // 1_000_000_000, nanosec=self.period_ns % 1_000_000_000),
        )
        msg.header.stamp = image.header.stamp
        msg.header.frame_id = "base_link"
        self._last_chunk = msg
        self.chunk_pub.publish(msg)


def main(args=None) -> int:
    return run_nodes([PolicyNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
