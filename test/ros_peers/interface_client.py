"""Client process for the interface test: sends every custom message, calls every custom service.

Prints one JSON line: {"echoed": {topic: bool (the echo equals what was sent)}, "services": {...}}.
"""

import json
import sys
import time

import rclpy
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import KeyValue
from rclpy.node import Node

from sop_ros.msg import ActionChunk, EpisodeStatus, InterventionState, PolicyUpdate
from sop_ros.srv import GetRobotStatus, LabelEpisode, SetTask

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from interface_peer import MESSAGES, QOS  # noqa: E402


def sample_messages():
    chunk = ActionChunk(
        policy_version=7,
        chunk_length=2,
        action_dim=3,
        actions=[0.1, 0.2, 0.3, -1.0, 0.5, 0.25],
        step_period=Duration(sec=0, nanosec=100_000_000),
        instruction="push the puck",
        inference_ms=3.5,
    )
    chunk.header.frame_id = "base_link"
    chunk.header.stamp = Time(sec=12, nanosec=34)
    state = InterventionState(
        actor=InterventionState.ACTOR_HUMAN,
        since=Time(sec=5, nanosec=6),
        segment_index=2,
        episode_step=31,
        reason="no progress for 15 steps",
        episode_id="0b6a1c9e-0000-4000-8000-000000000001",
    )
    update = PolicyUpdate(
        version=12,
        parent_version=11,
        content_hash="ab" * 32,
        local_path="/cache/v12/model.safetensors",
        manifest_path="/cache/v12/manifest.json",
        algorithm="hg_dagger",
        training_step=4000,
        metrics=[KeyValue(key="loss", value="0.031"), KeyValue(key="online_share", value="0.6")],
    )
    status = EpisodeStatus(
        episode_id="0b6a1c9e-0000-4000-8000-000000000002",
        robot_id="robot1",
        task_id="push-v3",
        instruction="push the puck to the goal",
        step=120,
        outcome=EpisodeStatus.OUTCOME_SUCCESS,
        upload_state=EpisodeStatus.UPLOAD_SPOOLED,
        human_steps=14,
        spooled_episodes=3,
        spooled_bytes=123456789,
    )
    return {"action_chunk": chunk, "intervention_state": state, "policy_update": update, "episode_status": status}


def main():
    rclpy.init(args=sys.argv)
    node = Node("interface_client")
    sent = sample_messages()
    received = {}
    pubs = {t: node.create_publisher(cls, t, QOS) for t, cls in MESSAGES.items()}
    for topic, cls in MESSAGES.items():
        node.create_subscription(cls, f"echo/{topic}", lambda msg, t=topic: received.setdefault(t, msg), QOS)
    clients = {
        "set_task": node.create_client(SetTask, "set_task"),
        "label_episode": node.create_client(LabelEpisode, "label_episode"),
        "get_robot_status": node.create_client(GetRobotStatus, "get_robot_status"),
    }
    for name, client in clients.items():
        if not client.wait_for_service(timeout_sec=30.0):
            print(json.dumps({"error": f"service {name} not available"}), flush=True)
            return 1
    deadline = time.monotonic() + 30.0
    while len(received) < len(sent) and time.monotonic() < deadline:
        for topic, msg in sent.items():
            if topic not in received:
                pubs[topic].publish(msg)
        rclpy.spin_once(node, timeout_sec=0.2)
    results = {"echoed": {t: received.get(t) == msg for t, msg in sent.items()}, "services": {}}

    def call(name, request):
        future = clients[name].call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=10.0)
        return future.result()

    r = call("set_task", SetTask.Request(task_id="push-v3", instruction="push it"))
    results["services"]["set_task"] = [r.accepted, r.message]
    r = call("set_task", SetTask.Request(task_id="fly-v3", instruction=""))
    results["services"]["set_task_refused"] = [r.accepted, r.message]
    r = call("label_episode", LabelEpisode.Request(episode_id="e1", success=False))
    results["services"]["label_episode"] = [r.accepted, r.episode_id, r.message]
    r = call("get_robot_status", GetRobotStatus.Request())
    results["services"]["get_robot_status"] = [r.robot_id, r.robot_namespace, list(r.task_set), r.policy_version]
    print(json.dumps(results), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
