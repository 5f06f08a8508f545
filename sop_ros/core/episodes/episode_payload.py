"""Reading an episode file's messages into arrays: the metadata's shapes, the channels, one message per topic and step.

episode_file.read_episode opens the file and checks its metadata; this module checks the channels against
the format (episode_format.py), decodes every message (cdr.py) into preallocated arrays and checks the
log times. Every violation is a FormatProblem, which episode_file reports as an EpisodeFileError.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from sop_ros.core.episodes import cdr
from sop_ros.core.episodes.episode_format import (
    ACTION_TOPIC,
    ACTOR_TOPIC,
    CHUNK_TOPIC,
    IMAGE_TOPIC,
    MULTIARRAY_LABELS,
    STATE_TOPIC,
    TOPIC_TYPES,
)
from sop_ros.core.episodes.episode_limits import EpisodeLimitError, EpisodeLimits, decoded_bytes


class FormatProblem(Exception):
    """A format violation; episode_file turns it into EpisodeFileError with the file name."""


def json_field(meta: dict[str, str], key: str) -> Any:
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as e:
        raise FormatProblem(f"metadata field '{key}' is not valid JSON: {e}") from None


def shape_int(value: Any, name: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise FormatProblem(f"metadata shape '{name}' must be an integer >= {minimum}, got {value!r}")
    return value


@dataclasses.dataclass(frozen=True)
class StepShapes:
    """The array sizes the metadata promises; checked before anything is allocated for them."""

    num_steps: int
    h: int
    w: int
    state_dim: int
    action_dim: int
    chunk_len: int

    @classmethod
    def parse(cls, meta: dict[str, str], limits: EpisodeLimits) -> StepShapes:
        num_steps = shape_int(json_field(meta, "num_steps"), "num_steps", 1)
        shapes = json_field(meta, "shapes")
        if not isinstance(shapes, dict) or not isinstance(shapes.get("image_hw"), list) or len(shapes["image_hw"]) != 2:
            raise FormatProblem(f"metadata 'shapes' is malformed: {str(shapes)[:200]}")
        parsed = cls(
            num_steps,
            shape_int(shapes["image_hw"][0], "image_hw[0]", 1),
            shape_int(shapes["image_hw"][1], "image_hw[1]", 1),
            shape_int(shapes.get("state_dim"), "state_dim", 0),
            shape_int(shapes.get("action_dim"), "action_dim", 1),
            shape_int(shapes.get("chunk_len"), "chunk_len", 1),
        )
        try:
            limits.check_shapes(*dataclasses.astuple(parsed))
        except EpisodeLimitError as exc:
            raise FormatProblem(str(exc)) from None
        return parsed

    @property
    def decoded_bytes(self) -> int:
        return decoded_bytes(*dataclasses.astuple(self))


class StepArrays:
    """The per-step arrays of an episode being read, filled message by message."""

    def __init__(self, shapes: StepShapes):
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
        # The bytes before the floats of a multiarray written by episode_file: a message starting with them
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
            raise FormatProblem(
                f"{what}: image {width}x{height} {encoding!r} step {step} with {pixels.size} bytes, "
                f"expected {w}x{h} 'rgb8' step {w * 3}"
            )
        if stamp != record.log_time:
            raise FormatProblem(f"{what}: header stamp {stamp} != log time {record.log_time}")
        self.images[t] = pixels.reshape(h, w, 3)

    def _put_multiarray(self, topic: str, t: int, data: bytes, what: str) -> None:
        target = self.multiarrays[topic]
        prefix = self.layout_prefix[topic]
        if len(data) == len(prefix) + target[0].nbytes and data.startswith(prefix):
            # Fast path: the exact layout episode_file writes, so only the floats vary.
            target[t] = np.frombuffer(data, "<f4", offset=len(prefix)).reshape(target.shape[1:])
            return
        dims, values = cdr.decode_multiarray(data, what)
        if dims != target.shape[1:] or values.size != int(np.prod(target.shape[1:])):
            raise FormatProblem(f"{what}: array dims {dims} with {values.size} values, expected {target.shape[1:]}")
        target[t] = values.reshape(target.shape[1:])


def check_chunk_sizes(summary, shapes: StepShapes, limits: EpisodeLimits, file_size: int) -> None:
    """Refuse, before inflating or allocating anything, a file whose chunks would inflate past what its declared
    messages need, or whose messages cannot hold the arrays its metadata declares (the arrays are allocated from
    the declaration: a small file declaring huge frames must not get them)."""
    sizes = [index.uncompressed_size for index in summary.chunk_indexes]
    try:
        limits.check_uncompressed(sizes, shapes.num_steps, shapes.decoded_bytes)
    except EpisodeLimitError as exc:
        raise FormatProblem(str(exc)) from None
    held = sum(sizes) if sizes else file_size  # unchunked: the messages are in the file as they are
    if shapes.decoded_bytes > held:
        raise FormatProblem(
            f"the declared shapes need {shapes.decoded_bytes} bytes of arrays but the file's messages hold at most "
            f"{held} bytes"
        )


def check_channels(summary, num_steps: int) -> dict[int, str]:
    """Map channel id -> topic after checking every topic, schema and message count."""
    by_topic = {ch.topic: ch for ch in summary.channels.values()}
    unexpected = sorted(set(by_topic) - set(TOPIC_TYPES))
    if unexpected:
        raise FormatProblem(f"unexpected topics {unexpected}")
    counts = summary.statistics.channel_message_counts if summary.statistics else {}
    for topic, typ in TOPIC_TYPES.items():
        ch = by_topic.get(topic)
        if ch is None:
            raise FormatProblem(f"topic {topic} is missing")
        schema = summary.schemas.get(ch.schema_id)
        if schema is None or schema.name != typ or schema.encoding != "ros2msg" or ch.message_encoding != "cdr":
            found = f"{schema.name} ({schema.encoding}/{ch.message_encoding})" if schema else "no schema"
            raise FormatProblem(f"topic {topic} has schema {found}, expected {typ} (ros2msg/cdr)")
        if counts.get(ch.id, -1) != num_steps:
            raise FormatProblem(
                f"topic {topic} has {counts.get(ch.id, 'no')} messages in the summary, expected {num_steps}"
            )
    return {ch.id: ch.topic for ch in summary.channels.values()}


def read_steps(reader, topics: dict[int, str], steps: StepArrays) -> None:
    """Decode every message into `steps`: exactly one per topic and step, all of a step at the same log time."""
    num_steps = steps.num_steps
    next_step = dict.fromkeys(TOPIC_TYPES, 0)
    log_times = {topic: np.empty(num_steps, np.int64) for topic in TOPIC_TYPES}
    for _schema, channel, record in reader.iter_messages(log_time_order=False):
        topic = topics[channel.id]
        t = next_step[topic]
        if t >= num_steps:
            raise FormatProblem(f"topic {topic} has more than {num_steps} messages")
        next_step[topic] = t + 1
        log_times[topic][t] = record.log_time
        steps.put(topic, t, record)
    short = {tp: n for tp, n in next_step.items() if n != num_steps}
    if short:
        raise FormatProblem(f"topics have fewer messages than {num_steps} steps: {short}")
    stamps = log_times[IMAGE_TOPIC]
    for topic, times in log_times.items():
        if not np.array_equal(times, stamps):
            t = int(np.flatnonzero(times != stamps)[0])
            raise FormatProblem(f"topic {topic} step {t}: log time {times[t]} != image stamp {stamps[t]}")
    steps.stamps = stamps
