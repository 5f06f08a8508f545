"""The episode file format: one MCAP file with ROS 2 message schemas (opens in Foxglove / ros2 bag).

Layout (profile "ros2", CDR messages, zstd chunks, schema text embedded):

    /camera/rgb       sensor_msgs/msg/Image (rgb8)          images[t]
    /state            std_msgs/msg/Float32MultiArray [S]     states[t]
    /action           std_msgs/msg/Float32MultiArray [A]     actions[t]
    /proposed_chunk   std_msgs/msg/Float32MultiArray [K, A]  proposed_chunks[t] (NaN where the human acted)
    /actor            std_msgs/msg/UInt8                     actors[t] (0 policy, 1 human)
    /policy_version   std_msgs/msg/Int64                     policy_versions[t]

Every message of step t has log_time = publish_time = stamps_ns[t] and sequence = t; messages are
written in step order, so file order is step order (equal stamps are allowed). Episode-level fields
live in the MCAP Metadata record "sop_episode" (values are strings, non-strings JSON-encoded), including
`content_hash` (hashing.episode_content_hash), which read_episode recomputes.

This module holds the constants both sides agree on; episode_file.py writes and reads them, cdr.py
encodes the messages.
"""

from __future__ import annotations

EPISODE_SUFFIX = ".mcap"
FORMAT_NAME = "sop_episode"
FORMAT_VERSION = 1
METADATA_NAME = "sop_episode"
MCAP_MAGIC = b"\x89MCAP0\r\n"
WRITER_LIBRARY = f"sop_ros episode_file v{FORMAT_VERSION}"

IMAGE_TOPIC = "/camera/rgb"
STATE_TOPIC = "/state"
ACTION_TOPIC = "/action"
CHUNK_TOPIC = "/proposed_chunk"
ACTOR_TOPIC = "/actor"
VERSION_TOPIC = "/policy_version"

_SEP = "=" * 80
# Comment-stripped ROS 2 (Kilted) .msg texts, concatenated the way rosbag2 embeds them
# (root text, then "MSG: pkg/Type" blocks for every dependency). Kept here so the core needs no
# ROS install; test_core_storage_episode_file checks them against the installed .msg files.
_MSG_TIME = "int32 sec\nuint32 nanosec\n"
_MSG_HEADER = "builtin_interfaces/Time stamp\nstring frame_id\n"
_MSG_DIM = "string label\nuint32 size\nuint32 stride\n"
_MSG_LAYOUT = "std_msgs/MultiArrayDimension[] dim\nuint32 data_offset\n"
MSGDEFS: dict[str, str] = {
    "sensor_msgs/msg/Image": (
        "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\nuint8 is_bigendian\nuint32 step\n"
        "uint8[] data\n"
        f"{_SEP}\nMSG: std_msgs/Header\n{_MSG_HEADER}{_SEP}\nMSG: builtin_interfaces/Time\n{_MSG_TIME}"
    ),
    "std_msgs/msg/Float32MultiArray": (
        "std_msgs/MultiArrayLayout layout\nfloat32[] data\n"
        f"{_SEP}\nMSG: std_msgs/MultiArrayLayout\n{_MSG_LAYOUT}{_SEP}\nMSG: std_msgs/MultiArrayDimension\n{_MSG_DIM}"
    ),
    "std_msgs/msg/UInt8": "uint8 data\n",
    "std_msgs/msg/Int64": "int64 data\n",
}
TOPIC_TYPES: dict[str, str] = {
    IMAGE_TOPIC: "sensor_msgs/msg/Image",
    STATE_TOPIC: "std_msgs/msg/Float32MultiArray",
    ACTION_TOPIC: "std_msgs/msg/Float32MultiArray",
    CHUNK_TOPIC: "std_msgs/msg/Float32MultiArray",
    ACTOR_TOPIC: "std_msgs/msg/UInt8",
    VERSION_TOPIC: "std_msgs/msg/Int64",
}
MULTIARRAY_LABELS: dict[str, tuple[str, ...]] = {
    STATE_TOPIC: ("state",),
    ACTION_TOPIC: ("action",),
    CHUNK_TOPIC: ("horizon", "action"),
}
REQUIRED_METADATA_KEYS = (
    "format",
    "format_version",
    "episode_id",
    "robot_id",
    "task_id",
    "instruction",
    "success",
    "label_source",
    "start_ns",
    "end_ns",
    "num_steps",
    "shapes",
    "intervention_reasons",
    "intervention_segments",
    "content_hash",
)
# MCAP metadata values must be strings: these stay plain strings, every other value is JSON-encoded.
TEXT_METADATA_KEYS = frozenset(
    {"format", "episode_id", "robot_id", "task_id", "instruction", "label_source", "content_hash"}
)
