"""The on-disk episode: one MCAP file with ROS 2 message schemas (opens in Foxglove / ros2 bag).

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

CDR is encoded here (tight, zero-padded, byte-identical to mcap_ros2), not by rclpy: see research/mcap-spike.md pitfall 1.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
from mcap.reader import make_reader
from mcap.writer import CompressionType
from mcap.writer import Writer as McapWriter

from sop_ros.core.storage.durable_files import atomic_output
from sop_ros.core.episodes.episode import Episode, EpisodeValidationError, LabelSource
from sop_ros.core.episodes.hashing import episode_content_hash, file_sha256

__all__ = ["EpisodeFileError", "write_episode", "read_episode", "read_episode_metadata", "file_sha256", "EPISODE_SUFFIX"]

EPISODE_SUFFIX = ".mcap"
FORMAT_NAME = "sop_episode"
FORMAT_VERSION = 1
METADATA_NAME = "sop_episode"
MCAP_MAGIC = b"\x89MCAP0\r\n"
WRITER_LIBRARY = f"sop_ros episode_file v{FORMAT_VERSION}"
IMAGE_FRAME_ID = "camera"

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
        "std_msgs/Header header\nuint32 height\nuint32 width\nstring encoding\nuint8 is_bigendian\nuint32 step\nuint8[] data\n"
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
_MULTIARRAY_LABELS: dict[str, tuple[str, ...]] = {
    STATE_TOPIC: ("state",),
    ACTION_TOPIC: ("action",),
    CHUNK_TOPIC: ("horizon", "action"),
}
_REQUIRED_META = (
    "format", "format_version", "episode_id", "robot_id", "task_id", "instruction", "success", "label_source",
    "start_ns", "end_ns", "num_steps", "shapes", "intervention_reasons", "intervention_segments", "content_hash",
)


class EpisodeFileError(ValueError):
    """An episode file is missing, truncated, corrupted or does not follow the episode format."""


# ------------------------------------------------------------------------------------ CDR codec
# mcap_ros2 (de)serializes float32[] one element at a time in Python; for ~25k floats per episode that
# was ~5x the 60 ms budget. These four fixed message types are encoded here with struct/numpy instead
# (plain little-endian XCDR1, byte-identical to mcap_ros2's output: the tests compare them and decode
# our bytes with mcap_ros2 and rclpy).
_CDR_LE = b"\x00\x01\x00\x00"


class _CdrOut:
    def __init__(self) -> None:
        self.parts: list[bytes] = [_CDR_LE]
        self.pos = 0  # offset after the encapsulation header, what CDR alignment is relative to

    def _put(self, data: bytes, align: int) -> None:
        pad = -self.pos % align
        if pad:
            self.parts.append(b"\0" * pad)
        self.parts.append(data)
        self.pos += pad + len(data)

    def u8(self, v: int) -> None:
        self._put(struct.pack("<B", v), 1)

    def u32(self, v: int) -> None:
        self._put(struct.pack("<I", v), 4)

    def i64(self, v: int) -> None:
        self._put(struct.pack("<q", v), 8)

    def string(self, s: str) -> None:
        raw = s.encode() + b"\0"
        self._put(struct.pack("<I", len(raw)) + raw, 4)

    def raw(self, data: bytes, align: int) -> None:
        self._put(data, align)

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


class _CdrIn:
    def __init__(self, data: bytes, what: str) -> None:
        if data[:4] != _CDR_LE:
            raise _Problem(f"{what}: not little-endian CDR (encapsulation {bytes(data[:4]).hex()})")
        self.buf = memoryview(data)[4:]
        self.pos = 0
        self.what = what

    def _take(self, n: int, align: int) -> memoryview:
        self.pos += -self.pos % align
        if self.pos + n > len(self.buf):
            raise _Problem(f"{self.what}: message truncated (needs {self.pos + n} bytes, has {len(self.buf)})")
        out = self.buf[self.pos: self.pos + n]
        self.pos += n
        return out

    def u8(self) -> int:
        return self._take(1, 1)[0]

    def i32(self) -> int:
        return struct.unpack("<i", self._take(4, 4))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self._take(4, 4))[0]

    def i64(self) -> int:
        return struct.unpack("<q", self._take(8, 8))[0]

    def string(self) -> str:
        raw = bytes(self._take(self.u32(), 1))
        if not raw.endswith(b"\0"):
            raise _Problem(f"{self.what}: string is not NUL-terminated")
        return raw[:-1].decode()

    def array(self, dtype: str, count: int) -> np.ndarray:
        item = np.dtype(dtype).itemsize
        return np.frombuffer(self._take(count * item, item), dtype=dtype)

    def done(self) -> None:
        if self.pos != len(self.buf):
            raise _Problem(f"{self.what}: {len(self.buf) - self.pos} unexpected trailing bytes")


def _encode_image(stamp_ns: int, image: np.ndarray) -> bytes:
    h, w, _ = image.shape
    out = _CdrOut()
    out._put(struct.pack("<iI", stamp_ns // 1_000_000_000, stamp_ns % 1_000_000_000), 4)
    out.string(IMAGE_FRAME_ID)
    out._put(struct.pack("<II", h, w), 4)
    out.string("rgb8")
    out.u8(0)  # is_bigendian
    out._put(struct.pack("<II", w * 3, image.nbytes), 4)  # step, then uint8[] length
    out.raw(image.tobytes(), 1)
    return out.getvalue()


def _encode_multiarray(values: np.ndarray, labels: tuple[str, ...]) -> bytes:
    out = _CdrOut()
    out.u32(len(labels))
    stride = int(values.size)
    for label, size in zip(labels, values.shape):
        out.string(label)
        out._put(struct.pack("<II", size, stride), 4)
        stride //= max(int(size), 1)
    out.u32(0)  # data_offset
    out.u32(int(values.size))
    out.raw(np.ascontiguousarray(values, dtype="<f4").tobytes(), 4)
    return out.getvalue()


def _encode_uint8(v: int) -> bytes:
    return _CDR_LE + struct.pack("<B", v)


def _encode_int64(v: int) -> bytes:
    return _CDR_LE + struct.pack("<q", v)


def _decode_image(data: bytes, what: str) -> tuple[int, int, int, str, int, np.ndarray]:
    r = _CdrIn(data, what)
    sec, nanosec = r.i32(), r.u32()
    r.string()  # frame_id
    height, width = r.u32(), r.u32()
    encoding = r.string()
    r.u8()  # is_bigendian: irrelevant for uint8 rgb8
    step = r.u32()
    pixels = r.array("u1", r.u32())
    r.done()
    return sec * 1_000_000_000 + nanosec, height, width, encoding, step, pixels


def _decode_multiarray(data: bytes, what: str) -> tuple[tuple[int, ...], np.ndarray]:
    r = _CdrIn(data, what)
    sizes = []
    for _ in range(r.u32()):
        r.string()
        sizes.append(r.u32())
        r.u32()  # stride
    r.u32()  # data_offset
    values = r.array("<f4", r.u32())
    r.done()
    return tuple(sizes), values


def _decode_scalar(data: bytes, what: str, kind: str) -> int:
    r = _CdrIn(data, what)
    v = r.u8() if kind == "u8" else r.i64()
    r.done()
    return v


# ----------------------------------------------------------------------------------------- write


def _episode_metadata(ep: Episode) -> dict[str, str]:
    segments = [[s.start_step, s.end_step, s.reason] for s in ep.intervention_segments]
    shapes = {
        "image_hw": list(ep.images.shape[1:3]),
        "state_dim": int(ep.states.shape[1]),
        "action_dim": int(ep.actions.shape[1]),
        "chunk_len": int(ep.proposed_chunks.shape[1]),
    }
    meta: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "episode_id": ep.episode_id,
        "robot_id": ep.robot_id,
        "task_id": ep.task_id,
        "instruction": ep.instruction,
        "success": ep.success,
        "label_source": ep.label_source.value,
        "start_ns": int(ep.start_ns),
        "end_ns": int(ep.end_ns),
        "num_steps": ep.num_steps,
        "shapes": shapes,
        "intervention_reasons": list(ep.intervention_reasons),
        "intervention_segments": segments,
        "content_hash": episode_content_hash(ep),
    }
    # MCAP metadata values must be strings: keep plain strings readable, JSON-encode the rest.
    text_keys = {"format", "episode_id", "robot_id", "task_id", "instruction", "label_source", "content_hash"}
    return {k: (v if k in text_keys else json.dumps(v)) for k, v in meta.items()}


def write_episode(episode: Episode, path: str | Path, *, chunk_size: int = 1 << 20) -> Path:
    """Write `episode` to `path` atomically (temp file in the same dir, fsync, rename, fsync dir)."""
    episode.validate()
    if int(episode.stamps_ns.min()) < 0:
        raise EpisodeValidationError("episode field 'stamps_ns': negative timestamp cannot be an MCAP log time")
    path = Path(path)
    meta = _episode_metadata(episode)
    with atomic_output(path) as f:
        w = McapWriter(f, chunk_size=chunk_size, compression=CompressionType.ZSTD, enable_crcs=True, enable_data_crcs=True)
        w.start(profile="ros2", library=WRITER_LIBRARY)
        schema_ids = {name: w.register_schema(name=name, encoding="ros2msg", data=text.encode()) for name, text in MSGDEFS.items()}
        ch = {
            topic: w.register_channel(topic=topic, message_encoding="cdr", schema_id=schema_ids[typ])
            for topic, typ in TOPIC_TYPES.items()
        }
        for t in range(episode.num_steps):
            ns = int(episode.stamps_ns[t])
            messages = (
                (IMAGE_TOPIC, _encode_image(ns, episode.images[t])),
                (STATE_TOPIC, _encode_multiarray(episode.states[t], _MULTIARRAY_LABELS[STATE_TOPIC])),
                (ACTION_TOPIC, _encode_multiarray(episode.actions[t], _MULTIARRAY_LABELS[ACTION_TOPIC])),
                (CHUNK_TOPIC, _encode_multiarray(episode.proposed_chunks[t], _MULTIARRAY_LABELS[CHUNK_TOPIC])),
                (ACTOR_TOPIC, _encode_uint8(int(episode.actors[t]))),
                (VERSION_TOPIC, _encode_int64(int(episode.policy_versions[t]))),
            )
            for topic, data in messages:
                w.add_message(channel_id=ch[topic], log_time=ns, publish_time=ns, sequence=t, data=data)
        w.add_metadata(METADATA_NAME, meta)
        w.finish()
    return path


# ------------------------------------------------------------------------------------------ read


class _Problem(Exception):
    """Internal: a format violation, turned into EpisodeFileError with the file name."""


def _json_field(meta: dict[str, str], key: str) -> Any:
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as e:
        raise _Problem(f"metadata field '{key}' is not valid JSON: {e}") from None


def _check_magic(f) -> int:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    if size < 2 * len(MCAP_MAGIC):
        raise _Problem(f"file too small ({size} bytes) to be an MCAP file")
    f.seek(0)
    if f.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
        raise _Problem("not an MCAP file (bad leading magic)")
    f.seek(-len(MCAP_MAGIC), os.SEEK_END)
    if f.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
        raise _Problem("truncated or unfinished MCAP file (no trailing magic)")
    f.seek(0)
    return size


def _parse_metadata(reader) -> dict[str, str]:
    records = {m.name: m.metadata for m in reader.iter_metadata()}
    if METADATA_NAME not in records:
        raise _Problem(f"no '{METADATA_NAME}' metadata record (found {sorted(records)})")
    meta = dict(records[METADATA_NAME])
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing:
        raise _Problem(f"metadata is missing fields {missing}")
    if meta["format"] != FORMAT_NAME:
        raise _Problem(f"metadata format is {meta['format']!r}, expected {FORMAT_NAME!r}")
    version = _json_field(meta, "format_version")
    if version != FORMAT_VERSION:
        raise _Problem(f"unsupported episode format version {version!r} (this reader reads {FORMAT_VERSION})")
    return meta


def _shape_int(value: Any, name: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _Problem(f"metadata shape '{name}' must be an integer >= {minimum}, got {value!r}")
    return value


def _check_channels(summary, num_steps: int) -> dict[int, str]:
    """Map channel id -> topic after checking every topic, schema and message count."""
    by_topic = {ch.topic: ch for ch in summary.channels.values()}
    unexpected = sorted(set(by_topic) - set(TOPIC_TYPES))
    if unexpected:
        raise _Problem(f"unexpected topics {unexpected}")
    counts = summary.statistics.channel_message_counts if summary.statistics else {}
    for topic, typ in TOPIC_TYPES.items():
        ch = by_topic.get(topic)
        if ch is None:
            raise _Problem(f"topic {topic} is missing")
        schema = summary.schemas.get(ch.schema_id)
        if schema is None or schema.name != typ or schema.encoding != "ros2msg" or ch.message_encoding != "cdr":
            found = f"{schema.name} ({schema.encoding}/{ch.message_encoding})" if schema else "no schema"
            raise _Problem(f"topic {topic} has schema {found}, expected {typ} (ros2msg/cdr)")
        if counts.get(ch.id, -1) != num_steps:
            raise _Problem(f"topic {topic} has {counts.get(ch.id, 'no')} messages in the summary, expected {num_steps}")
    return {ch.id: ch.topic for ch in summary.channels.values()}


def _read(path: Path) -> Episode:
    with open(path, "rb") as f:
        _check_magic(f)
        reader = make_reader(f, validate_crcs=True)
        header = reader.get_header()
        if header.profile != "ros2":
            raise _Problem(f"MCAP profile is {header.profile!r}, expected 'ros2'")
        summary = reader.get_summary()
        if summary is None:
            raise _Problem("MCAP file has no summary section")
        meta = _parse_metadata(reader)
        num_steps = _shape_int(_json_field(meta, "num_steps"), "num_steps", 1)
        shapes = _json_field(meta, "shapes")
        if not isinstance(shapes, dict) or not isinstance(shapes.get("image_hw"), list) or len(shapes["image_hw"]) != 2:
            raise _Problem(f"metadata 'shapes' is malformed: {shapes!r}")
        h = _shape_int(shapes["image_hw"][0], "image_hw[0]", 1)
        w = _shape_int(shapes["image_hw"][1], "image_hw[1]", 1)
        s = _shape_int(shapes.get("state_dim"), "state_dim", 0)
        a = _shape_int(shapes.get("action_dim"), "action_dim", 1)
        k = _shape_int(shapes.get("chunk_len"), "chunk_len", 1)
        topics = _check_channels(summary, num_steps)

        images = np.empty((num_steps, h, w, 3), np.uint8)
        states = np.empty((num_steps, s), np.float32)
        actions = np.empty((num_steps, a), np.float32)
        chunks = np.empty((num_steps, k, a), np.float32)
        actors = np.empty(num_steps, np.uint8)
        versions = np.empty(num_steps, np.int64)
        next_step = dict.fromkeys(TOPIC_TYPES, 0)
        log_times = {topic: np.empty(num_steps, np.int64) for topic in TOPIC_TYPES}
        arrays_by_topic = {STATE_TOPIC: states, ACTION_TOPIC: actions, CHUNK_TOPIC: chunks}
        layout_prefix = {
            topic: _encode_multiarray(np.zeros(arr.shape[1:], np.float32), _MULTIARRAY_LABELS[topic])[: -arr[0].nbytes or None]
            for topic, arr in arrays_by_topic.items()
        }
        for _schema, channel, record in reader.iter_messages(log_time_order=False):
            topic = topics[channel.id]
            t = next_step[topic]
            if t >= num_steps:
                raise _Problem(f"topic {topic} has more than {num_steps} messages")
            next_step[topic] = t + 1
            log_times[topic][t] = record.log_time
            what = f"topic {topic} step {t}"
            if topic == IMAGE_TOPIC:
                stamp, height, width, encoding, step, pixels = _decode_image(record.data, what)
                if (height, width, encoding, step) != (h, w, "rgb8", w * 3) or pixels.size != h * w * 3:
                    raise _Problem(
                        f"{what}: image {width}x{height} {encoding!r} step {step} with {pixels.size} bytes, "
                        f"expected {w}x{h} 'rgb8' step {w * 3}"
                    )
                if stamp != record.log_time:
                    raise _Problem(f"{what}: header stamp {stamp} != log time {record.log_time}")
                images[t] = pixels.reshape(h, w, 3)
            elif topic in arrays_by_topic:
                target = arrays_by_topic[topic]
                prefix = layout_prefix[topic]
                if len(record.data) == len(prefix) + target[0].nbytes and record.data.startswith(prefix):
                    # Fast path: the exact layout this module writes, so only the floats vary.
                    target[t] = np.frombuffer(record.data, "<f4", offset=len(prefix)).reshape(target.shape[1:])
                    continue
                dims, values = _decode_multiarray(record.data, what)
                if dims != target.shape[1:] or values.size != int(np.prod(target.shape[1:])):
                    raise _Problem(f"{what}: array dims {dims} with {values.size} values, expected {target.shape[1:]}")
                target[t] = values.reshape(target.shape[1:])
            elif topic == ACTOR_TOPIC:
                actors[t] = _decode_scalar(record.data, what, "u8")
            else:
                versions[t] = _decode_scalar(record.data, what, "i64")
        short = {tp: n for tp, n in next_step.items() if n != num_steps}
        if short:
            raise _Problem(f"topics have fewer messages than {num_steps} steps: {short}")
        stamps = log_times[IMAGE_TOPIC]
        for topic, times in log_times.items():
            if not np.array_equal(times, stamps):
                t = int(np.flatnonzero(times != stamps)[0])
                raise _Problem(f"topic {topic} step {t}: log time {times[t]} != image stamp {stamps[t]}")

    success = _json_field(meta, "success")
    try:
        label_source = LabelSource(meta["label_source"])
    except ValueError:
        raise _Problem(f"metadata label_source {meta['label_source']!r} is unknown") from None
    reasons = _json_field(meta, "intervention_reasons")
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise _Problem("metadata 'intervention_reasons' must be a list of strings")
    ep = Episode(
        episode_id=meta["episode_id"],
        robot_id=meta["robot_id"],
        task_id=meta["task_id"],
        instruction=meta["instruction"],
        images=images,
        states=states,
        actions=actions,
        actors=actors,
        policy_versions=versions,
        proposed_chunks=chunks,
        stamps_ns=stamps,
        success=success,
        label_source=label_source,
        start_ns=_shape_int(_json_field(meta, "start_ns"), "start_ns", 0),
        end_ns=_shape_int(_json_field(meta, "end_ns"), "end_ns", 0),
        intervention_reasons=tuple(reasons),
    )
    ep.validate()
    actual = episode_content_hash(ep)
    if actual != meta["content_hash"]:
        raise _Problem(f"content hash mismatch: metadata says {meta['content_hash']}, payload gives {actual}")
    segments = [[sg.start_step, sg.end_step, sg.reason] for sg in ep.intervention_segments]
    if _json_field(meta, "intervention_segments") != segments:
        raise _Problem("metadata 'intervention_segments' disagree with the per-step actors")
    return ep


def read_episode(path: str | Path) -> Episode:
    """Read and fully validate an episode file (CRCs, profile, schemas, counts, shapes, content hash).

    Raises EpisodeFileError naming the file and the problem for anything that is not a complete,
    intact episode file.
    """
    path = Path(path)
    try:
        return _read(path)
    except _Problem as e:
        raise EpisodeFileError(f"{path}: {e}") from None
    except EpisodeValidationError as e:
        raise EpisodeFileError(f"{path}: invalid episode: {e}") from e
    except FileNotFoundError:
        raise EpisodeFileError(f"{path}: no such file") from None
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - mcap/zstd/CDR raise many types (struct.error, ZstdError, McapError, ...)
        raise EpisodeFileError(f"{path}: corrupt or unreadable MCAP ({type(e).__name__}: {e})") from e


def read_episode_metadata(path: str | Path) -> dict[str, Any]:
    """The episode-level metadata only (seeks footer -> summary -> metadata; no payload decode, no hash check)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            _check_magic(f)
            meta = _parse_metadata(make_reader(f, validate_crcs=True))
    except _Problem as e:
        raise EpisodeFileError(f"{path}: {e}") from None
    except FileNotFoundError:
        raise EpisodeFileError(f"{path}: no such file") from None
    except Exception as e:  # noqa: BLE001
        raise EpisodeFileError(f"{path}: corrupt or unreadable MCAP ({type(e).__name__}: {e})") from e
    text_keys = {"format", "episode_id", "robot_id", "task_id", "instruction", "label_source", "content_hash"}
    return {k: (v if k in text_keys else json.loads(v)) for k, v in meta.items()}


