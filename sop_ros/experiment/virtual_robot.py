"""One simulated robot on the virtual clock: what sim_robot, policy, scripted_operator, action_mux and
episode_recorder do together, built from the core objects those nodes wrap (no copies of their rules).

Per control tick (one call of `tick(now_ns)`, one control period of simulated time):
- between episodes: once the reset pause is over, reset the MetaWorld backend to the next task
  (tasks cycle in order, as sim_robot's) on the scene seed of (run seed, robot index, episode index)
  and announce the start to every part (chunk executor, operator, mux, assembler), as the
  RUNNING episode event does;
- in an episode: for an observation not judged yet, the policy proposes (ChunkExecutor: a forward
  pass every execute_horizon steps) and the operator decides (RecoveringOperator, on the simulator's
  privileged state); both reach the ActionMux, whose poll decides who acts. While the human holds
  control but sent nothing (just handed back), the mux waits for human_timeout_s and the arm waits
  with it, tick by tick. The executed action goes through the arm command codec both ways (mux goal
  -> sim decode) and steps the backend; the new observation is stamped with the tick's time.
- at the end (success or step limit): the mux stops, the PolicySlot swaps in a waiting checkpoint,
  the EpisodeAssembler closes the episode and the Spool writes it durably (the recorder's path).

Observations answer at the next tick, as on the real robot (an observation is published at a tick,
the goal for it arrives within the period, the arm steps at the following tick). One difference, on
purpose: the operator compares the expert with the policy's proposal for the same observation; the
node may see the previous one when the chunk arrives after the privileged state (a race).
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from pathlib import Path
from typing import Optional

import numpy as np

from sop_ros.backends.metaworld_sim import MetaWorldSimBackend, MetaWorldSimConfig, SimCameraConfig
from sop_ros.core.episodes.assembly import EpisodeAssembler, ExecutedStepRecord
from sop_ros.core.episodes.episode import LabelSource
from sop_ros.core.robot.action_mux import ActionMux, Execution, HumanInput, MuxConfig
from sop_ros.core.robot.arm_command import ArmCommandCodec
from sop_ros.core.robot.backend import Observation
from sop_ros.core.robot.operator import OperatorRuleConfig
from sop_ros.core.robot.operator_recovery import RecoveringOperator
from sop_ros.core.robot.policy_runner import ChunkExecutor, LoadedPolicy, PolicySlot
from sop_ros.core.robot.tasks import TaskSpec
from sop_ros.core.storage.spool import Spool, SpoolEntry
from sop_ros.experiment.fleet_run import online_seed
from sop_ros.resources import robot_spool_max_bytes


def episode_uuid(run_seed: int, robot_index: int, episode_index: int) -> str:
    """A UUID4-shaped episode id derived from (run seed, robot, episode): the same run names its episodes the same."""
    digest = hashlib.sha256(f"sop-virtual-episode:{run_seed}:{robot_index}:{episode_index}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


@dataclasses.dataclass(frozen=True)
class VirtualRobotConfig:
    robot_id: str
    robot_index: int  # 0-based position in the fleet: scene seeds and episode ids derive from it
    run_seed: int
    tasks: tuple[TaskSpec, ...]  # episodes cycle through them in order
    period_ns: int  # one control period (1 / control_rate_hz)
    reset_pause_ns: int  # between an episode's end and the next reset
    execute_horizon: int
    indicator: str  # RECAP advantage indicator at inference ("" = none), as the policy node's parameter
    operator: OperatorRuleConfig
    mux: MuxConfig
    position_scale: float
    camera: SimCameraConfig

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("VirtualRobotConfig.tasks: at least one task is required")
        if self.period_ns <= 0 or self.reset_pause_ns < 0:
            raise ValueError(
                f"period_ns must be positive and reset_pause_ns >= 0, got {self.period_ns}, {self.reset_pause_ns}"
            )


@dataclasses.dataclass(frozen=True)
class RobotTotals:
    """What one robot did in a run (finished episodes only)."""

    robot_id: str
    episodes: int = 0
    successes: int = 0
    steps: int = 0
    human_steps: int = 0


@dataclasses.dataclass
class _Running:
    """The episode in progress."""

    episode_id: str
    task: TaskSpec
    observation: Observation  # the latest one; its action is decided at the next tick
    step: int = 0
    judged: bool = False  # the policy and the operator have answered this observation


class VirtualRobot:
    """One robot's parts, advanced one control tick at a time by the virtual clock."""

    def __init__(self, config: VirtualRobotConfig, spool_dir: Path, chunk_shape: tuple[int, int]):
        self.config = config
        self._now_ns = 0
        tasks = {t.task_id: t for t in config.tasks}
        # The backend stamps observations with simulated time, never the wall clock.
        self.backend = MetaWorldSimBackend(MetaWorldSimConfig(tasks, config.camera), clock=lambda: self._now_ns)
        self.codec = ArmCommandCodec(self.backend.joint_names, config.position_scale, config.period_ns / 1e9)
        self.executor = ChunkExecutor(config.execute_horizon, config.indicator or None)
        self.slot = PolicySlot()
        self.operator = RecoveringOperator(config.operator)
        self.mux = ActionMux(config.mux)
        self.assembler = EpisodeAssembler(config.robot_id, chunk_shape)
        self.spool = Spool(spool_dir, robot_spool_max_bytes())
        self.totals = RobotTotals(config.robot_id)
        self.episodes_started = 0
        self._episode: Optional[_Running] = None
        self._next_reset_ns = 0
        self._operator_reason = ""
        self._policy_version = 0

    @property
    def running_episode(self) -> bool:
        return self._episode is not None

    def offer(self, loaded: LoadedPolicy) -> bool:
        """A verified, loaded checkpoint reached this robot: used now between episodes, else at the next boundary."""
        return self.slot.offer(loaded, running_episode=self.running_episode)

    def tick(self, now_ns: int) -> Optional[SpoolEntry]:
        """Advance one control period starting at now_ns; returns the spooled episode when one ended."""
        self._now_ns = now_ns
        episode = self._episode
        if episode is None:
            if now_ns >= self._next_reset_ns:
                self._start_episode()
            return None
        if self.slot.current is None:
            raise RuntimeError(f"{self.config.robot_id}: no policy loaded (the run needs a start checkpoint)")
        if not episode.judged:
            self._judge(episode)
        execution = self.mux.poll(now_ns)
        if execution is None:
            return None  # the human holds control and sent nothing for this observation: the arm waits
        return self._execute(episode, execution)

    def close(self) -> None:
        self.backend.close()

    # --- episode boundaries -------------------------------------------------------------------
    def _start_episode(self) -> None:
        cfg = self.config
        index = self.episodes_started
        task = cfg.tasks[index % len(cfg.tasks)]
        observation = self.backend.reset(task.task_id, online_seed(cfg.run_seed, cfg.robot_index) + index)
        self.episodes_started += 1
        episode_id = episode_uuid(cfg.run_seed, cfg.robot_index, index)
        self._episode = _Running(episode_id, task, observation)
        # The RUNNING episode event, as each node handles it.
        self.executor.reset()
        self.operator.reset()
        self._operator_reason = ""
        self.mux.start_episode(observation.stamp_ns)
        self.assembler.start(episode_id, task.task_id, task.instruction, observation.stamp_ns)
        self.assembler.observation(observation.stamp_ns, observation.image, observation.state)

    def _end_episode(self, episode: _Running, success: bool, end_ns: int) -> SpoolEntry:
        self._episode = None
        self.mux.end_episode()
        self.slot.at_episode_boundary()
        closed = self.assembler.finish(episode.episode_id, success, LabelSource.ENVIRONMENT, end_ns)
        entry = self.spool.write(closed)
        t = self.totals
        self.totals = dataclasses.replace(
            t,
            episodes=t.episodes + 1,
            successes=t.successes + int(success),
            steps=t.steps + closed.num_steps,
            human_steps=t.human_steps + closed.human_step_count,
        )
        self._next_reset_ns = self._now_ns + self.config.reset_pause_ns
        return entry

    # --- one control step ---------------------------------------------------------------------
    def _judge(self, episode: _Running) -> None:
        """The policy's proposal and the operator's decision for the current observation (both reach the mux)."""
        obs, loaded = episode.observation, self.slot.current
        assert loaded is not None
        proposal = self.executor.step(loaded, obs.as_policy_input(), episode.task.instruction)
        self._policy_version = proposal.policy_version
        self.mux.propose(obs.stamp_ns, proposal.action)
        self.assembler.proposal(obs.stamp_ns, proposal.chunk)
        command = self.operator.decide(
            float(self.backend.progress()),
            proposal.action,
            self.backend.expert_action(),
            obs.state,  # the arm's joint state, as the operator node reads it from joint_states
        )
        if command.decision.changed:
            self._operator_reason = command.decision.reason
        if command.action is not None:
            self.mux.human(HumanInput(command.action, obs.stamp_ns, self._now_ns, self._operator_reason))
        episode.judged = True

    def _execute(self, episode: _Running, execution: Execution) -> Optional[SpoolEntry]:
        obs = episode.observation
        if execution.changed:
            self.assembler.control_change(execution.tick_stamp_ns, execution.reason)
        record = ExecutedStepRecord(
            execution.tick_stamp_ns, episode.step, execution.actor, self._policy_version, execution.action
        )
        self.assembler.executed(episode.episode_id, record)
        # The mux sends a position goal; the arm turns it back into the action it steps with.
        goal = self.codec.encode(np.asarray(obs.state, dtype=np.float64), execution.action)
        action = self.codec.decode(obs.state, self.backend.joint_names, goal.positions)
        result = self.backend.step(action)
        episode.step += 1
        episode.observation, episode.judged = result.observation, False
        if result.done:
            return self._end_episode(episode, result.success, result.observation.stamp_ns)
        self.assembler.observation(result.observation.stamp_ns, result.observation.image, result.observation.state)
        return None
