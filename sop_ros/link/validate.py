"""Request field checks shared by the services: abort with a status that names the bad field."""

from __future__ import annotations

import re
import uuid

import grpc

_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")  # robot ids, task ids, fleet names


REASON_METADATA_KEY = "sop-reason"  # machine-readable reason next to the readable message
REASON_EPISODE_TOO_LARGE = "episode-too-large"  # RESOURCE_EXHAUSTED that retrying cannot fix


def fail(context: grpc.ServicerContext, code: grpc.StatusCode, message: str, reason: str = ""):
    if reason:
        context.set_trailing_metadata(((REASON_METADATA_KEY, reason),))
    context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def episode_id(context: grpc.ServicerContext, value: str, field: str = "episode_id") -> str:
    try:
        parsed = uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        fail(context, grpc.StatusCode.INVALID_ARGUMENT, f"{field}: not a UUID: {value[:80]!r}")
    if str(parsed) != value:
        fail(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{field}: use the canonical lowercase UUID form ({parsed}), got {value[:80]!r}",
        )
    return value


def sha256_hex(context: grpc.ServicerContext, value: str, field: str = "sha256") -> str:
    if not _SHA256_HEX.fullmatch(value):
        fail(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{field}: expected 64 lowercase hex characters, got {value[:80]!r}",
        )
    return value


def name(context: grpc.ServicerContext, value: str, field: str) -> str:
    if not _NAME.fullmatch(value):
        fail(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{field}: expected 1-128 characters [A-Za-z0-9_.-] starting alphanumeric, got {value[:80]!r}",
        )
    return value
