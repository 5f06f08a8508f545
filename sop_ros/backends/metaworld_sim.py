"""MetaWorld v3 robot backend: a simulated xyz+gripper arm with one external camera.

Design choices (measured; see the module tests and the helper report):
- Camera: MetaWorld's `corner` viewpoint narrowed to a 20 degree vertical field of view. At the
  stock 45 degrees and 64x64 every goal/object position of reach/push/pick-place falls inside a
  ~15x16 px patch and the goal marker covers 3-5 px; at 20 degrees the same positions span
  ~35x35 px (all inside the frame with >= 8 px margin) and the goal marker covers ~15-25 px,
  so a 64x64 pixel policy can see where to go.
- Orientation: MetaWorld's corner cameras are defined with their up axis pointing down, so the
  raw image shows the table at the top. We rotate by 180 degrees (not a vertical flip, which
  would mirror the scene) whenever the camera's up axis points below the horizon.
- Fast offscreen rendering: shadows and reflections off, multisampling off (offsamples=0),
  MUJOCO_GL=egl unless set. We render with one mujoco.Renderer per environment; it makes its own
  GL context current on every render, so several tasks can live in one process.
- Policy state = end-effector xyz + gripper opening (obs[0:4]). The goal position is NOT given
  to the policy (a real robot does not know it); the goal must be seen in the image. The full
  39-d MetaWorld observation (object poses + goal) is exposed separately as `privileged_state()`
  for the scripted expert / operator only.
- Seeds: each episode's goal and object placement are drawn from the task's full random range
  with the environment's own generator seeded by the episode seed, so a seed fixes the scene.
- No wall-clock pacing here: the node paces; `measure_step_rate` measures raw speed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Optional

import numpy as np

# EGL must be chosen before mujoco is imported anywhere in the process.
os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402

from sop_ros.core.robot.backend import (  # noqa: E402
    SIM_ARM_JOINT_NAMES,
    CameraInfo,
    Observation,
    RobotBackend,
    StepResult,
    check_action,
)
from sop_ros.core.robot.tasks import TaskSpec  # noqa: E402

log = logging.getLogger(__name__)

# MetaWorld's scripted experts warn on every step whose proportional command exceeds [-1, 1], which the
# environment clips by design: noise on every console, one line per step per worker, and nothing to act on.
warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high", category=UserWarning)

PRIVILEGED_STATE_DIM = 39  # MetaWorld v3 goal-observable observation
_GOAL_SLICE = slice(36, 39)
_METAWORLD_PATH_LIMIT = 500  # MetaWorld refuses to step past this without a reset


@dataclasses.dataclass(frozen=True)
class SimCameraConfig:
    """Which MetaWorld camera renders the policy image, and at what size."""

    name: str = "corner"
    fovy_deg: float = 20.0  # vertical field of view; see the module docstring for why 20
    width: int = 64
    height: int = 64

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera width/height must be positive, got {self.width}x{self.height}")
        if not 1.0 <= self.fovy_deg <= 170.0:
            raise ValueError(f"camera fovy_deg must be in [1, 170], got {self.fovy_deg}")


@dataclasses.dataclass(frozen=True)
class MetaWorldSimConfig:
    tasks: Mapping[str, TaskSpec]
    camera: SimCameraConfig = SimCameraConfig()
    render: bool = True  # False: black images (state-only experiments and fast expert checks)


def available_tasks() -> tuple[str, ...]:
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    return tuple(ALL_V3_ENVIRONMENTS)


class _TaskEnv:
    """One MetaWorld environment (+ renderer + expert) for one task."""

    def __init__(self, task_id: str, camera: SimCameraConfig, render: bool):
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS
        from metaworld.policies import ENV_POLICY_MAP

        self.env = ALL_V3_ENVIRONMENTS[task_id]()
        # Goal-observable, per-episode random goals drawn from the env's seeded generator
        # (what metaworld's goal-observable env factory does, minus its global-RNG seeding).
        self.env._partially_observable = False
        self.env.__dict__.pop("sawyer_observation_space", None)  # cached with the goal zeroed out
        self.env._freeze_rand_vec = False
        self.env.seeded_rand_vec = True
        self.env._set_task_called = True
        self.expert = ENV_POLICY_MAP[task_id]()
        self.renderer: Optional[mujoco.Renderer] = None
        self.camera_id = mujoco.mj_name2id(self.env.model, mujoco.mjtObj.mjOBJ_CAMERA, camera.name)
        if self.camera_id < 0:
            raise ValueError(f"camera name '{camera.name}' does not exist in MetaWorld task '{task_id}'")
        self.env.model.cam_fovy[self.camera_id] = camera.fovy_deg
        self.rotate_180 = False
        if render:
            self.env.model.vis.quality.offsamples = 0  # before the GL context is created
            self.renderer = mujoco.Renderer(self.env.model, height=camera.height, width=camera.width)
            self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0

    def update_orientation(self) -> None:
        # Camera up axis (second column of its world rotation) pointing down -> image is upside down.
        up = self.env.data.cam_xmat[self.camera_id].reshape(3, 3)[:, 1]
        self.rotate_180 = bool(up[2] < 0)

    def render(self) -> np.ndarray:
        assert self.renderer is not None
        self.renderer.update_scene(self.env.data, camera=self.camera_id)
        img = self.renderer.render()
        if self.rotate_180:
            img = img[::-1, ::-1]
        return np.ascontiguousarray(img)

    def close(self) -> None:
        if self.renderer is not None:
            self.renderer.close()
            self.renderer = None
        self.env.close()


class MetaWorldSimBackend(RobotBackend):
    """Any task of a configured set; one MetaWorld env per task, created on first use and kept."""

    def __init__(self, config: MetaWorldSimConfig, clock: Callable[[], int] = time.time_ns):
        if not config.tasks:
            raise ValueError("MetaWorldSimConfig.tasks: at least one task is required")
        known = set(available_tasks())
        for task_id, spec in config.tasks.items():
            if task_id not in known:
                raise ValueError(f"task '{task_id}' is not a MetaWorld v3 environment (e.g. 'push-v3')")
            if spec.max_steps > _METAWORLD_PATH_LIMIT:
                raise ValueError(
                    f"task '{task_id}' max_steps {spec.max_steps} exceeds MetaWorld's limit {_METAWORLD_PATH_LIMIT}"
                )
        self._config = config
        self._clock = clock
        self._envs: dict[str, _TaskEnv] = {}
        self._current: Optional[_TaskEnv] = None
        self._spec: Optional[TaskSpec] = None
        self._raw_obs: Optional[np.ndarray] = None
        self._observation: Optional[Observation] = None
        self._steps = 0
        self._done = True
        self._initial_path = 1.0
        self._seed_rng = np.random.default_rng()
        self._black = np.zeros((config.camera.height, config.camera.width, 3), dtype=np.uint8)

    # --- RobotBackend ---------------------------------------------------------------------
    @property
    def action_dim(self) -> int:
        return 4

    @property
    def state_dim(self) -> int:
        return len(SIM_ARM_JOINT_NAMES)

    @property
    def joint_names(self) -> tuple[str, ...]:
        return SIM_ARM_JOINT_NAMES

    @property
    def camera_info(self) -> CameraInfo:
        cam = self._config.camera
        return CameraInfo.from_vertical_fov(cam.width, cam.height, cam.fovy_deg, frame_id="camera")

    @property
    def tasks(self) -> Mapping[str, TaskSpec]:
        return self._config.tasks

    def reset(self, task_id: str, seed: Optional[int] = None) -> Observation:
        if task_id not in self._config.tasks:
            raise ValueError(f"task_id '{task_id}' is not configured; configured: {sorted(self._config.tasks)}")
        if seed is None:
            seed = int(self._seed_rng.integers(0, 2**31 - 1))
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        task_env = self._envs.get(task_id)
        if task_env is None:
            task_env = self._envs[task_id] = _TaskEnv(task_id, self._config.camera, self._config.render)
        task_env.env.seed(int(seed))
        raw, _ = task_env.env.reset()
        task_env.update_orientation()
        self._current, self._spec = task_env, self._config.tasks[task_id]
        self._steps, self._done = 0, False
        self._set_observation(raw)
        self._initial_path = self._remaining_path(self._raw_obs)  # type: ignore[arg-type]
        return self._observation  # type: ignore[return-value]

    def step(self, action: np.ndarray) -> StepResult:
        if self._current is None or self._done:
            raise RuntimeError("step() called with no running episode: call reset() first")
        act = check_action(action, self.action_dim)
        raw, _reward, _terminated, _truncated, info = self._current.env.step(act)
        self._steps += 1
        self._set_observation(raw)
        success = bool(info["success"])
        truncated = not success and self._steps >= self._spec.max_steps  # type: ignore[union-attr]
        self._done = success or truncated
        return StepResult(self._observation, success, truncated)  # type: ignore[arg-type]

    def observation(self) -> Observation:
        if self._observation is None:
            raise RuntimeError("no observation yet: call reset() first")
        return self._observation

    def close(self) -> None:
        for task_env in self._envs.values():
            task_env.close()
        self._envs.clear()
        self._current = None

    # --- sim-only (privileged) ------------------------------------------------------------
    @property
    def task_id(self) -> Optional[str]:
        return self._spec.task_id if self._spec else None

    @property
    def steps_taken(self) -> int:
        return self._steps

    def privileged_state(self) -> np.ndarray:
        """Full 39-d MetaWorld observation (hand, gripper, object poses, goal). Operator/expert only."""
        if self._raw_obs is None:
            raise RuntimeError("no observation yet: call reset() first")
        return self._raw_obs.copy()

    def goal_position(self) -> np.ndarray:
        return self.privileged_state()[_GOAL_SLICE]

    def expert_action(self, privileged_state: Optional[np.ndarray] = None) -> np.ndarray:
        """The scripted MetaWorld expert's action for the current task, clipped to [-1, 1]."""
        if self._current is None:
            raise RuntimeError("no task running: call reset() first")
        obs = self.privileged_state() if privileged_state is None else np.asarray(privileged_state, dtype=np.float64)
        if obs.shape != (PRIVILEGED_STATE_DIM,):
            raise ValueError(f"privileged_state: shape {obs.shape}, expected ({PRIVILEGED_STATE_DIM},)")
        return np.clip(self._current.expert.get_action(obs), -1.0, 1.0).astype(np.float32)

    def progress(self) -> float:
        """Task progress from privileged state: 1 - remaining path length / path length at reset.

        The path is hand -> object -> goal (hand -> goal for reach tasks), so it rises while the
        hand approaches the object and while the object approaches the goal; 1.0 = on the goal.
        MetaWorld's shaped reward was tried first: it stays flat for the first 20-30 steps of
        expert push/pick-place episodes, which a stall rule would read as "stuck".
        """
        remaining = self._remaining_path(self.privileged_state())
        return 1.0 - remaining / max(self._initial_path, 1e-6)

    def _remaining_path(self, priv: np.ndarray) -> float:
        hand, obj, goal = priv[0:3], priv[4:7], priv[_GOAL_SLICE]
        if self._spec is not None and self._spec.task_id.startswith("reach"):
            return float(np.linalg.norm(goal - hand))
        return float(np.linalg.norm(obj - hand) + np.linalg.norm(goal - obj))

    def render(self) -> np.ndarray:
        """Render the current scene (upright RGB uint8 [H, W, 3])."""
        if self._current is None:
            raise RuntimeError("no task running: call reset() first")
        return self._current.render() if self._current.renderer is not None else self._black.copy()

    @property
    def mujoco_model(self) -> mujoco.MjModel:
        """The current task's MuJoCo model (diagnostics and tests)."""
        if self._current is None:
            raise RuntimeError("no task running: call reset() first")
        return self._current.env.model

    @property
    def mujoco_data(self) -> mujoco.MjData:
        if self._current is None:
            raise RuntimeError("no task running: call reset() first")
        return self._current.env.data

    @property
    def camera_id(self) -> int:
        if self._current is None:
            raise RuntimeError("no task running: call reset() first")
        return self._current.camera_id

    def _set_observation(self, raw: np.ndarray) -> None:
        self._raw_obs = np.asarray(raw, dtype=np.float64)
        image = self.render()
        state = self._raw_obs[: self.state_dim].astype(np.float32)
        self._observation = Observation(image=image, state=state, stamp_ns=int(self._clock()))


