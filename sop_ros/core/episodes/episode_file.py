"""Writing and reading episode files: the format of episode_format.py, CDR messages from cdr.py.

read_episode validates everything (CRCs, profile, schemas, message counts, shapes, stamps, content hash),
so a file it returns is a complete, intact episode; anything else is an EpisodeFileError naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from mcap.reader import make_reader
from mcap.writer import CompressionType
from mcap.writer import Writer as McapWriter

from sop_ros.core.episodes import cdr
from sop_ros.core.episodes.episode import Episode, EpisodeValidationError, LabelSource
from sop_ros.core.episodes.episode_format import (
    ACTION_TOPIC,
    ACTOR_TOPIC,
    CHUNK_TOPIC,
    EPISODE_SUFFIX,
    FORMAT_NAME,
    FORMAT_VERSION,
    IMAGE_TOPIC,
    MCAP_MAGIC,
    METADATA_NAME,
    MSGDEFS,
    MULTIARRAY_LABELS,
    REQUIRED_METADATA_KEYS,
    STATE_TOPIC,
    TEXT_METADATA_KEYS,
    TOPIC_TYPES,
    VERSION_TOPIC,
    WRITER_LIBRARY,
)
from sop_ros.core.episodes.hashing import episode_content_hash, file_sha256
from sop_ros.core.storage.durable_files import atomic_output

__all__ = [
    "EpisodeFileError",
    "write_episode",
    "read_episode",
    "read_episode_metadata",
    "file_sha256",
    "EPISODE_SUFFIX",
]


class EpisodeFileError(ValueError):
    """An episode file is missing, truncated, corrupted or does not follow the episode format."""


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
    return {k: (v if k in TEXT_METADATA_KEYS else json.dumps(v)) for k, v in meta.items()}


def _step_messages(episode: Episode, t: int, ns: int) -> tuple[tuple[str, bytes], ...]:
    """(topic, CDR bytes) of every message of step t, in the order they are written."""
    return (
        (IMAGE_TOPIC, cdr.encode_image(ns, episode.images[t])),
        (STATE_TOPIC, cdr.encode_multiarray(episode.states[t], MULTIARRAY_LABELS[STATE_TOPIC])),
        (ACTION_TOPIC, cdr.encode_multiarray(episode.actions[t], MULTIARRAY_LABELS[ACTION_TOPIC])),
        (CHUNK_TOPIC, cdr.encode_multiarray(episode.proposed_chunks[t], MULTIARRAY_LABELS[CHUNK_TOPIC])),
        (ACTOR_TOPIC, cdr.encode_uint8(int(episode.actors[t]))),
        (VERSION_TOPIC, cdr.encode_int64(int(episode.policy_versions[t]))),
    )


def write_episode(episode: Episode, path: str | Path, *, chunk_size: int = 1 << 20) -> Path:
    """Write `episode` to `path` atomically (temp file in the same dir, fsync, rename, fsync dir)."""
    episode.validate()
    if int(episode.stamps_ns.min()) < 0:
        raise EpisodeValidationError("episode field 'stamps_ns': negative timestamp cannot be an MCAP log time")
    path = Path(path)
    meta = _episode_metadata(episode)
    with atomic_output(path) as f:
        w = McapWriter(
            f, chunk_size=chunk_size, compression=CompressionType.ZSTD, enable_crcs=True, enable_data_crcs=True
        )
        w.start(profile="ros2", library=WRITER_LIBRARY)
        schema_ids = {
            name: w.register_schema(name=name, encoding="ros2msg", data=text.encode()) for name, text in MSGDEFS.items()
        }
        ch = {
            topic: w.register_channel(topic=topic, message_encoding="cdr", schema_id=schema_ids[typ])
            for topic, typ in TOPIC_TYPES.items()
        }
        for t in range(episode.num_steps):
            ns = int(episode.stamps_ns[t])
            for topic, data in _step_messages(episode, t, ns):
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
    missing = [k for k in REQUIRED_METADATA_KEYS if k not in meta]
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


@dataclasses.dataclass(frozen=True)
class _Shapes:
    """The array sizes the metadata promises; checked before anything is allocated for them."""

    num_steps: int
    h: int
    w: int
    state_dim: int
    action_dim: int
    chunk_len: int

    @classmethod
    def parse(cls, meta: dict[str, str]) -> _Shapes:
        num_steps = _shape_int(_json_field(meta, "num_steps"), "num_steps", 1)
        shapes = _json_field(meta, "shapes")
        if not isinstance(shapes, dict) or not isinstance(shapes.get("image_hw"), list) or len(shapes["image_hw"]) != 2:
            raise _Problem(f"metadata 'shapes' is malformed: {shapes!r}")
        return cls(
            num_steps,
            _shape_int(shapes["image_hw"][0], "image_hw[0]", 1),
            _shape_int(shapes["image_hw"][1], "image_hw[1]", 1),
            _shape_int(shapes.get("state_dim"), "state_dim", 0),
            _shape_int(shapes.get("action_dim"), "action_dim", 1),
            _shape_int(shapes.get("chunk_len"), "chunk_len", 1),
        )


class _Steps:
    """The per-step arrays of an episode being read, filled message by message."""

    def __init__(self, shapes: _Shapes):
        n, h, w, a = shapes.num_steps, shapes.h, shapes.w, shapes.action_dim
        self.num_steps, self.h, self.w = n, h, w
        self.images = np.empty((n, h, w, 3), np.uint8)
        self.states = np.empty((n, shapes.state_dim), np.float32)
        self.actions = np.empty((n, a), np.float32)
        self.chunks = np.empty((n, shapes.chunk_len, a), np.float32)
        self.actors = np.empty(n, np.uint8)
        self.versions = np.empty(n, np.int64)
        self.stamps = np.empty(0, np.int64)  # the image log times, set once every message is read
        self.multiarrays = {STATE_TOPIC: self.states, ACTION_TOPIC: self.actions, CHUNK_TOPIC: self.chunks}
        # The bytes before the floats of a multiarray written by this module: a message starting with them
        # (and of the right length) needs no CDR decode.
        self.layout_prefix = {
            topic: cdr.encode_multiarray(np.zeros(arr.shape[1:], np.float32), MULTIARRAY_LABELS[topic])[
                : -arr[0].nbytes or None
            ]
            for topic, arr in self.multiarrays.items()
        }

    def put(self, topic: str, t: int, record) -> None:
        """Decode the message of `topic` at step t into its array, checking it against the metadata."""
        what = f"topic {topic} step {t}"
        if topic == IMAGE_TOPIC:
            self._put_image(t, record, what)
        elif topic in self.multiarrays:
            self._put_multiarray(topic, t, record.data, what)
        elif topic == ACTOR_TOPIC:
            self.actors[t] = cdr.decode_scalar(record.data, what, "u8")
        else:
            self.versions[t] = cdr.decode_scalar(record.data, what, "i64")

    def _put_image(self, t: int, record, what: str) -> None:
        h, w = self.h, self.w
        stamp, height, width, encoding, step, pixels = cdr.decode_image(record.data, what)
        if (height, width, encoding, step) != (h, w, "rgb8", w * 3) or pixels.size != h * w * 3:
            raise _Problem(
                f"{what}: image {width}x{height} {encoding!r} step {step} with {pixels.size} bytes, "
                f"expected {w}x{h} 'rgb8' step {w * 3}"
            )
        if stamp != record.log_time:
            raise _Problem(f"{what}: header stamp {stamp} != log time {record.log_time}")
        self.images[t] = pixels.reshape(h, w, 3)

    def _put_multiarray(self, topic: str, t: int, data: bytes, what: str) -> None:
        target = self.multiarrays[topic]
        prefix = self.layout_prefix[topic]
        if len(data) == len(prefix) + target[0].nbytes and data.startswith(prefix):
            # Fast path: the exact layout this module writes, so only the floats vary.
            target[t] = np.frombuffer(data, "<f4", offset=len(prefix)).reshape(target.shape[1:])
            return
        dims, values = cdr.decode_multiarray(data, what)
        if dims != target.shape[1:] or values.size != int(np.prod(target.shape[1:])):
            raise _Problem(f"{what}: array dims {dims} with {values.size} values, expected {target.shape[1:]}")
        target[t] = values.reshape(target.shape[1:])


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


def _read_steps(reader, topics: dict[int, str], steps: _Steps) -> None:
    """Decode every message into `steps`: exactly one per topic and step, all of a step at the same log time."""
    num_steps = steps.num_steps
    next_step = dict.fromkeys(TOPIC_TYPES, 0)
    log_times = {topic: np.empty(num_steps, np.int64) for topic in TOPIC_TYPES}
    for _schema, channel, record in reader.iter_messages(log_time_order=False):
        topic = topics[channel.id]
        t = next_step[topic]
        if t >= num_steps:
            raise _Problem(f"topic {topic} has more than {num_steps} messages")
        next_step[topic] = t + 1
        log_times[topic][t] = record.log_time
        steps.put(topic, t, record)
    short = {tp: n for tp, n in next_step.items() if n != num_steps}
    if short:
        raise _Problem(f"topics have fewer messages than {num_steps} steps: {short}")
    stamps = log_times[IMAGE_TOPIC]
    for topic, times in log_times.items():
        if not np.array_equal(times, stamps):
            t = int(np.flatnonzero(times != stamps)[0])
            raise _Problem(f"topic {topic} step {t}: log time {times[t]} != image stamp {stamps[t]}")
    steps.stamps = stamps


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
        shapes = _Shapes.parse(meta)
        topics = _check_channels(summary, shapes.num_steps)
        steps = _Steps(shapes)
        _read_steps(reader, topics, steps)
    return _episode_from(meta, steps)


def _episode_from(meta: dict[str, str], steps: _Steps) -> Episode:
    """The episode of the read metadata and steps, validated and checked against the recorded content hash."""
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
        images=steps.images,
        states=steps.states,
        actions=steps.actions,
        actors=steps.actors,
        policy_versions=steps.versions,
        proposed_chunks=steps.chunks,
        stamps_ns=steps.stamps,
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
    except (_Problem, cdr.CdrError) as e:
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
    return {k: (v if k in TEXT_METADATA_KEYS else json.loads(v)) for k, v in meta.items()}
