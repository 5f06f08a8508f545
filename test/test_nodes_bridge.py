"""The bridge node against a real learner on loopback (TLS + bearer token from `sop certs`).

The bridge runs as its own process, started by the pip-only launcher from node_specs() (the
parameters the fleet description gives it). It must drain the spool into the learner's store
(deleting only acknowledged episodes), announce every verified checkpoint on policy_update,
register with the learner, and come back after a restart with its cached checkpoint even when
the learner is gone.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import LaunchedGroup, ros_env, start_peer, wait_for
from test_link_support import make_episode, running_learner

from sop_ros.core.episodes.hashing import file_sha256
from sop_ros.core.storage.spool import Spool
from sop_ros.fleet.description import parse_fleet
from sop_ros.fleet.specs import NodeSpec, node_specs, select_nodes
from sop_ros.link.certs import init_credentials
from sop_ros.link.channel import LinkClient, LinkClientConfig
from sop_ros.link.protos import fleet_pb2
from sop_ros.link.uploader import MAX_IN_FLIGHT
from sop_ros.msg import EpisodeStatus

pytestmark = pytest.mark.timeout(240)


class BridgeProcess(LaunchedGroup):
    """The fleet's bridge spec for one robot, run by FleetLauncher in a thread."""

    def __init__(self, tmp: Path, fleet, topics: Path, env: dict):
        (spec,) = select_nodes(node_specs(fleet, with_learner=False), lambda s: s.name == "bridge")
        self.spec = dataclasses.replace(spec, parameters={**spec.parameters, "status_period_s": 0.5})
        super().__init__([self.spec], tmp / f"bridge-{time.monotonic_ns()}.log", env)


class Topics:
    def __init__(self, path: Path, env: dict, *namespaces: str):
        self.path = path
        self.proc = start_peer("link_topic_recorder.py", str(path), *namespaces, env=env)
        assert self.proc.stdout.readline().strip() == "ready"

    def records(self, topic: str) -> list[dict]:
        if not self.path.exists():
            return []
        return [
            r
            for r in (json.loads(line) for line in self.path.read_text().splitlines() if line.strip())
            if r["topic"] == topic
        ]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture(scope="module")
def creds(tmp_path_factory):
    return init_credentials(tmp_path_factory.mktemp("creds"), ["robot1"])


def _weights(seed: int) -> dict:
    from sop_ros.core.model import VLAPolicy, preset

    torch.manual_seed(seed)
    return VLAPolicy(preset("tiny"), device="cpu").checkpoint_tensors()


