"""Who is calling: bearer tokens (hashed at rest, revocable) and the TLS client certificate.

Tokens look like `sop1.<key_id>.<secret>`. The learner's tokens file keeps only the sha256 of
each token (a 256-bit random secret needs no slow KDF) next to the principal it names and
its role; verification compares digests with hmac.compare_digest. The file is re-read when
its (mtime, size, inode) changes, so `sop certs revoke` takes effect on a robot's next call; the same
holds for the list of revoked client certificates (sop_ros.link.revocation).

Identities and what they may do:
- robot: upload/commit/heartbeat only as itself (token principal == the robot id in the request).
- operator: read fleet status; may not upload.
- anonymous: only when the learner runs with neither tokens nor client certificates, which
  requires an explicit insecure mode; it may do everything (trusted network, tests).
When the caller also presented a TLS client certificate (mutual TLS), a robot token is
accepted only if the certificate's common name is the same robot.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from typing import Optional

import grpc

from sop_ros.core.storage.durable_files import atomic_write_bytes
from sop_ros.link.options import AUTH_METADATA_KEY
from sop_ros.link.revocation import RevokedCertificates

_LOGGER = logging.getLogger(__name__)
TOKEN_PREFIX = "sop1"
TOKENS_FILE_FORMAT = "sop-tokens-v1"


class Role(str, enum.Enum):
    ROBOT = "robot"
    OPERATOR = "operator"
    ANONYMOUS = "anonymous"


class TokensFileError(ValueError):
    """The tokens file is unreadable or malformed."""


@dataclasses.dataclass(frozen=True)
class TokenRecord:
    key_id: str
    principal: str  # robot id or operator name
    role: Role
    sha256: str  # hex digest of the whole token string
    revoked: bool = False
    created_ns: int = 0


@dataclasses.dataclass(frozen=True)
class Identity:
    principal: Optional[str]  # None for anonymous
    role: Role

    def may_act_as_robot(self, robot_id: str) -> bool:
        return self.role == Role.ANONYMOUS or (self.role == Role.ROBOT and self.principal == robot_id)

    def may_read_fleet(self) -> bool:
        return self.role in (Role.OPERATOR, Role.ANONYMOUS)


ANONYMOUS = Identity(principal=None, role=Role.ANONYMOUS)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(principal: str, role: Role) -> tuple[str, TokenRecord]:
    """A fresh token (shown once, given to the robot) and the record the learner keeps."""
    if not principal or any(c.isspace() for c in principal):
        raise ValueError(f"token principal must be a non-empty name without spaces, got {principal!r}")
    key_id = secrets.token_hex(8)
    token = f"{TOKEN_PREFIX}.{key_id}.{secrets.token_urlsafe(32)}"
    return token, TokenRecord(key_id, principal, Role(role), hash_token(token), False, time.time_ns())


def read_tokens_file(path: Path) -> list[TokenRecord]:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise TokensFileError(f"cannot read tokens file {path}: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != TOKENS_FILE_FORMAT or not isinstance(doc.get("tokens"), list):
        raise TokensFileError(
            f"tokens file {path}: expected an object with format={TOKENS_FILE_FORMAT!r} and a 'tokens' list"
        )
    records = []
    for i, item in enumerate(doc["tokens"]):
        try:
            records.append(
                TokenRecord(
                    str(item["key_id"]),
                    str(item["principal"]),
                    Role(item["role"]),
                    str(item["sha256"]),
                    bool(item.get("revoked", False)),
                    int(item.get("created_ns", 0)),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TokensFileError(f"tokens file {path}: entry {i} is malformed ({exc!r})") from exc
    return records


def write_tokens_file(path: Path, records: list[TokenRecord]) -> None:
    doc = {"format": TOKENS_FILE_FORMAT, "tokens": [{**dataclasses.asdict(r), "role": r.role.value} for r in records]}
    atomic_write_bytes(Path(path), (json.dumps(doc, indent=2) + "\n").encode())
    os.chmod(path, 0o600)


def revoke(path: Path, principal: str) -> int:
    """Mark every token of `principal` revoked; returns how many were newly revoked."""
    records = read_tokens_file(path)
    changed = [
        dataclasses.replace(r, revoked=True) if r.principal == principal and not r.revoked else r for r in records
    ]
    count = sum(1 for old, new in zip(records, changed) if old != new)
    if count:
        write_tokens_file(path, changed)
    return count


class TokenTable:
    """The tokens file, re-read whenever it changes on disk (checked on every lookup)."""

    def __init__(self, path: Path):
        self._path = Path(path)
        self._lock = threading.Lock()
        self._signature: tuple[int, int, int] | None = None
        self._by_key: dict[str, TokenRecord] = {}
        self._refresh()

    def _refresh(self) -> None:
        st = os.stat(self._path)
        signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        if signature == self._signature:
            return
        records = read_tokens_file(self._path)
        self._by_key = {r.key_id: r for r in records}
        self._signature = signature
        _LOGGER.info("loaded %d tokens (%d revoked) from %s", len(records), sum(r.revoked for r in records), self._path)

    def verify(self, token: str) -> TokenRecord:
        """The record of a valid token; raises PermissionError with a readable reason otherwise."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
            raise PermissionError("malformed bearer token")
        with self._lock:
            try:
                self._refresh()
            except (OSError, TokensFileError) as exc:
                # Keep serving with the last good table rather than locking the fleet out.
                _LOGGER.error("tokens file %s unreadable, keeping the previous table: %s", self._path, exc)
            record = self._by_key.get(parts[1])
        if record is None or not hmac.compare_digest(record.sha256, hash_token(token)):
            raise PermissionError("unknown bearer token")
        if record.revoked:
            raise PermissionError(f"token of {record.principal!r} has been revoked")
        return record


