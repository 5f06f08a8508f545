"""Episode manager (hardware): decides when episodes start and end, as sim_robot does in simulation.

Publishes EpisodeStatus on `episode_event` exactly like sim_robot (OUTCOME_RUNNING when an episode
starts, an end outcome when it ends), so the policy, action mux and recorder run unchanged on
hardware. An episode ends when the operator says so (`end_episode`, a LabelEpisode request: the
operator ends the episode and says whether the task succeeded in one action; the label is then
forwarded to the recorder's `label_episode`) or after `max_duration_s` (outcome UNLABELED: the
operator labels it later with the recorder's `label_episode`). The next episode starts
`reset_pause_s` later, giving the operator time to reset the scene; `set_task` (SetTask)
chooses its task, otherwise the tasks cycle in order. A managed node (sop_ros/nodes/_lifecycle.py):
episodes start only while it is active; one running at deactivation is abandoned, never labelled.
"""

from __future__ import annotations

import time
import uuid
from typing import Optional

from sop_ros.core.robot.tasks import TaskSpec, load_task_specs
from sop_ros.msg import EpisodeStatus, ExecutedStep
from sop_ros.nodes import _qos
from sop_ros.nodes._convert import time_msg
from sop_ros.nodes._defaults import PAUSE_S, Params, assign
from sop_ros.nodes._lifecycle import ManagedNode
from sop_ros.nodes._recorder_gate import RecorderGate
from sop_ros.nodes._runtime import run_nodes
from sop_ros.resources import default_tasks_path
from sop_ros.srv import LabelEpisode, SetTask

_FORWARD_RETRY_S = 0.25  # the recorder holds the episode for a label only after its last steps arrived
_FORWARD_TIMEOUT_S = 10.0


