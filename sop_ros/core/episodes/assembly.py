"""Assembling recorded episodes from the robot's streams (ROS-free core of the episode recorder).

Per control tick the recorder sees an observation (image + state, keyed by the camera stamp),
the policy's proposed chunk for it (same stamp) and the executed step (same stamp, with who
acted and the policy version). Episode start/end events bracket the ticks. Observations and
proposals arrive on their own topics in any order, so they are buffered by stamp and joined
when the episode closes. A step whose image or state never arrived makes the episode incomplete:
it is dropped with a reason instead of being filled with invented data.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import OrderedDict
from typing import Optional

import numpy as np

from sop_ros.core.episodes.episode import Actor, Episode, EpisodeBuilder, LabelSource

log = logging.getLogger(__name__)


class IncompleteEpisode(ValueError):
    """The episode cannot be closed: a step lacks its observation, or it has no steps."""


@dataclasses.dataclass(frozen=True)
class ExecutedStepRecord:
    stamp_ns: int
    episode_step: int
    actor: Actor
    policy_version: int
    action: np.ndarray


class _StampBuffer:
    """Bounded stamp -> value map (oldest dropped first)."""

    def __init__(self, capacity: int):
        self._items: OrderedDict[int, object] = OrderedDict()
        self._capacity = capacity

    def put(self, stamp_ns: int, value: object) -> None:
        self._items[stamp_ns] = value
        self._items.move_to_end(stamp_ns)
        while len(self._items) > self._capacity:
            self._items.popitem(last=False)

    def pop(self, stamp_ns: int) -> Optional[object]:
        return self._items.pop(stamp_ns, None)

    def nearest(self, stamp_ns: int, max_age_ns: int) -> Optional[object]:
        """The value whose stamp is closest to stamp_ns, if within max_age_ns (kept in the buffer)."""
        best = min(self._items, key=lambda k: abs(k - stamp_ns), default=None)
        return None if best is None or abs(best - stamp_ns) > max_age_ns else self._items[best]


class EpisodeAssembler:
    """One robot's recording state: the open episode and the buffered per-stamp streams."""

    def __init__(
        self, robot_id: str, chunk_shape: tuple[int, int], buffer_steps: int = 2000, max_state_age_ns: int = 50_000_000
    ):
        # On hardware the camera and the arm stamp independently: a frame is paired with the
        # nearest joint state within max_state_age_ns (the policy pairs them the same way).
        # In simulation both carry the same stamp and the exact match is used.
        self.max_state_age_ns = max_state_age_ns
        self.robot_id = robot_id
        self.chunk_shape = tuple(chunk_shape)
        self._images = _StampBuffer(buffer_steps)
        self._states = _StampBuffer(buffer_steps)
        self._chunks = _StampBuffer(buffer_steps)
        self._reasons = _StampBuffer(buffer_steps)  # tick stamp -> why control changed there
        self._open: Optional[dict] = None
        self._steps: list[ExecutedStepRecord] = []

    @property
    def episode_id(self) -> Optional[str]:
        return self._open["episode_id"] if self._open else None

    @property
    def step_count(self) -> int:
        return len(self._steps)

    @property
    def human_steps(self) -> int:
        return sum(1 for s in self._steps if s.actor == Actor.HUMAN)

    def observation(
        self, stamp_ns: int, image: Optional[np.ndarray] = None, state: Optional[np.ndarray] = None
    ) -> None:
        if image is not None:
            self._images.put(stamp_ns, np.asarray(image, dtype=np.uint8))
        if state is not None:
            self._states.put(stamp_ns, np.asarray(state, dtype=np.float32))

    def proposal(self, stamp_ns: int, chunk: np.ndarray) -> None:
        self._chunks.put(stamp_ns, np.asarray(chunk, dtype=np.float32).reshape(self.chunk_shape))

    def control_change(self, stamp_ns: int, reason: str) -> None:
        """The action mux changed the actor at this tick (InterventionState), for this reason."""
        self._reasons.put(stamp_ns, reason)

    def start(self, episode_id: str, task_id: str, instruction: str, start_ns: int) -> None:
        if self._open is not None:
            log.warning(
                "episode %s started while %s was still open; discarding the open one",
                episode_id,
                self._open["episode_id"],
            )
        self._open = dict(episode_id=episode_id, task_id=task_id, instruction=instruction, start_ns=start_ns)
        self._steps = []

    def executed(self, episode_id: str, record: ExecutedStepRecord) -> bool:
        """Add an executed step; False if it belongs to no open episode (ignored)."""
        if self._open is None or episode_id != self._open["episode_id"]:
            return False
        self._steps.append(record)
        return True

    def finish(self, episode_id: str, success: Optional[bool], label_source: LabelSource, end_ns: int) -> Episode:
        """Close the open episode; raise IncompleteEpisode when it cannot be assembled."""
        if self._open is None or episode_id != self._open["episode_id"]:
            raise IncompleteEpisode(f"episode {episode_id}: no such open episode")
        meta, steps = self._open, sorted(self._steps, key=lambda s: s.stamp_ns)
        self._open, self._steps = None, []
        if not steps:
            raise IncompleteEpisode(f"episode {episode_id}: no executed steps")
        builder = EpisodeBuilder(
            self.robot_id,
            meta["task_id"],
            meta["instruction"],
            self.chunk_shape,
            episode_id=episode_id,
            start_ns=meta["start_ns"],
        )
        previous = Actor.POLICY
        for i, step in enumerate(steps):
            if step.episode_step != i:
                raise IncompleteEpisode(
                    f"episode {episode_id}: executed step {i} missing (got step {step.episode_step})"
                )
            image, state = self._images.pop(step.stamp_ns), self._states.pop(step.stamp_ns)
            if state is None:
                state = self._states.nearest(step.stamp_ns, self.max_state_age_ns)
            if image is None or state is None:
                missing = "image" if image is None else "state"
                raise IncompleteEpisode(f"episode {episode_id}: step {i} has no {missing} (stamp {step.stamp_ns})")
            chunk = self._chunks.pop(step.stamp_ns)
            if step.actor == Actor.HUMAN and previous != Actor.HUMAN:
                builder.intervention_reasons.append(str(self._reasons.pop(step.stamp_ns) or ""))
            previous = step.actor
            builder.add_step(
                image,
                state,
                step.action,
                step.actor,
                step.policy_version,
                step.stamp_ns,
                None if step.actor == Actor.HUMAN else chunk,
            )
        return builder.close(success, label_source, end_ns)
