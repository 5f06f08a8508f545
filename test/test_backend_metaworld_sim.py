"""MetaWorld sim backend with real MetaWorld environments and real offscreen rendering."""

from __future__ import annotations

import numpy as np
import pytest

from sop_ros.backends.metaworld_sim import MetaWorldSimBackend, MetaWorldSimConfig, SimCameraConfig, measure_step_rate
from sop_ros.core.robot.backend import SIM_ARM_JOINT_NAMES
from sop_ros.core.robot.tasks import TaskConfigError, TaskSpec, load_task_specs
from sop_ros.resources import default_tasks_path

pytestmark = pytest.mark.timeout(120)

TASKS = load_task_specs(default_tasks_path())


@pytest.fixture(scope="module")
def backend():
    b = MetaWorldSimBackend(MetaWorldSimConfig(TASKS))
    yield b
    b.close()


def _goal_marker_centroid(b: MetaWorldSimBackend) -> tuple[np.ndarray, int]:
    """(row, col) centroid and pixel count of the goal marker, found by rendering with it hidden."""
    import mujoco

    sid = mujoco.mj_name2id(b.mujoco_model, mujoco.mjtObj.mjOBJ_SITE, "goal")
    shown = b.render().astype(int)
    rgba = b.mujoco_model.site_rgba[sid].copy()
    b.mujoco_model.site_rgba[sid, 3] = 0.0
    try:
        hidden = b.render().astype(int)
    finally:
        b.mujoco_model.site_rgba[sid] = rgba
    rows, cols = np.nonzero(np.abs(shown - hidden).sum(-1) > 0)
    return np.array([rows.mean(), cols.mean()]) if rows.size else np.full(2, np.nan), int(rows.size)


def _move_goal_marker(b: MetaWorldSimBackend, delta: np.ndarray) -> None:
    import mujoco

    sid = mujoco.mj_name2id(b.mujoco_model, mujoco.mjtObj.mjOBJ_SITE, "goal")
    b.mujoco_data.site_xpos[sid] += delta


def test_task_file_is_valid_and_names_metaworld_tasks():
    assert len(TASKS) == 3
    for spec in TASKS.values():
        assert spec.instruction and 0 < spec.max_steps <= 500


def test_task_file_errors_name_the_field(tmp_path):
    bad = tmp_path / "tasks.yaml"
    bad.write_text("tasks:\n  push-v3:\n    instruction: push\n    max_steps: 0\n")
    with pytest.raises(TaskConfigError, match="max_steps"):
        load_task_specs(bad)
    bad.write_text("tasks:\n  push-v3:\n    instruction: push\n    max_step: 10\n")
    with pytest.raises(TaskConfigError, match="unknown fields"):
        load_task_specs(bad)
    with pytest.raises(ValueError, match="not a MetaWorld"):
        MetaWorldSimBackend(MetaWorldSimConfig({"nope-v3": TaskSpec("nope-v3", "x", 10)}))


def test_observation_contract(backend):
    obs = backend.reset("push-v3", seed=3)
    assert obs.image.dtype == np.uint8 and obs.image.shape == (64, 64, 3)
    assert obs.state.dtype == np.float32 and obs.state.shape == (backend.state_dim,)
    assert backend.joint_names == SIM_ARM_JOINT_NAMES and backend.state_dim == len(SIM_ARM_JOINT_NAMES)
    # Policy state = hand xyz + gripper; the goal is only in the privileged state.
    priv = backend.privileged_state()
    np.testing.assert_allclose(obs.state, priv[:4].astype(np.float32))
    assert np.linalg.norm(backend.goal_position()) > 0.1
    info = backend.camera_info
    assert (info.width, info.height) == (64, 64) and info.fx > 0
    # The image is a real render, not a blank frame.
    assert obs.image.std() > 10


