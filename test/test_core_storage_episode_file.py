"""Episode MCAP file: exact round trip, ROS 2 interop, atomic write, and clear errors for bad files."""

from __future__ import annotations

import dataclasses
import io
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap.writer import Writer as McapWriter

from sop_ros.bench.episode_io import bench_episode_io
from sop_ros.bench.synthetic_episodes import synthetic_episode
from sop_ros.core.episodes import cdr
from sop_ros.core.episodes import episode_file as ef
from sop_ros.core.episodes import episode_format as fmt
from sop_ros.core.episodes.episode import EpisodeValidationError, LabelSource
from sop_ros.core.episodes.episode_file import (
    EpisodeFileError,
    file_sha256,
    read_episode,
    read_episode_metadata,
    write_episode,
)
from sop_ros.core.episodes.hashing import EPISODE_ARRAY_FIELDS, episode_content_hash
from sop_ros.core.storage.durable_files import is_temp_name

pytestmark = pytest.mark.timeout(60)


def assert_same_episode(a, b) -> None:
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, f.name
            np.testing.assert_array_equal(x, y, err_msg=f.name)  # NaN == NaN here
        else:
            assert x == y, f.name


def test_round_trip_is_exact_for_every_field(tmp_path):
    ep = synthetic_episode(40, 16, seed=1, human_steps=(5, 12), instruction="pick up the red block — ünïcode")
    ep = dataclasses.replace(ep, policy_versions=np.arange(40, dtype=np.int64) // 10 + 2**40)
    path = write_episode(ep, tmp_path / "ep.mcap")
    back = read_episode(path)
    assert_same_episode(ep, back)
    assert back.intervention_segments == ep.intervention_segments
    assert np.isnan(back.proposed_chunks[5:12]).all() and not np.isnan(back.proposed_chunks[:5]).any()
    meta = read_episode_metadata(path)
    assert meta["episode_id"] == ep.episode_id and meta["content_hash"] == episode_content_hash(ep)
    assert meta["intervention_segments"] == [[5, 12, "operator took over"]]
    assert file_sha256(path) == __import__("hashlib").sha256(path.read_bytes()).hexdigest()


def test_unlabelled_episode_and_equal_stamps_round_trip(tmp_path):
    ep = synthetic_episode(6, 4, success=None, human_steps=(0, 0))
    ep = dataclasses.replace(ep, stamps_ns=np.array([5, 5, 5, 7, 7, 9], np.int64), start_ns=5, end_ns=9)
    back = read_episode(write_episode(ep, tmp_path / "ep.mcap"))
    assert_same_episode(ep, back)
    assert back.success is None and back.label_source is LabelSource.NONE


def test_file_is_a_ros2_mcap_with_embedded_schemas(tmp_path):
    ep = synthetic_episode(12, 8)
    path = write_episode(ep, tmp_path / "ep.mcap")
    with open(path, "rb") as f:
        reader = make_reader(f, validate_crcs=True)
        assert reader.get_header().profile == "ros2"
        summary = reader.get_summary()
        topics = {ch.topic: summary.schemas[ch.schema_id].name for ch in summary.channels.values()}
        assert topics == fmt.TOPIC_TYPES
        assert all(c.compression == "zstd" for c in summary.chunk_indexes)
        assert set(summary.statistics.channel_message_counts.values()) == {12}
    # A generic ROS 2 decoder (what Foxglove-like tools use) decodes every message from the embedded text.
    from mcap_ros2.decoder import DecoderFactory

    with open(path, "rb") as f:
        decoded = list(make_reader(f, decoder_factories=[DecoderFactory()]).iter_decoded_messages(log_time_order=False))
    images = [m for _s, ch, _r, m in decoded if ch.topic == fmt.IMAGE_TOPIC]
    assert images[3].encoding == "rgb8" and images[3].height == 8
    np.testing.assert_array_equal(np.frombuffer(images[3].data, np.uint8).reshape(8, 8, 3), ep.images[3])
    chunk = [m for _s, ch, _r, m in decoded if ch.topic == fmt.CHUNK_TOPIC][0]
    assert [d.size for d in chunk.layout.dim] == [10, 4]
    np.testing.assert_array_equal(np.asarray(chunk.data, np.float32).reshape(10, 4), ep.proposed_chunks[0])
    versions = [m.data for _s, ch, _r, m in decoded if ch.topic == fmt.VERSION_TOPIC]
    assert versions == ep.policy_versions.tolist()


def test_hand_encoded_cdr_is_byte_identical_to_mcap_ros2():
    from mcap_ros2.writer import Writer as Ros2Writer

    img = np.random.default_rng(0).integers(0, 256, (3, 5, 3), dtype=np.uint8)
    arr = np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32)
    ns = 1_700_000_000_123_456_789
    buf = io.BytesIO()
    w = Ros2Writer(buf)
    schemas = {n: w.register_msgdef(n, t) for n, t in fmt.MSGDEFS.items()}
    w.write_message(
        "/i",
        schemas["sensor_msgs/msg/Image"],
        {
            "header": {"stamp": {"sec": ns // 10**9, "nanosec": ns % 10**9}, "frame_id": cdr.IMAGE_FRAME_ID},
            "height": 3,
            "width": 5,
            "encoding": "rgb8",
            "is_bigendian": 0,
            "step": 15,
            "data": img.tobytes(),
        },
        log_time=1,
    )
    w.write_message(
        "/a",
        schemas["std_msgs/msg/Float32MultiArray"],
        {
            "layout": {
                "dim": [{"label": "horizon", "size": 2, "stride": 6}, {"label": "action", "size": 3, "stride": 3}],
                "data_offset": 0,
            },
            "data": arr.reshape(-1).tolist(),
        },
        log_time=1,
    )
    w.write_message("/u", schemas["std_msgs/msg/UInt8"], {"data": 1}, log_time=1)
    w.write_message("/q", schemas["std_msgs/msg/Int64"], {"data": -(2**40)}, log_time=1)
    w.finish()
    buf.seek(0)
    reference = [r.data for _s, _c, r in make_reader(buf).iter_messages(log_time_order=False)]
    ours = [
        cdr.encode_image(ns, img),
        cdr.encode_multiarray(arr, ("horizon", "action")),
        cdr.encode_uint8(1),
        cdr.encode_int64(-(2**40)),
    ]
    assert ours == reference


def test_msgdefs_match_installed_ros2_interfaces():
    """The embedded schema texts are the installed .msg files (comments stripped), when ROS wheels are present."""
    share = Path(sys.prefix) / "share"
    if not (share / "sensor_msgs" / "msg" / "Image.msg").exists():
        pytest.skip("ROS 2 message packages are not installed in this environment")

    def fields(pkg: str, name: str) -> list[tuple[str, str]]:
        out = []
        for line in (share / pkg / "msg" / f"{name}.msg").read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                typ, field = line.split()[:2]
                out.append((typ.split("/")[-1], field))
        return out

    for text in fmt.MSGDEFS.values():
        blocks = text.split("=" * 80 + "\n")
        root_type = next(t for t, v in fmt.MSGDEFS.items() if v == text)
        for i, block in enumerate(blocks):
            lines = block.strip().splitlines()
            full = root_type if i == 0 else lines.pop(0).removeprefix("MSG: ")
            pkg, name = full.split("/")[0], full.split("/")[-1]
            ours = [(line.split()[0].split("/")[-1], line.split()[1]) for line in lines]
            assert ours == fields(pkg, name), full


def test_rclpy_deserializes_our_messages():
    """Our CDR bytes decode with ROS 2's own type support (skipped where rclpy isn't installed)."""
    os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    serialization = pytest.importorskip("rclpy.serialization")
    msg_mod = pytest.importorskip("sensor_msgs.msg")
    std_msgs = pytest.importorskip("std_msgs.msg")
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    m = serialization.deserialize_message(cdr.encode_image(1_700_000_000_000_000_123, img), msg_mod.Image)
    assert (m.height, m.width, m.encoding, m.header.stamp.nanosec) == (2, 3, "rgb8", 123)
    assert bytes(m.data) == img.tobytes()
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    m = serialization.deserialize_message(cdr.encode_multiarray(arr, ("horizon", "action")), std_msgs.Float32MultiArray)
    assert [d.size for d in m.layout.dim] == [2, 3] and list(m.data) == arr.reshape(-1).tolist()
    assert serialization.deserialize_message(cdr.encode_int64(-7), std_msgs.Int64).data == -7


def test_write_refuses_invalid_episode_and_leaves_nothing(tmp_path):
    ep = synthetic_episode(5, 4)
    bad = dataclasses.replace(ep, actions=ep.actions.astype(np.float64))
    with pytest.raises(EpisodeValidationError, match="actions"):
        write_episode(bad, tmp_path / "ep.mcap")
    assert list(tmp_path.iterdir()) == []


def test_killed_writer_leaves_only_a_temp_file(tmp_path):
    """SIGKILL a writer mid-episode: the final name never exists; only a recognisable temp file remains."""
    target = tmp_path / "ep.mcap"
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from sop_ros.bench.synthetic_episodes import synthetic_episode
        from sop_ros.core.episodes import cdr, episode_file as ef
        ep = synthetic_episode(400, 64)
        real = cdr.encode_image
        def slow(ns, img):
            if ns - int(ep.stamps_ns[0]) == 100 * 100_000_000:
                print("mid", flush=True)
                time.sleep(60)
            return real(ns, img)
        cdr.encode_image = slow
        ef.write_episode(ep, Path({str(target)!r}))
    """)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout.readline().strip() == b"mid"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    leftovers = list(tmp_path.iterdir())
    assert not target.exists()
    assert len(leftovers) == 1 and is_temp_name(leftovers[0].name) and leftovers[0].stat().st_size > 0
    with pytest.raises(EpisodeFileError, match="trailing magic"):
        read_episode(leftovers[0])


@pytest.fixture(scope="module")
def good_file(tmp_path_factory) -> Path:
    return write_episode(synthetic_episode(30, 16, seed=7), tmp_path_factory.mktemp("good") / "ep.mcap")


def _damaged(tmp_path: Path, good: Path, mutate) -> Path:
    data = bytearray(good.read_bytes())
    data = mutate(data)
    p = tmp_path / "bad.mcap"
    p.write_bytes(bytes(data))
    return p


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d[: len(d) // 2], "trailing magic"),
        (lambda d: d[:-1], "trailing magic"),
        (lambda d: d[:5], "too small"),
        (lambda d: bytearray(b"garbage!" * 100), "not an MCAP file"),
        (lambda d: bytearray(b""), "too small"),
    ],
    ids=["half", "minus-one-byte", "tiny", "garbage", "empty"],
)
def test_truncated_or_garbage_file_is_rejected(tmp_path, good_file, mutate, message):
    bad = _damaged(tmp_path, good_file, mutate)
    with pytest.raises(EpisodeFileError, match=message) as info:
        read_episode(bad)
    assert str(bad) in str(info.value)


def test_flipped_byte_in_payload_is_detected(tmp_path, good_file):
    def flip(d):
        d[len(d) // 3] ^= 0x40
        return d

    with pytest.raises(EpisodeFileError, match="(?i)crc|corrupt") as info:
        read_episode(_damaged(tmp_path, good_file, flip))
    assert str(tmp_path) in str(info.value)


def test_every_single_byte_flip_in_the_summary_is_caught_or_harmless(tmp_path, good_file):
    """Flips outside chunks (summary, metadata, footer) either raise EpisodeFileError or change nothing decoded."""
    reference = read_episode(good_file)
    data = good_file.read_bytes()
    rng = np.random.default_rng(0)
    for pos in rng.choice(np.arange(len(data) - 2000, len(data)), size=60, replace=False):
        d = bytearray(data)
        d[pos] ^= 0xFF
        p = tmp_path / "flip.mcap"
        p.write_bytes(bytes(d))
        try:
            back = read_episode(p)
        except EpisodeFileError:
            continue
        assert_same_episode(reference, back)


def _write_custom(path: Path, ep, *, topic_types=None, skip_last=None, meta_override=None, image_encoding="rgb8"):
    """Write an episode like write_episode but with one deliberate defect."""
    topic_types = topic_types or fmt.TOPIC_TYPES
    with open(path, "wb") as f:
        w = McapWriter(f)
        w.start(profile="ros2", library="test")
        defs = dict(fmt.MSGDEFS, **{"std_msgs/msg/String": "string data\n"})
        sids = {n: w.register_schema(name=n, encoding="ros2msg", data=t.encode()) for n, t in defs.items()}
        ch = {
            tp: w.register_channel(topic=tp, message_encoding="cdr", schema_id=sids[typ])
            for tp, typ in topic_types.items()
        }
        for t in range(ep.num_steps):
            ns = int(ep.stamps_ns[t])
            img = cdr.encode_image(ns, ep.images[t])
            if image_encoding != "rgb8":
                img = img.replace(b"rgb8", image_encoding.encode())
            msgs = {
                fmt.IMAGE_TOPIC: img,
                fmt.STATE_TOPIC: cdr.encode_multiarray(ep.states[t], ("state",)),
                fmt.ACTION_TOPIC: cdr.encode_multiarray(ep.actions[t], ("action",)),
                fmt.CHUNK_TOPIC: cdr.encode_multiarray(ep.proposed_chunks[t], ("horizon", "action")),
                fmt.ACTOR_TOPIC: cdr.encode_uint8(int(ep.actors[t])),
                fmt.VERSION_TOPIC: cdr.encode_int64(int(ep.policy_versions[t])),
            }
            for tp, data in msgs.items():
                if skip_last == tp and t == ep.num_steps - 1:
                    continue
                w.add_message(channel_id=ch[tp], log_time=ns, publish_time=ns, sequence=t, data=data)
        meta = ef._episode_metadata(ep)
        meta.update(meta_override or {})
        w.add_metadata(fmt.METADATA_NAME, meta)
        w.finish()
    return path


def test_custom_writer_without_defects_is_accepted(tmp_path):
    ep = synthetic_episode(8, 4)
    assert_same_episode(ep, read_episode(_write_custom(tmp_path / "ok.mcap", ep)))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(topic_types=dict(fmt.TOPIC_TYPES, **{fmt.ACTION_TOPIC: "std_msgs/msg/String"})),
            "topic /action has schema std_msgs/msg/String",
        ),
        (dict(skip_last=fmt.ACTOR_TOPIC), "topic /actor has 7 messages"),
        (
            dict(meta_override={"shapes": '{"image_hw": [4, 5], "state_dim": 39, "action_dim": 4, "chunk_len": 10}'}),
            "image 4x4 'rgb8'",
        ),
        (
            dict(meta_override={"shapes": '{"image_hw": [4, 4], "state_dim": 38, "action_dim": 4, "chunk_len": 10}'}),
            "array dims \\(39,\\)",
        ),
        (dict(image_encoding="bgr8"), "'bgr8'"),
        (dict(meta_override={"content_hash": "0" * 64}), "content hash mismatch"),
        (dict(meta_override={"label_source": "oracle"}), "label_source 'oracle' is unknown"),
        (dict(meta_override={"format_version": "2"}), "unsupported episode format version 2"),
        (dict(meta_override={"success": "null"}), "invalid episode: episode field 'label_source'"),
        (dict(meta_override={"episode_id": "not-a-uuid"}), "episode_id"),
    ],
    ids=[
        "wrong-schema",
        "missing-message",
        "wrong-image-shape",
        "wrong-state-dim",
        "wrong-encoding",
        "hash",
        "label",
        "version",
        "validate",
        "bad-id",
    ],
)
def test_format_violations_are_named(tmp_path, kwargs, message):
    path = _write_custom(tmp_path / "bad.mcap", synthetic_episode(8, 4), **kwargs)
    with pytest.raises(EpisodeFileError, match=message) as info:
        read_episode(path)
    assert str(path) in str(info.value)


def test_missing_file_is_an_episode_file_error(tmp_path):
    with pytest.raises(EpisodeFileError, match="no such file"):
        read_episode(tmp_path / "nope.mcap")


def test_content_hash_covers_every_array_and_metadata():
    ep = synthetic_episode(4, 4)
    base = episode_content_hash(ep)
    for name in EPISODE_ARRAY_FIELDS:
        arr = getattr(ep, name).copy()
        flat = arr.reshape(-1)
        flat[-1] = flat[-1] + 1 if arr.dtype.kind != "f" else np.float32(7.5)
        assert episode_content_hash(dataclasses.replace(ep, **{name: arr})) != base, name
    assert episode_content_hash(dataclasses.replace(ep, instruction="other")) != base
    assert episode_content_hash(dataclasses.replace(ep, success=False)) != base


def test_bench_episode_io_reports_positive_times():
    figures = bench_episode_io(num_steps=20, image_hw=16, repeats=1)
    assert figures["write_ms"] > 0 and figures["read_ms"] > 0 and figures["file_bytes"] > 20 * 16 * 16 * 3
