"""ROS-free logic behind the robot nodes: mux, teleop, arm goals, chunk execution, swaps, assembly."""

import uuid

import numpy as np
import pytest

from sop_ros.core.episodes.assembly import EpisodeAssembler, ExecutedStepRecord, IncompleteEpisode
from sop_ros.core.episodes.episode import Actor, LabelSource
from sop_ros.core.robot.action_mux import ActionMux, HumanInput, MuxConfig
from sop_ros.core.robot.arm_command import ArmCommandCodec, GoalDeduplicator
from sop_ros.core.robot.policy_runner import ChunkExecutor, LoadedPolicy, PolicySlot
from sop_ros.core.robot.teleop import JoyMapping, TeleopState

pytestmark = pytest.mark.timeout(30)
MS = 1_000_000
A = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
H = np.array([-1.0, 0.0, 0.5, 1.0], np.float32)


def test_mux_runs_the_policy_until_a_fresh_human_command_then_waits_for_the_human_and_never_repeats_it():
    mux = ActionMux(MuxConfig(human_timeout_s=0.25))
    mux.start_episode(50)
    assert mux.propose(100, A)
    ex = mux.poll(0)
    assert ex.actor == Actor.POLICY and not ex.changed and np.allclose(ex.action, A)
    assert not mux.propose(100, A)  # the same tick again is a duplicate
    mux.human(HumanInput(H, stamp_ns=150, received_ns=10 * MS, reason="deadman pressed"))
    mux.propose(200, A)
    ex = mux.poll(20 * MS)
    assert ex.actor == Actor.HUMAN and ex.changed and ex.reason == "deadman pressed" and np.allclose(ex.action, H)
    # Next tick: the human is still in control but sent nothing new -> wait, do not repeat H.
    mux.propose(300, A)
    assert mux.poll(100 * MS) is None
    # Silent past the timeout -> the policy's proposal runs, control changes back.
    ex = mux.poll(300 * MS)
    assert ex.actor == Actor.POLICY and ex.changed and ex.reason == "human silent" and np.allclose(ex.action, A)


def test_mux_ignores_a_human_command_produced_before_the_last_executed_tick():
    mux = ActionMux(MuxConfig(human_timeout_s=0.25))
    mux.start_episode(50)
    mux.propose(100, A)
    mux.poll(0)
    mux.human(HumanInput(H, stamp_ns=100, received_ns=1 * MS))  # answers tick 100, which already ran
    mux.propose(200, A)
    assert mux.poll(2 * MS) is None  # human still counts as active: wait
    assert mux.poll(400 * MS).actor == Actor.POLICY


def test_mux_executes_only_inside_an_episode_and_never_a_tick_from_before_its_start():
    mux = ActionMux(MuxConfig(human_timeout_s=0.25))
    assert mux.propose(100, A) and mux.poll(0) is None  # no episode yet: held, not executed
    mux.start_episode(100)  # the start event came after the proposal for its first frame
    assert mux.poll(1 * MS).tick_stamp_ns == 100
    mux.propose(200, A)
    mux.end_episode()  # the end: a proposal still pending is dropped, later ones are not executed
    assert mux.poll(2 * MS) is None
    mux.propose(300, A)  # a policy that has not heard of the end yet
    mux.human(HumanInput(H, stamp_ns=310, received_ns=3 * MS))
    assert mux.poll(4 * MS) is None
    mux.start_episode(400)  # tick 300 was taken before this episode started: never executed
    assert mux.poll(5 * MS) is None and mux.actor == Actor.POLICY
    assert not mux.propose(350, A)
    assert mux.propose(400, A) and mux.poll(6 * MS).tick_stamp_ns == 400


def test_teleop_deadman_and_silence_timeout_and_no_repeated_reading():
    state = TeleopState(
        JoyMapping(deadman_button=4, axis_map=(1, 0, -1, -1), axis_scale=(1.0, -1.0, 1.0, 1.0), gripper_close_button=0),
        joy_timeout_s=0.5,
    )
    axes = [0.5, 0.8, 0.0, 0.0, 0.0]
    state.on_joy(axes, [0, 0, 0, 0, 1], stamp_ns=1, received_ns=0)
    cmd = state.command(10 * MS)
    assert cmd is not None and state.active and cmd.reason == "deadman pressed"
    np.testing.assert_allclose(cmd.action, [0.8, -0.5, 0.0, -1.0])
    assert state.command(20 * MS) is None and state.active  # no new reading: nothing repeated
    state.on_joy(axes, [1, 0, 0, 0, 1], stamp_ns=2, received_ns=30 * MS)
    assert state.command(40 * MS).action[-1] == 1.0
    state.on_joy(axes, [0, 0, 0, 0, 0], stamp_ns=3, received_ns=50 * MS)
    assert state.command(60 * MS) is None and not state.active and state.last_change_reason == "deadman released"
    state.on_joy(axes, [0, 0, 0, 0, 1], stamp_ns=4, received_ns=70 * MS)
    assert state.command(80 * MS) is not None
    assert state.command(700 * MS) is None and state.last_change_reason == "teleop silent"


def test_joy_mapping_rejects_inconsistent_configuration():
    with pytest.raises(ValueError, match="axis_scale"):
        JoyMapping(axis_map=(0, 1), axis_scale=(1.0,))
    with pytest.raises(ValueError, match="deadman_button"):
        JoyMapping(deadman_button=-1)


