"""The episode: what one robot did on one task, step by step, and how it ended.

This is the contract every layer shares (recorder, spool, wire, learner stores,
sampler, algorithms). It is plain numpy; the on-disk format lives in episode_file.py.
An Episode is immutable once closed: build it with EpisodeBuilder, then `close()`.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from collections.abc import Sequence
from typing import Optional

import numpy as np


class Actor(enum.IntEnum):
    """Who produced the executed action of a step."""

    POLICY = 0
    HUMAN = 1


class LabelSource(str, enum.Enum):
    """Where the episode's success label came from."""

    ENVIRONMENT = "environment"  # simulator's success signal
    OPERATOR = "operator"  # a human pressed success/failure (LabelEpisode service)
    CLASSIFIER = "classifier"  # a learned success detector
    NONE = "none"  # not labelled (yet)


class EpisodeValidationError(ValueError):
    """An episode (in memory or read from a file) breaks the schema."""


@dataclasses.dataclass(frozen=True)
class InterventionSegment:
    """Steps [start_step, end_step) during which the human was acting."""

    start_step: int
    end_step: int
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class Episode:
    """A closed episode. Arrays are indexed by step (length T)."""

    episode_id: str  # UUID4 string chosen on the robot
    robot_id: str
    task_id: str  # e.g. "reach-v3"
    instruction: str  # natural-language task instruction given to the policy
    images: np.ndarray  # uint8 [T, H, W, 3]
    states: np.ndarray  # float32 [T, S] proprio state
    actions: np.ndarray  # float32 [T, A] executed action
    actors: np.ndarray  # uint8 [T], Actor values
    policy_versions: np.ndarray  # int64 [T], checkpoint version that was loaded at this step
    proposed_chunks: np.ndarray  # float32 [T, K, A]; NaN rows where the human acted
    stamps_ns: np.ndarray  # int64 [T], wall-clock time of the step (observation time)
    success: Optional[bool]  # None when unlabelled
    label_source: LabelSource
    start_ns: int
    end_ns: int
    intervention_reasons: tuple[str, ...] = ()  # one reason per intervention segment, in order

    @property
    def num_steps(self) -> int:
        return int(self.actions.shape[0])

    @property
    def intervention_segments(self) -> tuple[InterventionSegment, ...]:
        """Maximal runs of human steps (derived from actors, so they cannot disagree)."""
        return segments_from_actors(self.actors, self.intervention_reasons)

    @property
    def human_step_count(self) -> int:
        return int(np.count_nonzero(self.actors == Actor.HUMAN))

    def validate(self) -> None:
        """Raise EpisodeValidationError naming the first field that is wrong."""
        validate_episode(self)


def segments_from_actors(actors: np.ndarray, reasons: Sequence[str] = ()) -> tuple[InterventionSegment, ...]:
    segments = []
    start = None
    for i, a in enumerate(np.asarray(actors).tolist()):
        if a == Actor.HUMAN and start is None:
            start = i
        elif a != Actor.HUMAN and start is not None:
            segments.append((start, i))
            start = None
    if start is not None:
        segments.append((start, len(actors)))
    return tuple(InterventionSegment(s, e, reasons[k] if k < len(reasons) else "") for k, (s, e) in enumerate(segments))


def _check(cond: bool, field: str, what: str) -> None:
    if not cond:
        raise EpisodeValidationError(f"episode field '{field}': {what}")