def test_bridge_uploads_the_spool_announces_verified_checkpoints_and_restarts_from_its_cache(tmp_path, creds):
    state = tmp_path / "state"
    with running_learner(
        tmp_path / "learner",
        insecure=False,
        tls_cert=creds.learner_cert,
        tls_key=creds.learner_key,
        tokens_file=creds.tokens_file,
    ) as learner:
        fleet = parse_fleet(
            {
                "fleet": "bridge_test",
                "state_dir": str(state),
                "learner": {
                    "address": learner.address,
                    "run_locally": False,
                    "tls": {"cert": str(creds.learner_cert), "key": str(creds.learner_key)},
                    "tokens_file": str(creds.tokens_file),
                },
                "robots": [
                    {
                        "id": "robot1",
                        "backend": "sim",
                        "tasks": ["reach-v3"],
                        "spool_dir": str(tmp_path / "spool"),
                        "credentials": {
                            "token_file": str(creds.robot_dir("robot1") / "token"),
                            "ca_cert": str(creds.ca_cert),
                        },
                    }
                ],
            }
        )
        robot = fleet.robot("robot1")
        # Episodes left in the spool by an earlier run (the bridge was down), oldest first.
        spool = Spool(fleet.spool_dir(robot), 1 << 30)
        spooled = [spool.write(make_episode("robot1", seed=i)) for i in range(3)]
        copies = {}
        for entry in spooled:
            copies[entry.episode_id] = tmp_path / f"{entry.episode_id}.copy"
            copies[entry.episode_id].write_bytes(entry.path.read_bytes())
        v1 = learner.checkpoint_store.publish(
            _weights(1), algorithm="bc", training_step=0, metrics={"loss": 0.5}, parent_version=None
        )
        learner.service.publish_checkpoint(v1)

        env = ros_env()
        topics = Topics(tmp_path / "topics.jsonl", env, "/robot1")
        bridge = BridgeProcess(tmp_path, fleet, topics.path, env)
        try:
            wait_for(lambda: len(spool) == 0, 60, "the spool to drain", bridge.log)
            for entry in spooled:
                stored = learner.episode_store.get(entry.episode_id)
                assert stored is not None
                assert (
                    learner.episode_store.episode_path(entry.episode_id).read_bytes()
                    == copies[entry.episode_id].read_bytes()
                )

            def acked_statuses():
                acked = [r for r in topics.records("episode_status") if r["upload_state"] == EpisodeStatus.UPLOAD_ACKED]
                return acked if len(acked) >= 3 else None

            acked = wait_for(acked_statuses, 30, "ACKED statuses", bridge.log)
            # Oldest first, with up to MAX_IN_FLIGHT episodes on their way at once (their acks may swap).
            order = [e.episode_id for e in spooled]
            assert sorted(r["episode_id"] for r in acked) == sorted(order)
            assert all(order.index(r["episode_id"]) <= i + MAX_IN_FLIGHT - 1 for i, r in enumerate(acked)), [
                order.index(r["episode_id"]) for r in acked
            ]
            assert all(
                r["outcome"] == EpisodeStatus.OUTCOME_SUCCESS and r["step"] == 20 and r["task_id"] == "reach-v3"
                for r in acked
            )
            assert acked[-1]["spooled_episodes"] == 0

            # v1 arrives verified in the cache and is announced with its manifest.
            first = wait_for(lambda: topics.records("policy_update"), 60, "PolicyUpdate v1", bridge.log)[0]
            assert first["version"] == 1 and first["content_hash"] == v1.content_hash and first["algorithm"] == "bc"
            assert Path(first["local_path"]).is_relative_to(fleet.checkpoint_cache_dir(robot))
            assert file_sha256(first["local_path"]) == v1.content_hash
            assert json.loads(Path(first["manifest_path"]).read_text())["version"] == 1
            assert first["metrics"] == {"loss": "0.5"}

            # A checkpoint published while the bridge runs, and an episode recorded while it runs.
            v2 = learner.checkpoint_store.publish(
                _weights(2), algorithm="hg_dagger", training_step=25, metrics={"loss": 0.25}, parent_version=1
            )
            learner.service.publish_checkpoint(v2)
            live = spool.write(make_episode("robot1", seed=10))
            second = wait_for(
                lambda: [r for r in topics.records("policy_update") if r["version"] == 2],
                60,
                "PolicyUpdate v2",
                bridge.log,
            )[0]
            assert (
                second["parent_version"] == 1 and second["training_step"] == 25 and second["algorithm"] == "hg_dagger"
            )
            assert file_sha256(second["local_path"]) == v2.content_hash != v1.content_hash
            wait_for(
                lambda: learner.episode_store.get(live.episode_id) is not None and len(spool) == 0,
                30,
                "the live episode upload",
                bridge.log,
            )

            # Registered with its config; heartbeats carry its upload counters; diagnostics say the same.
            operator = LinkClient.connect(
                LinkClientConfig(
                    address=learner.address, ca_cert=creds.ca_cert, token_file=creds.operator_dir("operator") / "token"
                )
            )
            try:

                def registered():
                    status = operator.fleet.GetFleetStatus(
                        fleet_pb2.GetFleetStatusRequest(), metadata=operator.metadata, timeout=5
                    )
                    entries = [r for r in status.robots if r.robot_id == "robot1" and r.status.episodes_uploaded == 4]
                    return entries[0] if entries else None

                entry = wait_for(registered, 30, "robot1's heartbeat with 4 uploads", bridge.log)
            finally:
                operator.close()
            assert (
                list(entry.config.tasks) == ["reach-v3"]
                and entry.config.backend == "sim"
                and entry.config.action_dim == 4
            )
            assert entry.status.policy_version == 2
            diag = wait_for(
                lambda: [d for d in topics.records("diagnostics") if d["values"]["episodes_uploaded"] == "4"],
                10,
                "diagnostics",
                bridge.log,
            )[-1]
            assert (
                diag["name"] == "sop_ros/robot1/bridge"
                and diag["values"]["checkpoint_published"] == "2"
                and diag["level"] == 0
            )
        finally:
            code = bridge.stop()
            topics.stop()
        log = bridge.log()
        assert code == 0 and "Traceback" not in log, log[-3000:]
        assert "INSECURE" not in log

    # The learner is gone: a restarted bridge still announces the newest cached checkpoint.
    restarted_topics = Topics(tmp_path / "topics2.jsonl", env, "/robot1")
    bridge = BridgeProcess(tmp_path, fleet, restarted_topics.path, env)
    try:
        again = wait_for(lambda: restarted_topics.records("policy_update"), 60, "the cached checkpoint", bridge.log)[0]
        assert again["version"] == 2 and file_sha256(again["local_path"]) == again["content_hash"]
        # Its diagnostics say, as an ERROR, that the learner cannot be reached (nothing leaves the robot); the log
        # says it once.
        failed = wait_for(
            lambda: [d for d in restarted_topics.records("diagnostics") if d["level"] == 2],
            30,
            "an ERROR diagnostic",
            bridge.log,
        )[-1]
        assert failed["message"].startswith("learner unreachable for") and "UNAVAILABLE" in failed["message"]
        assert failed["values"]["learner_reachable"] == "False" and failed["values"]["checkpoint_published"] == "2"
        assert bridge.log().count("unreachable (UNAVAILABLE") == 1
    finally:
        bridge.stop()
        restarted_topics.stop()
    assert "Traceback" not in bridge.log()