def measure_step_rate(backend: MetaWorldSimBackend, task_id: str, steps: int = 200, seed: int = 0) -> float:
    """Env steps per second (physics + render) under uniform random actions; resets when an episode ends."""
    rng = np.random.default_rng(seed)
    backend.reset(task_id, seed)
    start = time.perf_counter()
    for _ in range(steps):
        if backend.step(rng.uniform(-1, 1, backend.action_dim).astype(np.float32)).done:
            backend.reset(task_id, int(rng.integers(0, 2**31 - 1)))
    return steps / (time.perf_counter() - start)


class ExpertPolicy:
    """The scripted MetaWorld expert behind the evaluation Policy protocol (chunk of one action).

    It reads the backend's privileged state, so it only works in simulation; it stands in for
    the human teleoperator in demos and for an upper bound in evaluation.
    """

    def __init__(self, backend: MetaWorldSimBackend, action_noise_std: float = 0.0, seed: int = 0):
        if action_noise_std < 0:
            raise ValueError(f"action_noise_std: must be >= 0, got {action_noise_std}")
        self.backend = backend
        self.action_noise_std = action_noise_std
        self._rng = np.random.default_rng(seed)

    def act(
        self, observation: Mapping[str, np.ndarray], instruction: str, indicator: Optional[int] = None
    ) -> np.ndarray:
        action = self.backend.expert_action()
        if self.action_noise_std:
            action = np.clip(action + self._rng.normal(0.0, self.action_noise_std, action.shape), -1.0, 1.0)
        return action.astype(np.float32)[None]


def expert_policy_factory(backend: MetaWorldSimBackend) -> ExpertPolicy:
    return ExpertPolicy(backend)


def make_backend(
    tasks: Mapping[str, TaskSpec], camera: SimCameraConfig = SimCameraConfig(), render: bool = True
) -> MetaWorldSimBackend:
    """Picklable env factory for evaluation workers: functools.partial(make_backend, tasks, ...)."""
    return MetaWorldSimBackend(MetaWorldSimConfig(dict(tasks), camera, render))
