"""A simulated fleet of real robot nodes (separate processes) records complete, consistent episodes.

The fleet runs through the pip-only launcher from node_specs() (the same specs `ros2 launch` uses),
with a fixed random-weight VLA checkpoint, the scripted operator playing the human, short
episodes and 20 Hz pacing to stay cheap on a 2-core CI machine.
"""

import dataclasses
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ros_env, run_peer, start_peer

from sop_ros.core.episodes.episode import Actor
from sop_ros.core.episodes.episode_file import read_episode
from sop_ros.core.episodes.hashing import file_sha256
from sop_ros.fleet.description import parse_fleet
from sop_ros.fleet.launcher import FleetLauncher
from sop_ros.fleet.specs import node_specs, select_nodes

pytestmark = pytest.mark.timeout(300)

MAX_STEPS = 30
CHUNK = 4


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two tiny VLA checkpoints with different random weights (v1, v2)."""
    import torch

    from sop_ros.core.model import VLAPolicy, preset

    root = tmp_path_factory.mktemp("checkpoints")
    out = {}
    for version in (1, 2):
        torch.manual_seed(version)
        path = VLAPolicy(preset("tiny", chunk_size=CHUNK), device="cpu").save(root / f"v{version}.safetensors")
        out[version] = (str(path), file_sha256(path))
    return out


class Fleet:
    """node_specs() of a sim fleet with test overrides, run by FleetLauncher in a thread."""

    def __init__(self, tmp_path: Path, robots: list[dict], overrides: dict[str, dict]):
        self.tmp = tmp_path
        self.fleet = parse_fleet(
            {
                "fleet": "nodes_test",
                "state_dir": str(tmp_path / "state"),
                "learner": {"run_locally": False, "insecure": True},
                "robots": robots,
            }
        )
        specs = [
            dataclasses.replace(s, parameters={**s.parameters, **overrides.get(s.name, {})})
            for s in select_nodes(node_specs(self.fleet, with_learner=False), lambda s: s.name != "bridge")
        ]
        self.env = ros_env()
        self.log_path = tmp_path / "launch.log"
        self._log = open(self.log_path, "w")
        self.launcher = FleetLauncher(specs, out=self._log, env=self.env)
        self._thread = threading.Thread(target=self.launcher.run, daemon=True)
        self.topics_path = tmp_path / "topics.jsonl"
        self.recorder = start_peer(
            "robot_topic_recorder.py", str(self.topics_path), *[f"/{r['id']}" for r in robots], env=self.env
        )
        assert self.recorder.stdout.readline().strip() == "ready"
        self._thread.start()

    def spool(self, robot_id: str) -> list[Path]:
        root = self.fleet.spool_dir(self.fleet.robot(robot_id))
        return sorted(root.glob("*.mcap")) if root.exists() else []

    def wait_for_episodes(self, counts: dict[str, int], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(len(self.spool(r)) >= n for r, n in counts.items()):
                return
            assert self._thread.is_alive(), self.log()
            time.sleep(0.5)
        raise AssertionError(
            f"episodes not recorded in {timeout} s: { {r: len(self.spool(r)) for r in counts} }\n{self.log()[-6000:]}"
        )

    def topics(self) -> list[dict]:
        return [json.loads(line) for line in self.topics_path.read_text().splitlines() if line.strip()]

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def stop(self) -> None:
        self.launcher.request_stop()
        self._thread.join(timeout=60)
        self.recorder.send_signal(signal.SIGINT)
        try:
            self.recorder.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.recorder.kill()
        self._log.close()


def sim_overrides(checkpoint: tuple[str, str], **extra) -> dict[str, dict]:
    path, sha = checkpoint
    over = {
        "sim_robot": {"max_steps": MAX_STEPS, "seed": 7},
        "policy": {"checkpoint_path": path, "checkpoint_sha256": sha, "checkpoint_version": 1, "execute_horizon": 2},
        # A random policy stalls: the operator takes over after 5 steps and hands back after 4 expert steps
        # with progress.
        "scripted_operator": {"stall_steps": 5, "handback_progress_steps": 4},
    }
    for name, params in extra.items():
        over[name] = {**over.get(name, {}), **params}
    return over


def segments_from_messages(messages: list[dict], num_steps: int) -> list[tuple[int, int]]:
    """Human segments [start, end) of one episode as announced by InterventionState."""
    segments, start = [], None
    for m in sorted(messages, key=lambda m: m["stamp"]):
        if m["actor"] == Actor.HUMAN and start is None:
            start = m["episode_step"]
        elif m["actor"] == Actor.POLICY and start is not None:
            segments.append((start, m["episode_step"]))
            start = None
    if start is not None:
        segments.append((start, num_steps))
    return segments


def test_two_robot_sim_fleet_records_complete_episodes_matching_the_intervention_topic(tmp_path, checkpoints):
    robots = [
        {"id": "robot1", "backend": "sim", "tasks": ["push-v3"], "control_rate_hz": 20.0},
        {"id": "robot2", "backend": "sim", "tasks": ["button-press-topdown-v3", "push-v3"], "control_rate_hz": 20.0},
    ]
    fleet = Fleet(tmp_path, robots, sim_overrides(checkpoints[1], sim_robot={"max_episodes": 2}))
    try:
        fleet.wait_for_episodes({"robot1": 2, "robot2": 2}, timeout=200)
        time.sleep(0.5)  # the last InterventionState messages reach the topic recorder
    finally:
        fleet.stop()
    topics = fleet.topics()
    log = fleet.log()
    assert "Traceback" not in log, log[-5000:]
    interventions_seen = 0
    for robot in ("robot1", "robot2"):
        episodes = [read_episode(p) for p in fleet.spool(robot)]
        assert len(episodes) == 2
        for ep in episodes:
            ep.validate()
            assert ep.robot_id == robot
            t = ep.num_steps
            # Complete: the sim ended the episode at the step limit or on success, and every step is there.
            ends = [
                m
                for m in topics
                if m["topic"] == "episode_event" and m["episode_id"] == ep.episode_id and m["outcome"] != 0
            ]
            assert len(ends) == 1 and ends[0]["step"] == t and (t == MAX_STEPS or ep.success)
            assert ep.images.shape == (t, 64, 64, 3) and ep.images.dtype == np.uint8
            assert (
                ep.states.shape == (t, 4) and ep.actions.shape == (t, 4) and ep.proposed_chunks.shape == (t, CHUNK, 4)
            )
            assert ep.images.reshape(t, -1).std(axis=1).min() > 0  # rendered frames, not blank
            assert set(ep.actors.tolist()) <= {Actor.POLICY, Actor.HUMAN}
            assert (ep.policy_versions == 1).all()
            # Policy steps carry the proposed chunk whose first action was executed; human steps none.
            policy_steps = ep.actors == Actor.POLICY
            np.testing.assert_allclose(ep.proposed_chunks[policy_steps, 0], ep.actions[policy_steps], atol=1e-6)
            assert np.isnan(ep.proposed_chunks[~policy_steps]).all()
            # The executed steps on the topic are exactly the recorded ones.
            executed = sorted(
                (m for m in topics if m["topic"] == "executed_step" and m["episode_id"] == ep.episode_id),
                key=lambda m: m["episode_step"],
            )
            assert [m["episode_step"] for m in executed] == list(range(t))
            assert [m["actor"] for m in executed] == ep.actors.tolist()
            assert [m["stamp"] for m in executed] == ep.stamps_ns.tolist()
            # Intervention segments equal what InterventionState announced for this episode.
            changes = [m for m in topics if m["topic"] == "intervention_state" and m["episode_id"] == ep.episode_id]
            recorded = [(s.start_step, s.end_step) for s in ep.intervention_segments]
            assert recorded == segments_from_messages(changes, t)
            human_changes = [m for m in sorted(changes, key=lambda m: m["stamp"]) if m["actor"] == Actor.HUMAN]
            assert list(ep.intervention_reasons) == [m["reason"] for m in human_changes]
            interventions_seen += len(recorded)
    assert interventions_seen > 0, "the scripted operator never took over"


def test_policy_update_mid_episode_is_used_from_the_next_episode_and_a_bad_hash_is_refused(tmp_path, checkpoints):
    robots = [{"id": "robot1", "backend": "sim", "tasks": ["push-v3"], "control_rate_hz": 20.0}]
    fleet = Fleet(tmp_path, robots, sim_overrides(checkpoints[1]))
    try:
        # Announce v2 in the middle of an episode (after its step 3 was executed).
        path2, sha2 = checkpoints[2]
        announced = run_peer("policy_update_publisher.py", "/robot1", "2", path2, sha2, "3", env=fleet.env, timeout=150)
        assert announced.returncode == 0, announced.stdout + announced.stderr + fleet.log()[-3000:]
        announced_in = announced.stdout.split(" in episode ")[1].split()[0]
        first_v2 = None
        deadline = time.monotonic() + 120
        while first_v2 is None:
            assert time.monotonic() < deadline, fleet.log()[-5000:]
            for p in fleet.spool("robot1"):
                if (read_episode(p).policy_versions == 2).any():
                    first_v2 = p
                    break
            time.sleep(0.5)
        # A checkpoint whose bytes do not match the announced hash: refused, v2 keeps running.
        bad = tmp_path / "bad.safetensors"
        data = bytearray(Path(path2).read_bytes())
        data[-1] ^= 0xFF
        bad.write_bytes(bytes(data))
        refused = run_peer("policy_update_publisher.py", "/robot1", "3", str(bad), sha2, env=fleet.env)
        assert refused.returncode == 0
        refused_ns = int(refused.stdout.split(" at ")[1])
        n = len(fleet.spool("robot1"))
        fleet.wait_for_episodes({"robot1": n + 2}, timeout=90)
    finally:
        fleet.stop()
    log = fleet.log()
    assert "Traceback" not in log
    policy_lines = "\n".join(line for line in log.splitlines() if "policy" in line)  # what the node did with v3
    assert "refused PolicyUpdate v3" in log and "does not match the announced" in log and "keeping policy v2" in log, (
        policy_lines[-8000:]
    )
    episodes = sorted((read_episode(p) for p in fleet.spool("robot1")), key=lambda e: e.start_ns)
    versions = [set(e.policy_versions.tolist()) for e in episodes]
    assert all(len(v) == 1 for v in versions), f"a policy changed inside an episode: {versions}"
    versions = [v.pop() for v in versions]
    assert versions[0] == 1 and 2 in versions
    assert versions == sorted(versions), versions  # never back to an older policy
    # v2 was announced in the middle of an episode that kept running v1 to its end.
    (during,) = [e for e in episodes if e.episode_id == announced_in]
    assert (during.policy_versions == 1).all()
    # After the refused v3 the robot kept recording with v2.
    after = [e for e in episodes if e.stamps_ns[0] > refused_ns]
    assert after and all((e.policy_versions == 2).all() for e in after)


def test_policy_answers_a_resent_frame_again_so_a_lost_chunk_cannot_stall_the_arm(checkpoints):
    # Seen in the closed-loop test: the first chunk of an episode reached the mux just before the mux reset
    # for that episode and was dropped; the arm re-sent the frame after resend_after_s, and the policy,
    # having answered that stamp once, stayed silent: that robot never stepped again.
    path, sha = checkpoints[1]
    env = ros_env()
    policy = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sop_ros.nodes",
            "policy",
            "--ros-args",
            "-r",
            "__ns:=/probe",
            "-p",
            f"checkpoint_path:={path}",
            "-p",
            f"checkpoint_sha256:={sha}",
            "-p",
            "checkpoint_version:=1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        probe = run_peer("resend_probe.py", "/probe", env=env, timeout=120)
        lines = probe.stdout.split()
        assert probe.returncode == 0 and "done" in lines, probe.stdout + probe.stderr
        out = probe.stdout.splitlines()
        frame = next(line.split()[1] for line in out if line.startswith("frame "))
        resend = out.index("resend")
        before = [line for line in out[:resend] if line.startswith("chunk ")]
        after = [line for line in out[resend:] if line.startswith("chunk ")]
        assert before and all(line == f"chunk {frame}" for line in before), out
        assert after == [f"chunk {frame}"], out  # answered again, with the chunk for that frame
    finally:
        policy.send_signal(signal.SIGINT)
        try:
            policy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            policy.kill()