def test_frames_are_upright_and_not_mirrored(backend):
    """Moving the goal marker up in the world moves it up in the image; moving it to the camera's
    right (view direction x world-up) moves it right. Catches both the upside-down and mirrored frames."""
    backend.reset("push-v3", seed=0)
    c0, n0 = _goal_marker_centroid(backend)
    assert n0 > 0, "goal marker not visible"
    _move_goal_marker(backend, np.array([0.0, 0.0, 0.05]))
    c_up, _ = _goal_marker_centroid(backend)
    assert c_up[0] < c0[0] - 2, f"world up moved the marker from row {c0[0]:.1f} to {c_up[0]:.1f}"

    backend.reset("push-v3", seed=0)
    view_dir = -backend.mujoco_data.cam_xmat[backend.camera_id].reshape(3, 3)[:, 2]
    right = np.cross(view_dir, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    _move_goal_marker(backend, 0.05 * right)
    c_right, _ = _goal_marker_centroid(backend)
    assert c_right[1] > c0[1] + 2, f"camera-right moved the marker from col {c0[1]:.1f} to {c_right[1]:.1f}"


@pytest.mark.parametrize("task_id", ["push-v3", "pick-place-v3"])
def test_goal_is_visible_at_policy_resolution(backend, task_id):
    for seed in range(4):
        backend.reset(task_id, seed=seed)
        centroid, pixels = _goal_marker_centroid(backend)
        assert pixels >= 8, f"{task_id} seed {seed}: goal marker covers only {pixels} px"
        assert np.all((centroid > 4) & (centroid < 60)), f"goal marker near the border at {centroid}"


def test_seeds_are_reproducible_and_vary_the_scene(backend):
    a = backend.reset("pick-place-v3", seed=11)
    priv_a = backend.privileged_state()
    backend.reset("push-v3", seed=11)  # another task in between must not disturb it
    b = backend.reset("pick-place-v3", seed=11)
    np.testing.assert_array_equal(priv_a, backend.privileged_state())
    np.testing.assert_array_equal(a.image, b.image)
    goals = set()
    for seed in range(5):
        backend.reset("pick-place-v3", seed=seed)
        goals.add(tuple(np.round(backend.goal_position(), 4)))
    assert len(goals) == 5


def test_truncation_and_step_errors():
    b = MetaWorldSimBackend(MetaWorldSimConfig({"push-v3": TaskSpec("push-v3", "push", 5)}, render=False))
    try:
        with pytest.raises(RuntimeError, match="reset"):
            b.step(np.zeros(4, np.float32))
        b.reset("push-v3", seed=1)
        with pytest.raises(ValueError, match="shape"):
            b.step(np.zeros(3, np.float32))
        with pytest.raises(ValueError, match="NaN"):
            b.step(np.array([0, 0, np.nan, 0], np.float32))
        results = [b.step(np.zeros(4, np.float32)) for _ in range(5)]
        assert [r.truncated for r in results] == [False] * 4 + [True]
        assert results[-1].done and not results[-1].success
        with pytest.raises(RuntimeError, match="reset"):
            b.step(np.zeros(4, np.float32))
        with pytest.raises(ValueError, match="not configured"):
            b.reset("reach-v3", seed=0)
    finally:
        b.close()


@pytest.mark.parametrize("task_id", list(TASKS))
def test_expert_solves_task(task_id):
    b = MetaWorldSimBackend(MetaWorldSimConfig(TASKS, render=False))
    try:
        for seed in (100, 101):
            b.reset(task_id, seed=seed)
            progress = []
            while True:
                result = b.step(b.expert_action())
                progress.append(b.progress())
                if result.done:
                    break
            assert result.success, f"expert failed {task_id} seed {seed} after {b.steps_taken} steps"
            assert b.steps_taken < TASKS[task_id].max_steps
            assert progress[-1] > progress[0], "progress measure did not increase over a successful episode"
    finally:
        b.close()


def test_step_rate_measurement(backend):
    rate = measure_step_rate(backend, "push-v3", steps=30)
    assert rate > 1.0


def test_camera_config_validation():
    with pytest.raises(ValueError, match="width"):
        SimCameraConfig(width=0)
    with pytest.raises(ValueError, match="camera name"):
        b = MetaWorldSimBackend(MetaWorldSimConfig(TASKS, camera=SimCameraConfig(name="nope")))
        b.reset("push-v3", 0)
