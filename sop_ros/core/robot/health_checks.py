"""The robot's health as an operator reads it on /diagnostics (ROS-free core of robot_status).

It folds what the robot's nodes report (executed steps, proposed chunks, episode events) into
three checks, each OK / WARN / ERROR by thresholds from config/robot.yaml:
- control loop: executed steps per second over the last window vs the control rate;
- policy: the version it runs, inference time and frame-to-action latency of recent chunks;
- operator: the share of recent steps a human (or the scripted operator) produced.
The bridge adds two more from what it sees (link_check, spool_check):
- link: whether the learner answers, and the age of its last answer;
- spool: the episodes and bytes waiting to be uploaded.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping
from typing import Any, Optional

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels


@dataclasses.dataclass(frozen=True)
class HealthThresholds:
    """No defaults here: config/robot.yaml's robot_status section is their one source."""

    window_s: float  # rates and means over this many recent seconds
    rate_warn_ratio: float  # achieved / target control rate below this: WARN
    rate_error_ratio: float  # ... below this: ERROR
    inference_warn_ms: float
    latency_warn_ms: float  # frame stamp to chunk arrival
    operator_share_warn: float  # share of recent steps a human produced

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> HealthThresholds:
        """From robot_status's parameters (its window is `health_window_s` there)."""
        keys = {f.name: f.name for f in dataclasses.fields(cls)} | {"window_s": "health_window_s"}
        return cls(**{field: float(values[key]) for field, key in keys.items()})

    def __post_init__(self) -> None:
        if not (self.window_s > 0 and 0 < self.rate_error_ratio <= self.rate_warn_ratio <= 1):
            raise ValueError(f"HealthThresholds: need window_s > 0 and 0 < error <= warn <= 1, got {self}")


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    level: int
    message: str
    values: dict[str, str]


def _mean(values) -> Optional[float]:
    values = list(values)
    return sum(values) / len(values) if values else None


class RobotHealth:
    def __init__(self, thresholds: HealthThresholds, control_rate_hz: float):
        self.thresholds = thresholds
        self.control_rate_hz = control_rate_hz
        self._steps: collections.deque[tuple[float, bool]] = collections.deque()  # (time, human)
        self._chunks: collections.deque[tuple[float, float, Optional[float]]] = collections.deque()
        self.policy_version = 0
        self.in_episode = False
        self._episode_started = 0.0

    def on_episode(self, now_s: float, running: bool) -> None:
        if running and not self.in_episode:
            self._episode_started = now_s
        self.in_episode = running

    def on_step(self, now_s: float, human: bool) -> None:
        self._steps.append((now_s, human))
        self._trim(now_s)

    def on_chunk(self, now_s: float, policy_version: int, inference_ms: float, latency_ms: Optional[float]) -> None:
        self.policy_version = max(self.policy_version, int(policy_version))
        plausible = latency_ms is not None and 0.0 <= latency_ms < 60_000.0  # stamps on another clock: unknown
        self._chunks.append((now_s, float(inference_ms), latency_ms if plausible else None))
        self._trim(now_s)

    def _trim(self, now_s: float) -> None:
        for queue in (self._steps, self._chunks):
            while queue and queue[0][0] < now_s - self.thresholds.window_s:
                queue.popleft()

    def checks(self, now_s: float) -> list[Check]:
        self._trim(now_s)
        return [self._control_loop(now_s), self._policy(), self._operator()]

    def _control_loop(self, now_s: float) -> Check:
        t = self.thresholds
        if not self.in_episode:
            return Check("control_loop", OK, "between episodes", {"target_hz": f"{self.control_rate_hz:g}"})
        span = min(t.window_s, max(now_s - self._episode_started, 1e-9))
        rate = len(self._steps) / span
        ratio = rate / self.control_rate_hz if self.control_rate_hz > 0 else 1.0
        level = ERROR if ratio < t.rate_error_ratio else WARN if ratio < t.rate_warn_ratio else OK
        message = f"{rate:.1f} of {self.control_rate_hz:g} steps/s" + ("" if level == OK else " (falling behind)")
        values = {"achieved_hz": f"{rate:.2f}", "target_hz": f"{self.control_rate_hz:g}"}
        return Check("control_loop", level, message, values)

    def _policy(self) -> Check:
        t = self.thresholds
        inference = _mean(c[1] for c in self._chunks)
        latency = _mean(c[2] for c in self._chunks if c[2] is not None)
        slow = []
        if inference is not None and inference > t.inference_warn_ms:
            slow.append(f"inference {inference:.0f} ms")
        if latency is not None and latency > t.latency_warn_ms:
            slow.append(f"frame-to-action {latency:.0f} ms")
        values = {
            "policy_version": str(self.policy_version),
            "inference_ms": "-" if inference is None else f"{inference:.1f}",
            "frame_to_action_ms": "-" if latency is None else f"{latency:.1f}",
            "chunks_in_window": str(len(self._chunks)),
        }
        message = f"v{self.policy_version}" + (f", slow: {', '.join(slow)}" if slow else "")
        return Check("policy", WARN if slow else OK, message, values)

    def _operator(self) -> Check:
        share = _mean(float(human) for _, human in self._steps)
        level = WARN if share is not None and share > self.thresholds.operator_share_warn else OK
        text = "-" if share is None else f"{share:.2f}"
        return Check("operator", level, f"operator share of recent steps {text}", {"operator_share": text})


def link_check(unreachable_s: Optional[float], last_reply_age_s: Optional[float], reply_warn_s: float) -> Check:
    """ERROR while the learner is unreachable (nothing leaves the robot); WARN when it has not answered for
    `reply_warn_s` (or not yet) for another reason (a refusal, a stall)."""
    values = {
        "connected": str(unreachable_s is None and last_reply_age_s is not None),
        "unreachable_s": "0" if unreachable_s is None else f"{unreachable_s:.1f}",
        "last_reply_age_s": "-" if last_reply_age_s is None else f"{last_reply_age_s:.1f}",
    }
    if unreachable_s is not None:
        return Check("link", ERROR, f"learner unreachable for {unreachable_s:.0f} s", values)
    if last_reply_age_s is None:
        return Check("link", WARN, "no answer from the learner yet", values)
    if last_reply_age_s > reply_warn_s:
        return Check("link", WARN, f"last answer from the learner {last_reply_age_s:.0f} s ago", values)
    return Check("link", OK, "learner connected", values)


def spool_check(episodes: int, size_bytes: int, parked: int, warn_episodes: int, error_bytes: int) -> Check:
    """WARN above `warn_episodes` waiting (or any parked by the learner's refusal); ERROR above `error_bytes`
    (the spool's size limit: the disk the recorder writes to is filling)."""
    values = {"episodes": str(episodes), "bytes": str(size_bytes), "parked": str(parked)}
    message = f"{episodes} episode(s), {size_bytes / 2**20:.1f} MiB waiting"
    if size_bytes > error_bytes:
        return Check("spool", ERROR, f"{message}: above the spool limit of {error_bytes / 2**20:.0f} MiB", values)
    if episodes > warn_episodes or parked:
        return Check("spool", WARN, message + (f", {parked} refused and parked" if parked else ""), values)
    return Check("spool", OK, message, values)