def validate_episode(ep: Episode) -> None:
    try:
        uuid.UUID(ep.episode_id)
    except (ValueError, TypeError, AttributeError):
        raise EpisodeValidationError(f"episode field 'episode_id': not a UUID: {ep.episode_id!r}") from None
    for name in ("robot_id", "task_id"):
        value = getattr(ep, name)
        _check(isinstance(value, str) and value != "", name, "must be a non-empty string")
    _check(isinstance(ep.instruction, str), "instruction", "must be a string")
    t = ep.actions.shape[0] if isinstance(ep.actions, np.ndarray) and ep.actions.ndim == 2 else -1
    _check(t > 0, "actions", "must be a non-empty float32 [T, A] array")
    expected = {
        "images": (np.uint8, 4),
        "states": (np.float32, 2),
        "actions": (np.float32, 2),
        "actors": (np.uint8, 1),
        "policy_versions": (np.int64, 1),
        "proposed_chunks": (np.float32, 3),
        "stamps_ns": (np.int64, 1),
    }
    for name, (dtype, ndim) in expected.items():
        arr = getattr(ep, name)
        _check(isinstance(arr, np.ndarray), name, "must be a numpy array")
        _check(arr.dtype == dtype, name, f"dtype {arr.dtype}, expected {np.dtype(dtype)}")
        _check(arr.ndim == ndim, name, f"shape {arr.shape}, expected {ndim} dimensions")
        _check(arr.shape[0] == t, name, f"length {arr.shape[0]} != number of steps {t}")
    _check(ep.images.shape[3] == 3, "images", f"shape {ep.images.shape}, expected [T, H, W, 3]")
    _check(ep.proposed_chunks.shape[2] == ep.actions.shape[1], "proposed_chunks", "action dim differs from actions")
    _check(
        bool(np.isin(ep.actors, [Actor.POLICY, Actor.HUMAN]).all()), "actors", "values must be 0 (policy) or 1 (human)"
    )
    _check(bool(np.isfinite(ep.actions).all()), "actions", "contains NaN or inf")
    _check(bool(np.isfinite(ep.states).all()), "states", "contains NaN or inf")
    _check(bool((np.diff(ep.stamps_ns) >= 0).all()), "stamps_ns", "timestamps go backwards")
    _check(bool((ep.policy_versions >= 0).all()), "policy_versions", "negative version")
    _check(ep.success is None or isinstance(ep.success, bool), "success", "must be true, false or null")
    _check(isinstance(ep.label_source, LabelSource), "label_source", "unknown label source")
    _check(
        (ep.success is None) == (ep.label_source == LabelSource.NONE),
        "label_source",
        "must be 'none' exactly when unlabelled",
    )
    _check(
        len(ep.intervention_reasons) <= len(segments_from_actors(ep.actors)),
        "intervention_reasons",
        "more reasons than intervention segments",
    )
    _check(ep.end_ns >= ep.start_ns, "end_ns", "episode ends before it starts")


class EpisodeBuilder:
    """Accumulates steps while an episode is running; `close()` returns the immutable Episode."""

    def __init__(
        self,
        robot_id: str,
        task_id: str,
        instruction: str,
        chunk_shape: tuple[int, int],
        episode_id: str | None = None,
        start_ns: int = 0,
    ):
        self.episode_id = episode_id or str(uuid.uuid4())
        self.robot_id = robot_id
        self.task_id = task_id
        self.instruction = instruction
        self.chunk_shape = tuple(chunk_shape)
        self.start_ns = start_ns
        self._steps: list[tuple] = []
        self.intervention_reasons: list[str] = []

    def __len__(self) -> int:
        return len(self._steps)

    def add_step(
        self,
        image: np.ndarray,
        state: np.ndarray,
        action: np.ndarray,
        actor: Actor,
        policy_version: int,
        stamp_ns: int,
        proposed_chunk: np.ndarray | None = None,
    ) -> None:
        if proposed_chunk is None:
            proposed_chunk = np.full(self.chunk_shape, np.nan, dtype=np.float32)
        self._steps.append(
            (
                np.asarray(image, dtype=np.uint8),
                np.asarray(state, dtype=np.float32),
                np.asarray(action, dtype=np.float32),
                int(actor),
                int(policy_version),
                np.asarray(proposed_chunk, dtype=np.float32).reshape(self.chunk_shape),
                int(stamp_ns),
            )
        )

    def close(self, success: Optional[bool], label_source: LabelSource, end_ns: int) -> Episode:
        if not self._steps:
            raise EpisodeValidationError("episode has no steps")
        images, states, actions, actors, versions, chunks, stamps = zip(*self._steps)
        ep = Episode(
            episode_id=self.episode_id,
            robot_id=self.robot_id,
            task_id=self.task_id,
            instruction=self.instruction,
            images=np.stack(images),
            states=np.stack(states),
            actions=np.stack(actions),
            actors=np.asarray(actors, dtype=np.uint8),
            policy_versions=np.asarray(versions, dtype=np.int64),
            proposed_chunks=np.stack(chunks),
            stamps_ns=np.asarray(stamps, dtype=np.int64),
            success=success,
            label_source=label_source,
            start_ns=self.start_ns or stamps[0],
            end_ns=end_ns,
            intervention_reasons=tuple(self.intervention_reasons),
        )
        ep.validate()
        return ep
