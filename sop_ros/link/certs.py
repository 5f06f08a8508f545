"""Fleet credentials: a private CA, the learner's TLS certificate, per-robot client certificates and tokens.

Layout written by `init_credentials(out_dir, ...)` (and `sop certs init`):

    ca.crt ca.key                 the fleet CA (keep ca.key offline once the fleet is issued)
    learner.crt learner.key       learner server certificate (SAN: localhost, 127.0.0.1, given hosts)
    tokens.json                   learner side: sha256 of every token, principal, role, revoked flag
    revoked_certs.json            learner side: serials of revoked client certificates (sop certs revoke)
    robots/<id>/client.crt        robot client certificate (CN = robot id) for mutual TLS
    robots/<id>/client.key
    robots/<id>/token             robot bearer token (secret; the learner keeps only its hash)
    operators/<name>/token        operator bearer token (fleet status)

Keys are ECDSA P-256, written 0600 via temp file + fsync + rename.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sop_ros.core.storage.durable_files import atomic_write_bytes
from sop_ros.link import auth
from sop_ros.link.revocation import REVOKED_CERTS_FILE, revoke_certificate

VALIDITY_DAYS = 825


@dataclasses.dataclass(frozen=True)
class CredentialsLayout:
    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def learner_cert(self) -> Path:
        return self.root / "learner.crt"

    @property
    def learner_key(self) -> Path:
        return self.root / "learner.key"

    @property
    def tokens_file(self) -> Path:
        return self.root / "tokens.json"

    @property
    def revoked_certs_file(self) -> Path:
        return self.root / REVOKED_CERTS_FILE

    def robot_dir(self, robot_id: str) -> Path:
        return self.root / "robots" / robot_id

    def operator_dir(self, name: str) -> Path:
        return self.root / "operators" / name


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    os.chmod(path, 0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sop_ros fleet"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(subject: x509.Name, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def create_ca(common_name: str = "sop_ros fleet CA") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(_name(common_name), _name(common_name), key.public_key(), VALIDITY_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue_certificate(
    ca_key, ca_cert: x509.Certificate, common_name: str, server_hosts: Sequence[str] = ()
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A leaf certificate: a server certificate when server_hosts is given, else a client certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_hosts else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        _builder(_name(common_name), ca_cert.subject, key.public_key(), VALIDITY_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server_hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName([_san(h) for h in server_hosts]), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _learner_hosts(extra: Iterable[str]) -> list[str]:
    hosts = ["localhost", "127.0.0.1", "::1"]
    return hosts + [h for h in extra if h and h not in hosts]


def init_credentials(
    out_dir: Path, robots: Sequence[str], learner_hosts: Sequence[str] = (), operators: Sequence[str] = ("operator",)
) -> CredentialsLayout:
    """Create a CA, learner certificate, robot certificates and all tokens; refuses to overwrite a CA."""
    layout = CredentialsLayout(Path(out_dir))
    if layout.ca_key.exists():
        raise FileExistsError(f"{layout.ca_key} already exists; use add-robot, or choose an empty directory")
    if len(set(robots)) != len(robots) or not robots:
        raise ValueError(f"robots must be a non-empty list of distinct ids, got {list(robots)}")
    layout.root.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = create_ca()
    _write_private(layout.ca_key, _key_pem(ca_key))
    atomic_write_bytes(layout.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    key, cert = issue_certificate(ca_key, ca_cert, "sop-learner", _learner_hosts(learner_hosts))
    _write_private(layout.learner_key, _key_pem(key))
    atomic_write_bytes(layout.learner_cert, cert.public_bytes(serialization.Encoding.PEM))
    records = [_issue_robot(layout, ca_key, ca_cert, robot_id) for robot_id in robots]
    for name in operators:
        token, record = auth.new_token(name, auth.Role.OPERATOR)
        _write_private(layout.operator_dir(name) / "token", (token + "\n").encode())
        records.append(record)
    auth.write_tokens_file(layout.tokens_file, records)
    return layout


def _issue_robot(layout: CredentialsLayout, ca_key, ca_cert: x509.Certificate, robot_id: str) -> auth.TokenRecord:
    token, record = auth.new_token(robot_id, auth.Role.ROBOT)
    key, cert = issue_certificate(ca_key, ca_cert, robot_id)
    robot_dir = layout.robot_dir(robot_id)
    _write_private(robot_dir / "client.key", _key_pem(key))
    atomic_write_bytes(robot_dir / "client.crt", cert.public_bytes(serialization.Encoding.PEM))
    _write_private(robot_dir / "token", (token + "\n").encode())
    return record


def add_robot(out_dir: Path, robot_id: str) -> CredentialsLayout:
    """Issue a certificate and token for one more robot from an existing CA (a new token if it exists)."""
    layout = CredentialsLayout(Path(out_dir))
    ca_key = serialization.load_pem_private_key(layout.ca_key.read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    record = _issue_robot(layout, ca_key, ca_cert, robot_id)
    auth.write_tokens_file(layout.tokens_file, auth.read_tokens_file(layout.tokens_file) + [record])
    return layout


def revoke_robot(out_dir: Path, robot_id: str) -> tuple[int, bool]:
    """Revoke a robot's tokens and its client certificate; returns (tokens newly revoked, certificate newly revoked)."""
    layout = CredentialsLayout(Path(out_dir))
    tokens = auth.revoke(layout.tokens_file, robot_id) if layout.tokens_file.exists() else 0
    cert = layout.robot_dir(robot_id) / "client.crt"
    certificate = cert.exists() and revoke_certificate(layout.revoked_certs_file, cert.read_bytes(), robot_id)
    return tokens, certificate