def _peer_common_name(context: grpc.ServicerContext) -> Optional[str]:
    names = context.auth_context().get("x509_common_name")
    return names[0].decode() if names else None


class Authenticator:
    """Turns a call's metadata and TLS peer into an Identity, or aborts the call."""

    def __init__(self, tokens_file: Optional[Path], allow_anonymous: bool, revoked_certs: Optional[Path] = None):
        self._tokens = TokenTable(tokens_file) if tokens_file else None
        self._allow_anonymous = allow_anonymous
        self._revoked = RevokedCertificates(revoked_certs) if revoked_certs else None

    def _check_certificate(self, context: grpc.ServicerContext) -> None:
        pems = context.auth_context().get("x509_pem_cert") if self._revoked is not None else None
        if not pems:
            return
        try:
            principal = self._revoked.revoked_principal(pems[0])
        except (OSError, ValueError) as exc:
            _LOGGER.error("revocation list unreadable, refusing certificate clients: %s", exc)
            context.abort(grpc.StatusCode.UNAVAILABLE, "the learner cannot read its certificate revocation list")
        if principal is not None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"the client certificate of {principal!r} has been revoked")

    def identify(self, context: grpc.ServicerContext) -> Identity:
        common_name = _peer_common_name(context)
        self._check_certificate(context)
        if self._tokens is None:
            if common_name:
                return Identity(common_name, Role.ROBOT)
            if self._allow_anonymous:
                return ANONYMOUS
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "this learner requires a client certificate")
        header = dict(context.invocation_metadata()).get(AUTH_METADATA_KEY, "")
        if not isinstance(header, str) or not header.startswith("Bearer "):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, f"missing '{AUTH_METADATA_KEY}: Bearer <token>' metadata")
        try:
            record = self._tokens.verify(header[len("Bearer ") :].strip())
        except PermissionError as exc:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        if record.role == Role.ROBOT and common_name is not None and common_name != record.principal:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"client certificate is for {common_name!r} but the token is for {record.principal!r}",
            )
        return Identity(record.principal, record.role)

    def admission_key(self, context, robot_id: str) -> Optional[str]:
        """Whose share of the learner a call uses, without refusing anything (the handler authenticates):
        the certificate's or the valid token's principal; unauthenticated callers share one key per
        connection. Anonymous calls (no credentials at all) use the robot id they claim, and None (no
        per-robot share, only the learner's total) when they claim none: robots in one process share
        one connection, so the connection identifies no robot."""
        common_name = _peer_common_name(context)
        if self._tokens is None and common_name:
            return f"robot {common_name}"
        if self._tokens is not None:
            header = dict(context.invocation_metadata()).get(AUTH_METADATA_KEY, "")
            if isinstance(header, str) and header.startswith("Bearer "):
                try:
                    record = self._tokens.verify(header[len("Bearer ") :].strip())
                    return f"{record.role.value} {record.principal}"
                except PermissionError:
                    pass
        elif self._allow_anonymous:
            return f"robot {robot_id[:128]}" if robot_id else None
        return f"unauthenticated peer {context.peer()}"

    def require_robot(self, context: grpc.ServicerContext, robot_id: str) -> Identity:
        """Identify the caller and check it may act as `robot_id`."""
        identity = self.identify(context)
        if not identity.may_act_as_robot(robot_id):
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{identity.role.value} {identity.principal!r} may not act as robot {robot_id!r}",
            )
        return identity
