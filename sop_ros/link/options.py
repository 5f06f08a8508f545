"""Every transport knob of the fleet link in one place: chunk size, message limits, keepalive, deadlines.

Why these values:
- Chunks are 1 MiB: measured on loopback (research/stack-spike.md section 4) 1 MiB chunks
  moved 600-1100 MB/s while 8 MiB chunks were slower, and they stay far below gRPC's default
  4 MiB receive limit. The receive limit is set explicitly to chunk + headroom for the
  envelope, so an oversized message fails fast with RESOURCE_EXHAUSTED on either side.
- Keepalive pings every 20 s (timeout 10 s) detect a dead peer on a long-lived stream
  (checkpoint watch, slow upload) instead of hanging forever; the server permits client
  pings down to 10 s so it never answers with GOAWAY "too_many_pings".
- Every client call carries a deadline; streams get a deadline scaled to their size.
"""

from __future__ import annotations

import dataclasses

DEFAULT_LEARNER_ADDRESS = "127.0.0.1:50051"  # loopback unless told otherwise; robots connect here by default
PROTOCOL_VERSION = 1  # sop.v1 wire revision; bump on incompatible message changes
CHUNK_BYTES = 1 << 20  # largest payload in one EpisodeChunk / CheckpointChunk
MAX_MESSAGE_BYTES = CHUNK_BYTES + (64 << 10)  # chunk + protobuf envelope headroom
MAX_EPISODE_BYTES = 512 << 20  # an episode file larger than this is refused (RESOURCE_EXHAUSTED)

KEEPALIVE_TIME_MS = 20_000
KEEPALIVE_TIMEOUT_MS = 10_000
MIN_CLIENT_PING_INTERVAL_MS = 10_000

AUTH_METADATA_KEY = "authorization"  # value: "Bearer <token>"


@dataclasses.dataclass(frozen=True)
class Deadlines:
    """Seconds allowed per call. Streams add time per MiB moved so big transfers are not cut off."""

    unary_s: float = 10.0
    stream_base_s: float = 30.0
    stream_per_mib_s: float = 2.0  # 0.5 MB/s floor: slower than that is treated as a dead link

    def for_bytes(self, num_bytes: int) -> float:
        return self.stream_base_s + self.stream_per_mib_s * num_bytes / CHUNK_BYTES

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if getattr(self, field.name) <= 0:
                raise ValueError(f"Deadlines.{field.name} must be > 0, got {getattr(self, field.name)}")


def channel_options() -> list[tuple[str, int]]:
    """Options for every robot/operator channel (grpc.secure_channel / grpc.insecure_channel)."""
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Reconnect quickly after a learner restart; the uploader adds its own backoff on top.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 5_000),
        ("grpc.enable_retries", 0),  # retries are explicit in the client (resume from the committed offset)
    ]


def server_options() -> list[tuple[str, int]]:
    """Options for the learner's grpc.server."""
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
        ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
        ("grpc.http2.max_ping_strikes", 0),
    ]


def worker_threads(expected_robots: int) -> int:
    """The learner's worker pool: each robot may run an upload and a download at once, plus unary calls.

    LeRobot's learner (3 workers) starved as soon as one actor held a stream. Checkpoint watches,
    health and reflection no longer take a worker (they wait on the server's event loop), and each
    robot's calls are capped by admission (sop_ros.link.admission), so a fleet larger than
    expected only queues for a worker; it is never refused for want of one.
    """
    if expected_robots < 1:
        raise ValueError(f"expected_robots must be >= 1, got {expected_robots}")
    return 3 * expected_robots + 8