def test_link_parameters_are_checked_with_the_parameter_named(tmp_path, creds):
    from sop_ros.nodes.bridge import link_config

    with pytest.raises(ValueError, match="'token_file': no such file"):
        link_config("127.0.0.1:1", False, str(creds.ca_cert), str(tmp_path / "missing"), "", "")
    with pytest.raises(ValueError, match="ca_cert is required for TLS"):
        link_config("127.0.0.1:1", False, "", str(creds.robot_dir("robot1") / "token"), "", "")
    with pytest.raises(ValueError, match="insecure=True contradicts"):
        link_config("127.0.0.1:1", True, str(creds.ca_cert), "", "", "")
    config = link_config("127.0.0.1:1", True, "", "", "", "")
    assert config.insecure and config.ca_cert is None


def test_fleet_description_gives_the_bridge_its_learner_credentials_and_cache(tmp_path, creds):
    fleet = parse_fleet(
        {
            "state_dir": str(tmp_path / "state"),
            "learner": {"address": "10.0.0.5:6000", "insecure": True},
            "robots": [
                {"id": "a", "backend": "sim", "tasks": ["push-v3"], "control_rate_hz": 20.0},
                {
                    "id": "b",
                    "backend": "hardware",
                    "tasks": ["reach-v3"],
                    "checkpoint_cache_dir": str(tmp_path / "cache_b"),
                    "credentials": {"token_file": str(creds.robot_dir("robot1") / "token")},
                },
            ],
        }
    )
    bridges = {
        s.robot_id: s for s in node_specs(fleet, with_learner=False) if isinstance(s, NodeSpec) and s.name == "bridge"
    }
    a, b = bridges["a"].parameters, bridges["b"].parameters
    assert bridges["a"].namespace == "/a"
    assert a["address"] == "10.0.0.5:6000" and a["insecure"] is True and a["token_file"] == ""
    assert a["cache_dir"] == str(tmp_path / "state" / "a" / "checkpoints") and a["spool_dir"] == str(
        tmp_path / "state" / "a" / "spool"
    )
    assert a["tasks"] == ["push-v3"] and a["control_rate_hz"] == 20.0 and a["backend"] == "sim"
    assert b["cache_dir"] == str(tmp_path / "cache_b") and b["token_file"] == str(creds.robot_dir("robot1") / "token")
    # The recorder writes where the bridge reads.
    recorders = {
        s.robot_id: s
        for s in node_specs(fleet, with_learner=False)
        if isinstance(s, NodeSpec) and s.name == "episode_recorder"
    }
    assert all(recorders[r].parameters["spool_dir"] == bridges[r].parameters["spool_dir"] for r in ("a", "b"))