class EpisodeManagerNode(ManagedNode):
    def __init__(self, **kwargs):
        super().__init__("episode_manager", **kwargs)
        p = Params(self, "episode_manager")
        self.robot_id = p("robot_id", "robot id from the fleet description")
        task_ids = p("tasks", "task ids this robot runs; episodes cycle through them unless set_task chooses")
        tasks_file = p("tasks_file", "task file (empty = the package's config/tasks.yaml)") or str(default_tasks_path())
        # Read at each tick: a new value applies to the running episode / the next pause.
        self.max_duration_s = p(
            "max_duration_s",
            "an episode ends after this long unless the operator ends it first",
            value_range=(0.1, 86400.0),
            on_change=assign(self, "max_duration_s"),
        )
        self.wait_for_recorder_s = p(
            "wait_for_recorder_s",
            "hold the first episode until the episode recorder reports ready, at most this long (0 = do not wait)",
            value_range=PAUSE_S,
        )
        self.reset_pause_s = p(
            "reset_pause_s",
            "seconds between an episode's end and the next start (scene reset)",
            value_range=PAUSE_S,
            on_change=assign(self, "reset_pause_s"),
        )
        specs = load_task_specs(tasks_file)
        unknown = [t for t in task_ids if t not in specs]
        if not task_ids or unknown:
            raise ValueError(
                f"parameter 'tasks': {task_ids} must be non-empty task ids of {tasks_file} (unknown: {unknown})"
            )
        self.tasks: dict[str, TaskSpec] = {t: specs[t] for t in task_ids}
        self._order = list(task_ids)
        self.episodes_started = 0
        self._episode: Optional[EpisodeStatus] = None  # the running episode's start event
        self.label_client = self.create_client(LabelEpisode, "label_episode")

    def configure(self) -> None:
        self._next_task: Optional[tuple[str, str]] = None  # chosen with set_task: (task id, instruction)
        self._episode = None
        self._started_at = 0.0
        self._steps = 0
        self._next_start_at = time.monotonic() + self.reset_pause_s
        self._recorder_gate = RecorderGate(self, self.wait_for_recorder_s)
        self._forward: Optional[tuple[LabelEpisode.Request, float]] = None
        self._forward_call = None
        self._retry_at = 0.0
        self.event_pub = self.managed_publisher(EpisodeStatus, "episode_event", _qos.EVENTS)
        self.managed_subscription(ExecutedStep, "executed_step", self._on_executed, _qos.CONTROL)
        self.managed_service(LabelEpisode, "end_episode", self._on_end_episode)
        self.managed_service(SetTask, "set_task", self._on_set_task)
        self.managed_timer(0.05, self._tick)
        self.get_logger().info(
            f"hardware episodes for {self.robot_id}: tasks {self._order}, at most {self.max_duration_s:g} s each"
        )

    def deactivate(self) -> None:
        if self._episode is not None:
            self.get_logger().info(f"episode {self._episode.episode_id} abandoned: the robot is stopping")
            self._episode = None

    # --- operator ---------------------------------------------------------------------------
    def _on_set_task(self, request: SetTask.Request, response: SetTask.Response) -> SetTask.Response:
        if request.task_id not in self.tasks:
            response.accepted, response.message = (
                False,
                f"unknown task {request.task_id!r}; this robot runs {sorted(self.tasks)}",
            )
            return response
        self._next_task = (request.task_id, request.instruction or self.tasks[request.task_id].instruction)
        response.accepted, response.message = True, f"{request.task_id} is the task of the next episode"
        self.get_logger().info(response.message)
        return response

    def _on_end_episode(self, request: LabelEpisode.Request, response: LabelEpisode.Response) -> LabelEpisode.Response:
        ep = self._episode
        if ep is None:
            response.accepted, response.message = False, "no episode is running"
            return response
        if request.episode_id and request.episode_id != ep.episode_id:
            response.accepted, response.message = (
                False,
                f"episode {request.episode_id} is not the running one ({ep.episode_id})",
            )
            return response
        outcome = EpisodeStatus.OUTCOME_SUCCESS if request.success else EpisodeStatus.OUTCOME_FAILURE
        self._end(outcome, f"operator ended it ({'success' if request.success else 'failure'})")
        self._forward = (
            LabelEpisode.Request(episode_id=ep.episode_id, success=bool(request.success)),
            time.monotonic() + _FORWARD_TIMEOUT_S,
        )
        response.accepted, response.episode_id, response.message = (
            True,
            ep.episode_id,
            "ended; the label goes to the recorder",
        )
        return response

    # --- episode loop -----------------------------------------------------------------------
    def _on_executed(self, msg: ExecutedStep) -> None:
        if self._episode is not None and msg.episode_id == self._episode.episode_id:
            self._steps = max(self._steps, msg.episode_step + 1)

    def _tick(self) -> None:
        now = time.monotonic()
        if self._episode is None and now >= self._next_start_at:
            if self.episodes_started or self._recorder_gate.is_open(now):
                self._start()
        elif self._episode is not None and now - self._started_at >= self.max_duration_s:
            self._end(
                EpisodeStatus.OUTCOME_UNLABELED, f"time limit {self.max_duration_s:g} s; label it with label_episode"
            )
        self._forward_label(now)

    def _start(self) -> None:
        task_id, instruction = self._next_task or (self._order[self.episodes_started % len(self._order)], "")
        self._next_task = None
        self.episodes_started += 1
        msg = EpisodeStatus(
            episode_id=str(uuid.uuid4()),
            robot_id=self.robot_id,
            task_id=task_id,
            instruction=instruction or self.tasks[task_id].instruction,
            step=0,
            outcome=EpisodeStatus.OUTCOME_RUNNING,
        )
        msg.header.stamp = time_msg(time.time_ns())
        self._episode, self._started_at, self._steps = msg, time.monotonic(), 0
        self.event_pub.publish(msg)
        self.get_logger().info(f"episode {msg.episode_id} started: {task_id}")

    def _end(self, outcome: int, why: str) -> None:
        ep = self._episode
        msg = EpisodeStatus(
            episode_id=ep.episode_id,
            robot_id=self.robot_id,
            task_id=ep.task_id,
            instruction=ep.instruction,
            step=self._steps,
            outcome=outcome,
        )
        msg.header.stamp = time_msg(time.time_ns())
        self.event_pub.publish(msg)
        self._episode = None
        self._next_start_at = time.monotonic() + self.reset_pause_s
        self.get_logger().info(f"episode {ep.episode_id} ended after {self._steps} steps: {why}")

    def _forward_label(self, now: float) -> None:
        """Hand the operator's label to the recorder; retried until it holds the episode (or a timeout)."""
        if self._forward is None:
            return
        request, deadline = self._forward
        call = self._forward_call
        if call is not None:
            if not call.done():
                return
            self._forward_call = None
            result = call.result()
            if result is not None and result.accepted:
                self.get_logger().info(
                    f"episode {request.episode_id} labelled {'success' if request.success else 'failure'}"
                )
                self._forward = None
                return
            self._retry_at = now + _FORWARD_RETRY_S
        if now >= deadline:
            self.get_logger().error(
                f"could not label episode {request.episode_id}: the recorder's label_episode did not accept it "
                f"within {_FORWARD_TIMEOUT_S:g} s; label it with label_episode"
            )
            self._forward = None
        elif now >= self._retry_at and self.label_client.service_is_ready():
            self._forward_call = self.label_client.call_async(request)


def main(args=None) -> int:
    return run_nodes([EpisodeManagerNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
