"""Revoked client certificates: a list the learner re-reads when it changes, checked on every call.

Revoking a robot's token does nothing to a learner that authenticates by client certificate alone
(mutual TLS without a tokens file), and the CA cannot un-sign a certificate. So `sop certs revoke`
also adds the robot certificate's serial number to revoked_certs.json next to the CA; the learner
refuses any peer certificate on that list from the next call on, and ends its open streams.
A missing file is an empty list.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Optional

from cryptography import x509

from sop_ros.core.storage.durable_files import atomic_write_bytes

REVOKED_CERTS_FILE = "revoked_certs.json"
REVOKED_CERTS_FORMAT = "sop-revoked-certs-v1"
_SERIAL_CACHE = 1024  # peer certificates whose serial is remembered (parsed once each)


class RevocationListError(ValueError):
    """The revocation list is unreadable or malformed."""


def certificate_serial(cert_pem: bytes) -> str:
    return format(x509.load_pem_x509_certificate(cert_pem).serial_number, "x")


def _entries(path: Path) -> list[dict]:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise RevocationListError(f"cannot read {path}: {exc}") from exc
    entries = doc.get("revoked") if isinstance(doc, dict) and doc.get("format") == REVOKED_CERTS_FORMAT else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "serial" in e for e in entries):
        raise RevocationListError(f"{path}: expected format={REVOKED_CERTS_FORMAT!r} and a 'revoked' list of entries")
    return entries


def read_revoked(path: Path) -> dict[str, str]:
    """serial (hex) -> principal of every revoked certificate; {} when the file does not exist."""
    return {str(e["serial"]): str(e.get("principal", "")) for e in _entries(path)}


def revoke_certificate(path: Path, cert_pem: bytes, principal: str) -> bool:
    """Add the certificate to the list; False when it was already revoked."""
    serial, entries = certificate_serial(cert_pem), _entries(path)
    if any(str(e["serial"]) == serial for e in entries):
        return False
    entries.append({"serial": serial, "principal": principal, "revoked_ns": time.time_ns()})
    doc = {"format": REVOKED_CERTS_FORMAT, "revoked": entries}
    atomic_write_bytes(Path(path), (json.dumps(doc, indent=2) + "\n").encode())
    return True


class RevokedCertificates:
    """The revocation list as the learner checks it: re-read when the file changes (stat on every check)."""

    def __init__(self, path: Path):
        self._path = Path(path)
        self._lock = threading.Lock()
        self._signature: Optional[tuple[int, int, int]] = None
        self._revoked: dict[str, str] = {}
        self._serials: dict[str, str] = {}  # sha256 of a peer certificate -> its serial

    def _refresh(self) -> None:
        try:
            st = os.stat(self._path)
            signature = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            signature = None
        if signature != self._signature:
            self._revoked = read_revoked(self._path) if signature else {}
            self._signature = signature

    def revoked_principal(self, cert_pem: bytes) -> Optional[str]:
        """The principal of a revoked certificate, or None when it is not revoked."""
        digest = hashlib.sha256(cert_pem).hexdigest()
        with self._lock:
            self._refresh()  # an unreadable list raises: refusing beats admitting a revoked robot
            serial = self._serials.get(digest)
            if serial is None:
                serial = certificate_serial(cert_pem)
                if len(self._serials) >= _SERIAL_CACHE:
                    self._serials.clear()
                self._serials[digest] = serial
            return self._revoked.get(serial)
