"""What the monitor shows about one robot (ROS-free core of the monitor node).

It folds the robot's events (episode start, who acts, executed steps, finished episodes) into a
small state: the task, who is acting, the policy version, the success rate of recent labelled
episodes; renders it as text lines and a colour (human vs policy), and draws the lines onto a
camera image (OpenCV) for the annotated image RViz shows.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Optional

import cv2
import numpy as np

from sop_ros.core.episodes.episode import Actor

# RGBA in [0, 1]: who acts, at a glance.
POLICY_COLOUR = (0.15, 0.75, 0.25, 1.0)  # green: the policy drives
HUMAN_COLOUR = (1.0, 0.55, 0.0, 1.0)  # orange: a human (or the scripted operator) took over
IDLE_COLOUR = (0.6, 0.6, 0.6, 1.0)  # grey: between episodes


@dataclasses.dataclass(frozen=True)
class MonitorConfig:
    robot_id: str
    success_window: int = 20  # success rate over this many recent labelled episodes

    def __post_init__(self) -> None:
        if self.success_window < 1:
            raise ValueError(f"MonitorConfig.success_window: must be >= 1, got {self.success_window}")


class RobotMonitorState:
    """One robot's display state; every `on_*` is idempotent for replayed (transient-local) messages."""

    def __init__(self, config: MonitorConfig):
        self.config = config
        self.task_id = ""
        self.episode_id = ""
        self.running = False
        self.actor = Actor.POLICY
        self.reason = ""
        self.policy_version = 0
        self.episode_step = 0
        self.human_steps = 0
        self._outcomes: collections.deque[bool] = collections.deque(maxlen=config.success_window)
        self._finished: collections.OrderedDict[str, None] = collections.OrderedDict()

    def on_episode_start(self, episode_id: str, task_id: str) -> None:
        if episode_id == self.episode_id and self.running:
            return
        self.episode_id, self.task_id, self.running = episode_id, task_id, True
        self.actor, self.reason, self.episode_step, self.human_steps = Actor.POLICY, "", 0, 0

    def on_episode_end(self, episode_id: str) -> None:
        if episode_id == self.episode_id:
            self.running = False

    def on_actor(self, episode_id: str, actor: Actor, reason: str) -> None:
        if episode_id and episode_id != self.episode_id:
            return  # a replayed change of an earlier episode
        self.actor, self.reason = Actor(actor), reason

    def on_step(self, episode_id: str, episode_step: int, actor: Actor, policy_version: int) -> None:
        if policy_version:
            self.policy_version = int(policy_version)
        if episode_id == self.episode_id:
            self.episode_step = episode_step + 1
            self.human_steps += int(Actor(actor) == Actor.HUMAN)

    def on_policy_version(self, version: int) -> None:
        self.policy_version = max(self.policy_version, int(version))

    def on_labelled(self, episode_id: str, success: bool) -> None:
        """A finished episode's success label (counted once per episode id)."""
        if episode_id in self._finished:
            return
        self._finished[episode_id] = None
        while len(self._finished) > 10 * self.config.success_window:
            self._finished.popitem(last=False)
        self._outcomes.append(bool(success))

    @property
    def success_rate(self) -> Optional[float]:
        return sum(self._outcomes) / len(self._outcomes) if self._outcomes else None

    @property
    def labelled_episodes(self) -> int:
        return len(self._outcomes)

    @property
    def colour(self) -> tuple[float, float, float, float]:
        if not self.running:
            return IDLE_COLOUR
        return HUMAN_COLOUR if self.actor == Actor.HUMAN else POLICY_COLOUR

    def actor_text(self) -> str:
        if not self.running:
            return "idle (between episodes)"
        if self.actor == Actor.HUMAN:
            return f"HUMAN acting ({self.reason})" if self.reason else "HUMAN acting"
        return "policy acting"

    def lines(self) -> list[str]:
        rate = self.success_rate
        rate_text = "n/a" if rate is None else f"{100 * rate:.0f}% of last {self.labelled_episodes}"
        return [
            f"{self.config.robot_id}: {self.task_id or '(no task yet)'}",
            self.actor_text(),
            f"policy v{self.policy_version}  step {self.episode_step}  human {self.human_steps}",
            f"success {rate_text}",
        ]


def annotate_image(
    image: np.ndarray, lines: list[str], colour: tuple[float, float, float, float], scale: int = 4
) -> np.ndarray:
    """The RGB camera image scaled up `scale` times with `lines` written on a dark band at the top
    and a border in `colour` (who acts)."""
    image = np.asarray(image, dtype=np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"annotate_image: expected an RGB image [H, W, 3], got {image.shape}")
    if scale < 1:
        raise ValueError(f"annotate_image: scale must be >= 1, got {scale}")
    out = cv2.resize(image, (image.shape[1] * scale, image.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    rgb = tuple(int(255 * c) for c in colour[:3])
    font, font_scale, thickness = cv2.FONT_HERSHEY_SIMPLEX, 0.35 * max(1, out.shape[1] // 256), 1
    line_h = int(cv2.getTextSize("Ag", font, font_scale, thickness)[0][1] * 1.8) + 2
    band = min(out.shape[0], line_h * len(lines) + 4)
    out[:band] = (out[:band].astype(np.uint16) * 2 // 7).astype(np.uint8)  # darken for contrast
    for i, text in enumerate(lines):
        cv2.putText(
            out,
            text,
            (4, line_h * (i + 1) - 2),
            font,
            font_scale,
            rgb if i == 1 else (255, 255, 255),
            thickness,
            cv2.LINE_AA,
        )
    border = max(2, scale)
    cv2.rectangle(out, (0, 0), (out.shape[1] - 1, out.shape[0] - 1), rgb, border)
    return out
