"""Writing and reading episode files: the format of episode_format.py, CDR messages from cdr.py.

read_episode validates everything (CRCs, profile, schemas, message counts, shapes, stamps, content hash),
so a file it returns is a complete, intact episode; anything else is an EpisodeFileError naming the file.
The messages are checked and decoded into arrays by episode_payload.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

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
from sop_ros.core.episodes.episode_limits import DEFAULT_EPISODE_LIMITS, EpisodeLimits
from sop_ros.core.episodes.episode_payload import (
    FormatProblem,
    StepArrays,
    StepShapes,
    check_channels,
    check_chunk_sizes,
    json_field,
    read_steps,
    shape_int,
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


def _check_magic(f) -> int:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    if size < 2 * len(MCAP_MAGIC):
        raise FormatProblem(f"file too small ({size} bytes) to be an MCAP file")
    f.seek(0)
    if f.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
        raise FormatProblem("not an MCAP file (bad leading magic)")
    f.seek(-len(MCAP_MAGIC), os.SEEK_END)
    if f.read(len(MCAP_MAGIC)) != MCAP_MAGIC:
        raise FormatProblem("truncated or unfinished MCAP file (no trailing magic)")
    f.seek(0)
    return size


def _parse_metadata(reader) -> dict[str, str]:
    records = {m.name: m.metadata for m in reader.iter_metadata()}
    if METADATA_NAME not in records:
        raise FormatProblem(f"no '{METADATA_NAME}' metadata record (found {sorted(records)})")
    meta = dict(records[METADATA_NAME])
    missing = [k for k in REQUIRED_METADATA_KEYS if k not in meta]
    if missing:
        raise FormatProblem(f"metadata is missing fields {missing}")
    if meta["format"] != FORMAT_NAME:
        raise FormatProblem(f"metadata format is {meta['format']!r}, expected {FORMAT_NAME!r}")
    version = json_field(meta, "format_version")
    if version != FORMAT_VERSION:
        raise FormatProblem(f"unsupported episode format version {version!r} (this reader reads {FORMAT_VERSION})")
    return meta


def _read(path: Path, limits: EpisodeLimits) -> Episode:
    with open(path, "rb") as f:
        file_size = _check_magic(f)
        reader = make_reader(f, validate_crcs=True)
        header = reader.get_header()
        if header.profile != "ros2":
            raise FormatProblem(f"MCAP profile is {header.profile!r}, expected 'ros2'")
        summary = reader.get_summary()
        if summary is None:
            raise FormatProblem("MCAP file has no summary section")
        meta = _parse_metadata(reader)
        shapes = StepShapes.parse(meta, limits)  # declared sizes bounded before anything is allocated
        topics = check_channels(summary, shapes.num_steps)
        check_chunk_sizes(summary, shapes, limits, file_size)
        steps = StepArrays(shapes)
        read_steps(reader, topics, steps)
    return _episode_from(meta, steps, limits)


def _episode_from(meta: dict[str, str], steps: StepArrays, limits: EpisodeLimits) -> Episode:
    """The episode of the read metadata and steps, validated and checked against the recorded content hash."""
    success = json_field(meta, "success")
    try:
        label_source = LabelSource(meta["label_source"])
    except ValueError:
        raise FormatProblem(f"metadata label_source {meta['label_source']!r} is unknown") from None
    if len(meta["instruction"]) > limits.max_instruction_chars:
        raise FormatProblem(
            f"metadata instruction has {len(meta['instruction'])} characters, above the limit of "
            f"{limits.max_instruction_chars}"
        )
    reasons = json_field(meta, "intervention_reasons")
    if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
        raise FormatProblem("metadata 'intervention_reasons' must be a list of strings")
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
        start_ns=shape_int(json_field(meta, "start_ns"), "start_ns", 0),
        end_ns=shape_int(json_field(meta, "end_ns"), "end_ns", 0),
        intervention_reasons=tuple(reasons),
    )
    ep.validate()
    actual = episode_content_hash(ep)
    if actual != meta["content_hash"]:
        raise FormatProblem(f"content hash mismatch: metadata says {meta['content_hash']}, payload gives {actual}")
    segments = [[sg.start_step, sg.end_step, sg.reason] for sg in ep.intervention_segments]
    if json_field(meta, "intervention_segments") != segments:
        raise FormatProblem("metadata 'intervention_segments' disagree with the per-step actors")
    return ep


def read_episode(path: str | Path, limits: EpisodeLimits = DEFAULT_EPISODE_LIMITS) -> Episode:
    """Read and fully validate an episode file (CRCs, profile, schemas, counts, shapes, content hash).

    Raises EpisodeFileError naming the file and the problem for anything that is not a complete,
    intact episode file, or that declares more than `limits` allow (checked before allocating).
    """
    path = Path(path)
    try:
        return _read(path, limits)
    except (FormatProblem, cdr.CdrError) as e:
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
    except FormatProblem as e:
        raise EpisodeFileError(f"{path}: {e}") from None
    except FileNotFoundError:
        raise EpisodeFileError(f"{path}: no such file") from None
    except Exception as e:  # noqa: BLE001
        raise EpisodeFileError(f"{path}: corrupt or unreadable MCAP ({type(e).__name__}: {e})") from e
    return {k: (v if k in TEXT_METADATA_KEYS else json.loads(v)) for k, v in meta.items()}
