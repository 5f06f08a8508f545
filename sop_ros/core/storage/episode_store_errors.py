"""What an episode store reports to an uploader: errors the ingest service maps to protocol status codes."""

from __future__ import annotations

import enum


class EpisodeStoreError(Exception):
    """Base class of store errors that an ingest service reports to the uploading robot."""


class OffsetMismatchError(EpisodeStoreError):
    """An upload chunk does not start where the staged bytes end; resume from `expected_offset`."""

    def __init__(self, episode_id: str, offset: int, expected_offset: int):
        super().__init__(f"episode {episode_id}: chunk at offset {offset}, but {expected_offset} bytes are staged")
        self.episode_id = episode_id
        self.offset = offset
        self.expected_offset = expected_offset


class RejectionCode(enum.Enum):
    """Why an upload was refused: callers (the ingest service) map these to protocol status codes."""

    HASH_MISMATCH = "hash_mismatch"  # the bytes received do not hash to the announced sha256
    INVALID_FILE = "invalid_file"  # the bytes are not a valid episode file (read_episode refused them)
    EPISODE_ID_MISMATCH = "episode_id_mismatch"  # the file holds another episode than the upload names
    ROBOT_MISMATCH = "robot_mismatch"  # the file was recorded by another robot than the uploader
    TOO_LARGE = "too_large"  # the upload exceeds max_episode_bytes
    CONFLICT = "conflict"  # the episode id is stored already, with different content
    NOTHING_STAGED = "nothing_staged"  # commit without any uploaded bytes


class EpisodeRejectedError(EpisodeStoreError):
    """The uploaded episode cannot be stored (bad hash, invalid file, identity mismatch, conflict)."""

    def __init__(self, episode_id: str, code: RejectionCode, reason: str):
        super().__init__(f"episode {episode_id} rejected: {reason}")
        self.episode_id = episode_id
        self.code = RejectionCode(code)
        self.reason = reason
