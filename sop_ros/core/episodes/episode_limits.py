"""What an episode file may declare, checked before a byte is allocated for it.

An episode file's metadata declares its step count and array shapes; the reader allocates its
arrays from them. A file from a robot is untrusted: a 2 KB file declaring a huge state dimension
once made the learner allocate ~8 bytes per declared element and get killed by the kernel. So the
reader checks the declared shapes against EpisodeLimits first (FormatProblem: a clear refusal),
and the MCAP chunks' declared uncompressed sizes against what those shapes need (a small file that
would inflate to far more than its messages is a decompression bomb, refused before inflating).

The defaults bound any episode; a learner narrows them to its fleet's model (exact image size,
state and action dimensions), so nothing of another shape reaches its trainer.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

# Per message, beyond its payload: MCAP message record header and CDR headers (a generous bound).
_MESSAGE_OVERHEAD_BYTES = 256
_MESSAGES_PER_STEP = 6  # image, state, action, chunk, actor, version (episode_format.TOPIC_TYPES)
_METADATA_SLACK_BYTES = 1 << 20  # schemas, channels, metadata, indexes


class EpisodeLimitError(ValueError):
    """The declared sizes exceed the limits; the message names the field, the value and the limit."""


@dataclasses.dataclass(frozen=True)
class EpisodeLimits:
    max_steps: int = 100_000
    max_image_side: int = 4096
    max_vector_dim: int = 4096  # state_dim, action_dim
    max_chunk_len: int = 1024
    max_instruction_chars: int = 1000
    # Decoded arrays of one episode (images dominate): the memory one validation may take.
    max_decoded_bytes: int = 1 << 30
    # Exact shapes required (a learner's model); None: any within the bounds above.
    image_hw: Optional[tuple[int, int]] = None
    state_dim: Optional[int] = None
    action_dim: Optional[int] = None

    def __post_init__(self) -> None:
        for f in ("max_steps", "max_image_side", "max_vector_dim", "max_chunk_len", "max_decoded_bytes"):
            if getattr(self, f) < 1:
                raise ValueError(f"EpisodeLimits.{f}: must be >= 1, got {getattr(self, f)}")

    def check_shapes(self, num_steps: int, h: int, w: int, state_dim: int, action_dim: int, chunk_len: int) -> None:
        """Raise EpisodeLimitError unless the declared sizes are within the limits (and the exact shapes)."""
        for name, value, limit in (
            ("num_steps", num_steps, self.max_steps),
            ("image_hw[0]", h, self.max_image_side),
            ("image_hw[1]", w, self.max_image_side),
            ("state_dim", state_dim, self.max_vector_dim),
            ("action_dim", action_dim, self.max_vector_dim),
            ("chunk_len", chunk_len, self.max_chunk_len),
        ):
            if value > limit:
                raise EpisodeLimitError(f"metadata shape '{name}' = {value} exceeds the limit of {limit}")
        for name, value, required in (
            ("image_hw", (h, w), self.image_hw),
            ("state_dim", state_dim, self.state_dim),
            ("action_dim", action_dim, self.action_dim),
        ):
            if isinstance(required, list):
                required = tuple(required)
            if required is not None and value != required:
                raise EpisodeLimitError(f"metadata shape '{name}' = {value}, this learner's model takes {required}")
        decoded = decoded_bytes(num_steps, h, w, state_dim, action_dim, chunk_len)
        if decoded > self.max_decoded_bytes:
            raise EpisodeLimitError(
                f"the declared shapes decode to {decoded} bytes, above the limit of {self.max_decoded_bytes}"
            )

    def check_uncompressed(self, chunk_sizes: list[int], num_steps: int, decoded: int) -> None:
        """Raise EpisodeLimitError when the MCAP chunks would inflate to more than the declared messages need."""
        allowed = decoded + _MESSAGE_OVERHEAD_BYTES * _MESSAGES_PER_STEP * num_steps + _METADATA_SLACK_BYTES
        total = sum(chunk_sizes)
        if total > allowed or any(size > allowed for size in chunk_sizes):
            raise EpisodeLimitError(
                f"the MCAP chunks declare {total} uncompressed bytes, more than the {allowed} its declared shapes need"
            )


def decoded_bytes(num_steps: int, h: int, w: int, state_dim: int, action_dim: int, chunk_len: int) -> int:
    """Bytes of the decoded per-step arrays (uint8 images, float32 vectors, uint8 actor, int64 version, stamp)."""
    per_step = h * w * 3 + 4 * (state_dim + action_dim + chunk_len * action_dim) + 1 + 8 + 8
    return num_steps * per_step


DEFAULT_EPISODE_LIMITS = EpisodeLimits()