def test_arm_goal_round_trips_the_action_and_identical_goals_are_not_resent():
    codec = ArmCommandCodec(("x_joint", "y_joint", "z_joint", "gripper_joint"), 0.01, 0.1)
    state = np.array([0.1, 0.6, 0.2, 0.9], np.float32)
    goal = codec.encode(state, A)
    np.testing.assert_allclose(goal.positions[:3], state[:3] + A[:3] * 0.01, atol=1e-7)
    np.testing.assert_allclose(codec.decode(state, goal.joint_names, goal.positions), A, atol=1e-5)
    with pytest.raises(ValueError, match="joint names"):
        codec.decode(state, ("a", "b", "c", "d"), goal.positions)
    dedup = GoalDeduplicator()
    assert dedup.is_new(goal) and not dedup.is_new(codec.encode(state, A)) and dedup.is_new(codec.encode(state, H))


class _CountingPolicy:
    def __init__(self):
        self.calls = 0

    def act(self, observation, instruction, indicator=None):
        self.calls += 1
        return np.arange(12, dtype=np.float32).reshape(3, 4) + 100 * self.calls


def test_chunk_executor_runs_the_model_every_horizon_steps_and_pads_the_rest_of_the_chunk():
    policy = _CountingPolicy()
    loaded = LoadedPolicy(7, policy, "h", 3, 4)
    ex = ChunkExecutor(execute_horizon=2)
    first = ex.step(loaded, {}, "x")
    second = ex.step(loaded, {}, "x")
    third = ex.step(loaded, {}, "x")
    assert policy.calls == 2 and first.policy_version == 7
    np.testing.assert_array_equal(second.action, [104, 105, 106, 107])
    np.testing.assert_array_equal(second.chunk[1:], np.tile([[108, 109, 110, 111]], (2, 1)))
    np.testing.assert_array_equal(third.action, [200, 201, 202, 203])
    assert first.inference_ms >= 0 and second.inference_ms == 0


def test_policy_slot_swaps_only_at_an_episode_boundary_and_never_downgrades():
    slot = PolicySlot()
    v = {n: LoadedPolicy(n, None, str(n), 4, 4) for n in (1, 2, 3)}
    assert slot.offer(v[1], running_episode=True)  # nothing running yet: use it now
    assert not slot.offer(v[2], running_episode=True) and slot.current.version == 1 and slot.waiting_version == 2
    assert slot.at_episode_boundary() == 2 and slot.current.version == 2
    assert slot.at_episode_boundary() is None
    assert not slot.offer(v[1], running_episode=False) and slot.current.version == 2
    assert slot.offer(v[3], running_episode=False) and slot.current.version == 3


def test_assembler_joins_streams_by_stamp_and_refuses_an_episode_with_a_missing_frame():
    asm = EpisodeAssembler("robot1", (2, 4))
    eid = str(uuid.uuid4())
    asm.start(eid, "push-v3", "push", start_ns=5)
    for i, stamp in enumerate((10, 20, 30)):
        asm.observation(stamp, image=np.full((8, 8, 3), i, np.uint8), state=np.full(4, i, np.float32))
        asm.proposal(stamp, np.full((2, 4), i, np.float32))
        actor = Actor.HUMAN if i == 1 else Actor.POLICY
        assert asm.executed(eid, ExecutedStepRecord(stamp, i, actor, 3, np.full(4, i, np.float32)))
    asm.control_change(20, "no progress")
    assert not asm.executed("other", ExecutedStepRecord(40, 3, Actor.POLICY, 3, A))
    ep = asm.finish(eid, True, LabelSource.ENVIRONMENT, end_ns=40)
    assert ep.num_steps == 3 and ep.actors.tolist() == [0, 1, 0] and ep.intervention_reasons == ("no progress",)
    assert [(s.start_step, s.end_step) for s in ep.intervention_segments] == [(1, 2)]
    assert (
        np.isnan(ep.proposed_chunks[1]).all() and (ep.proposed_chunks[2] == 2).all() and (ep.policy_versions == 3).all()
    )
    eid2 = str(uuid.uuid4())
    asm.start(eid2, "push-v3", "push", start_ns=50)
    asm.observation(60, state=np.zeros(4, np.float32))  # the frame was lost
    asm.executed(eid2, ExecutedStepRecord(60, 0, Actor.POLICY, 3, A))
    with pytest.raises(IncompleteEpisode, match="step 0 has no image"):
        asm.finish(eid2, False, LabelSource.ENVIRONMENT, end_ns=70)


def test_assembler_pairs_hardware_frames_with_the_nearest_joint_state_within_the_age_limit():
    asm = EpisodeAssembler("robot1", (2, 4), max_state_age_ns=5_000_000)
    eid = str(uuid.uuid4())
    asm.start(eid, "push-v3", "push", start_ns=0)
    # camera and arm stamp independently: states arrive 2 ms after each frame
    for i, frame in enumerate((100_000_000, 200_000_000)):
        asm.observation(frame, image=np.full((8, 8, 3), i, np.uint8))
        asm.observation(frame + 2_000_000, state=np.full(4, i, np.float32))
        asm.executed(eid, ExecutedStepRecord(frame, i, Actor.POLICY, 1, np.full(4, i, np.float32)))
    ep = asm.finish(eid, None, LabelSource.NONE, end_ns=300_000_000)
    assert ep.states[:, 0].tolist() == [0.0, 1.0]
    eid2 = str(uuid.uuid4())
    asm.start(eid2, "push-v3", "push", start_ns=0)
    asm.observation(400_000_000, image=np.zeros((8, 8, 3), np.uint8))
    asm.observation(420_000_000, state=np.zeros(4, np.float32))  # 20 ms away: too old to pair
    asm.executed(eid2, ExecutedStepRecord(400_000_000, 0, Actor.POLICY, 1, A))
    with pytest.raises(IncompleteEpisode, match="step 0 has no state"):
        asm.finish(eid2, None, LabelSource.NONE, end_ns=500_000_000)