def synthetic_episode(
    num_steps: int = 300,
    image_hw: int = 64,
    *,
    seed: int = 0,
    episode_id: str | None = None,
    robot_id: str = "robot0",
    task_id: str = "reach-v3",
    instruction: str = "reach the goal",
    state_dim: int = 39,
    action_dim: int = 4,
    chunk_len: int = 10,
    policy_version: int = 3,
    human_steps: tuple[int, int] | None = None,
    success: bool | None = True,
) -> Episode:
    """A valid episode of noisy (incompressible) frames, for benchmarks and tests.

    human_steps=(a, b) makes steps [a, b) human interventions (proposed chunks NaN there); default is the
    middle sixth of the episode.
    """
    import uuid

    from sop_ros.core.episodes.episode import Actor

    rng = np.random.default_rng(seed)
    actors = np.zeros(num_steps, np.uint8)
    a, b = human_steps if human_steps is not None else (num_steps // 3, num_steps // 2)
    actors[a:b] = Actor.HUMAN
    chunks = rng.standard_normal((num_steps, chunk_len, action_dim)).astype(np.float32)
    chunks[actors == Actor.HUMAN] = np.nan
    stamps = 1_700_000_000_000_000_000 + np.arange(num_steps, dtype=np.int64) * 100_000_000 + seed
    n_segments = 1 if b > a else 0
    return Episode(
        episode_id=episode_id or str(uuid.UUID(bytes=rng.bytes(16), version=4)),
        robot_id=robot_id, task_id=task_id, instruction=instruction,
        images=rng.integers(0, 256, (num_steps, image_hw, image_hw, 3), dtype=np.uint8),
        states=rng.standard_normal((num_steps, state_dim)).astype(np.float32),
        actions=rng.standard_normal((num_steps, action_dim)).astype(np.float32),
        actors=actors,
        policy_versions=np.full(num_steps, policy_version, np.int64),
        proposed_chunks=chunks,
        stamps_ns=stamps,
        success=success,
        label_source=LabelSource.NONE if success is None else LabelSource.ENVIRONMENT,
        start_ns=int(stamps[0]),
        end_ns=int(stamps[-1]) + 100_000_000,
        intervention_reasons=("operator took over",) * n_segments,
    )


def bench_episode_io(num_steps: int = 300, image_hw: int = 64, repeats: int = 3) -> dict[str, float]:
    """Best-of-`repeats` write and read wall time (ms) of a synthetic noisy episode, plus its file size."""
    import tempfile
    import time

    ep = synthetic_episode(num_steps, image_hw)
    write_ms, read_ms = [], []
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bench.mcap"
        for _ in range(repeats):
            t0 = time.perf_counter()
            write_episode(ep, path)
            write_ms.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            read_episode(path)
            read_ms.append((time.perf_counter() - t0) * 1e3)
        size = path.stat().st_size
    return {"write_ms": min(write_ms), "read_ms": min(read_ms), "file_bytes": float(size), "num_steps": float(num_steps)}
