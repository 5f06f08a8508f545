"""TLS, mutual TLS, bearer tokens (hashed, revocable) and per-robot authorisation on a real learner."""

from __future__ import annotations

import itertools
import json
import os

import grpc
import pytest
from test_link_support import FAST_RETRY, make_episode, running_learner

from sop_ros.cli import main as sop_main
from sop_ros.core.episodes.episode_file import file_sha256
from sop_ros.core.storage.spool import Spool
from sop_ros.link.certs import CredentialsLayout, init_credentials
from sop_ros.link.channel import LinkClient, LinkClientConfig
from sop_ros.link.protos import fleet_pb2, ingest_pb2
from sop_ros.link.uploader import EpisodeUploader

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def creds(tmp_path_factory) -> CredentialsLayout:
    return init_credentials(tmp_path_factory.mktemp("creds"), ["robot1", "robot2", "robot3"])


def _tls_learner(tmp_path, creds: CredentialsLayout, mtls: bool = False):
    return running_learner(
        tmp_path / "learner",
        insecure=False,
        tls_cert=creds.learner_cert,
        tls_key=creds.learner_key,
        tokens_file=creds.tokens_file,
        client_ca=creds.ca_cert if mtls else None,
    )


def _link(
    creds: CredentialsLayout,
    address: str,
    robot: str | None = "robot1",
    client_cert_of: str | None = None,
    token: str | None = None,
) -> LinkClient:
    cert_dir = creds.robot_dir(client_cert_of) if client_cert_of else None
    config = LinkClientConfig(
        address=address,
        ca_cert=creds.ca_cert,
        client_cert=cert_dir / "client.crt" if cert_dir else None,
        client_key=cert_dir / "client.key" if cert_dir else None,
        token_file=creds.robot_dir(robot) / "token" if robot and token is None else None,
        token=token,
    )
    return LinkClient.connect(config)


_EPISODE_SEEDS = itertools.count(1000)  # every _begin a fresh episode id


def _begin(link: LinkClient, tmp_path, robot_id: str = "robot1", metadata_robot: str | None = None):
    spool = Spool(tmp_path / f"spool-{robot_id}-{os.urandom(3).hex()}", 1 << 30)
    entry = spool.write(make_episode(robot_id, seed=next(_EPISODE_SEEDS)))
    meta = ingest_pb2.EpisodeMetadata(
        episode_id=entry.episode_id,
        robot_id=metadata_robot or robot_id,
        task_id="reach-v3",
        size_bytes=os.path.getsize(entry.path),
        sha256=file_sha256(entry.path),
    )
    return link.ingest.BeginEpisode(
        ingest_pb2.BeginEpisodeRequest(metadata=meta), metadata=link.metadata, timeout=5
    ), spool


def _code(fn) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        fn()
    return err.value.code()


def test_tokens_file_holds_only_hashes(creds):
    token = (creds.robot_dir("robot1") / "token").read_text().strip()
    text = creds.tokens_file.read_text()
    assert token not in text and token.split(".")[2] not in text
    assert {e["principal"] for e in json.loads(text)["tokens"]} == {"robot1", "robot2", "robot3", "operator"}
    assert oct(creds.tokens_file.stat().st_mode & 0o777) == "0o600"


def test_tls_with_token_uploads(tmp_path, creds):
    with _tls_learner(tmp_path, creds) as learner:
        spool = Spool(tmp_path / "spool", 1 << 30)
        spool.write(make_episode("robot1"))
        uploader = EpisodeUploader(_link(creds, f"localhost:{learner.port}"), spool, "robot1", retry=FAST_RETRY)
        assert uploader.drain(timeout_s=20) == 1
        assert learner.episode_store.count() == 1


def test_missing_wrong_and_revoked_tokens_are_refused(tmp_path, creds):
    with _tls_learner(tmp_path, creds) as learner:
        address = f"localhost:{learner.port}"
        assert _code(lambda: _begin(_link(creds, address, robot=None), tmp_path)) == grpc.StatusCode.UNAUTHENTICATED
        assert (
            _code(lambda: _begin(_link(creds, address, token="sop1.deadbeefdeadbeef.nottherealsecret"), tmp_path))
            == grpc.StatusCode.UNAUTHENTICATED
        )
        real = (creds.robot_dir("robot1") / "token").read_text().strip()
        tampered = real[:-2] + ("AA" if not real.endswith("AA") else "BB")
        assert _code(lambda: _begin(_link(creds, address, token=tampered), tmp_path)) == grpc.StatusCode.UNAUTHENTICATED
        link2 = _link(creds, address, robot="robot2")
        assert not _begin(link2, tmp_path, "robot2")[0].already_stored  # works before revocation
        assert sop_main(["certs", "revoke", "robot2", "--dir", str(creds.root)]) == 0
        with pytest.raises(grpc.RpcError) as err:
            _begin(link2, tmp_path, "robot2")  # the very next call, same channel
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in err.value.details()
        assert not _begin(_link(creds, address), tmp_path)[0].already_stored  # robot1 unaffected


def test_robot_cannot_upload_as_another_robot(tmp_path, creds):
    with _tls_learner(tmp_path, creds) as learner:
        link1 = _link(creds, f"localhost:{learner.port}", robot="robot1")
        # Declaring another robot in the metadata:
        assert _code(lambda: _begin(link1, tmp_path, "robot2")) == grpc.StatusCode.PERMISSION_DENIED
        # Declaring itself but carrying a file recorded by robot2: refused at commit, nothing stored.
        spool = Spool(tmp_path / "spool-forged", 1 << 30)
        entry = spool.write(make_episode("robot2"))
        data = entry.path.read_bytes()
        meta = ingest_pb2.EpisodeMetadata(
            episode_id=entry.episode_id,
            robot_id="robot1",
            task_id="reach-v3",
            size_bytes=len(data),
            sha256=file_sha256(entry.path),
        )
        link1.ingest.BeginEpisode(ingest_pb2.BeginEpisodeRequest(metadata=meta), metadata=link1.metadata, timeout=5)
        link1.ingest.UploadChunks(
            iter([ingest_pb2.EpisodeChunk(episode_id=entry.episode_id, offset=0, data=data)]),
            metadata=link1.metadata,
            timeout=5,
        )
        commit = ingest_pb2.CommitEpisodeRequest(episode_id=entry.episode_id, sha256=meta.sha256, robot_id="robot1")
        assert (
            _code(lambda: link1.ingest.CommitEpisode(commit, metadata=link1.metadata, timeout=5))
            == grpc.StatusCode.PERMISSION_DENIED
        )
        assert learner.episode_store.count() == 0
        # Robots may not read fleet status; the operator token may.
        assert (
            _code(
                lambda: link1.fleet.GetFleetStatus(
                    fleet_pb2.GetFleetStatusRequest(), metadata=link1.metadata, timeout=5
                )
            )
            == grpc.StatusCode.PERMISSION_DENIED
        )
        operator = _link(
            creds, f"localhost:{learner.port}", token=(creds.operator_dir("operator") / "token").read_text().strip()
        )
        assert (
            operator.fleet.GetFleetStatus(
                fleet_pb2.GetFleetStatusRequest(), metadata=operator.metadata, timeout=5
            ).episodes_stored
            == 0
        )


def test_an_episode_id_belongs_to_the_robot_that_began_it(tmp_path, creds):
    with _tls_learner(tmp_path, creds) as learner:
        address = f"localhost:{learner.port}"
        link1, link3 = _link(creds, address, robot="robot1"), _link(creds, address, robot="robot3")
        spool = Spool(tmp_path / "spool-owner", 1 << 30)
        entry = spool.write(make_episode("robot3", seed=7))
        data = entry.path.read_bytes()
        meta = ingest_pb2.EpisodeMetadata(
            episode_id=entry.episode_id,
            robot_id="robot3",
            task_id="reach-v3",
            size_bytes=len(data),
            sha256=file_sha256(entry.path),
        )
        link3.ingest.BeginEpisode(ingest_pb2.BeginEpisodeRequest(metadata=meta), metadata=link3.metadata, timeout=5)
        half = len(data) // 2
        link3.ingest.UploadChunks(
            iter([ingest_pb2.EpisodeChunk(episode_id=entry.episode_id, offset=0, data=data[:half])]),
            metadata=link3.metadata,
            timeout=5,
        )
        # robot1 names robot3's upload in progress (robot2 may be revoked by an earlier test): refused at Begin
        # and at Commit, and robot3's bytes stay.
        theirs = ingest_pb2.EpisodeMetadata()
        theirs.CopyFrom(meta)
        theirs.robot_id = "robot1"
        begin = ingest_pb2.BeginEpisodeRequest(metadata=theirs)
        assert _code(lambda: link1.ingest.BeginEpisode(begin, metadata=link1.metadata, timeout=5)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        commit = ingest_pb2.CommitEpisodeRequest(episode_id=entry.episode_id, sha256=meta.sha256, robot_id="robot1")
        assert _code(lambda: link1.ingest.CommitEpisode(commit, metadata=link1.metadata, timeout=5)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        resumed = link3.ingest.BeginEpisode(
            ingest_pb2.BeginEpisodeRequest(metadata=meta), metadata=link3.metadata, timeout=5
        )
        assert resumed.committed_offset == half  # robot3 resumes where it was
        assert learner.episode_store.count() == 0


def test_plaintext_client_cannot_talk_to_tls_learner(tmp_path, creds):
    with _tls_learner(tmp_path, creds) as learner:
        token = (creds.robot_dir("robot1") / "token").read_text().strip()
        plain = LinkClient.connect(LinkClientConfig(address=f"127.0.0.1:{learner.port}", insecure=True, token=token))
        assert _code(lambda: _begin(plain, tmp_path)) == grpc.StatusCode.UNAVAILABLE
        assert learner.episode_store.count() == 0


def test_mutual_tls(tmp_path, creds):
    with _tls_learner(tmp_path, creds, mtls=True) as learner:
        address = f"localhost:{learner.port}"
        assert not _begin(_link(creds, address, client_cert_of="robot1"), tmp_path)[0].already_stored
        assert _code(lambda: _begin(_link(creds, address), tmp_path)) == grpc.StatusCode.UNAVAILABLE  # no client cert
        # robot3's certificate with robot1's token: the identities disagree. (robot2's certificate may have been
        # revoked by an earlier test: `sop certs revoke --dir` revokes tokens and certificate.)
        assert (
            _code(lambda: _begin(_link(creds, address, client_cert_of="robot3"), tmp_path))
            == grpc.StatusCode.PERMISSION_DENIED
        )


def test_tls_learner_requires_explicit_insecure_for_plaintext(tmp_path):
    from sop_ros.link.server import LearnerServerConfig

    with pytest.raises(ValueError, match="insecure=True"):
        LearnerServerConfig(address="127.0.0.1:0")
    with pytest.raises(ValueError, match="insecure=True"):
        LinkClientConfig(address="127.0.0.1:1")


def test_revocation_reaches_certificate_only_robots_and_ends_their_open_streams(tmp_path, creds):
    import time

    from sop_ros.link.certs import add_robot
    from sop_ros.link.protos import policy_pb2

    add_robot(creds.root, "robot-cert-only")
    with running_learner(
        tmp_path / "learner",
        insecure=False,
        tls_cert=creds.learner_cert,
        tls_key=creds.learner_key,
        client_ca=creds.ca_cert,  # mutual TLS, no tokens file: the certificate is the credential
    ) as learner:
        address = f"localhost:{learner.port}"
        link = _link(creds, address, robot=None, client_cert_of="robot-cert-only")
        assert not _begin(link, tmp_path, "robot-cert-only")[0].already_stored
        watch = link.policy.WatchCheckpoints(
            policy_pb2.WatchCheckpointsRequest(robot_id="robot-cert-only"), metadata=link.metadata, timeout=60
        )
        assert sop_main(["certs", "revoke", "robot-cert-only", "--dir", str(creds.root)]) == 0
        revoked_at = time.monotonic()
        with pytest.raises(grpc.RpcError) as err:
            _begin(link, tmp_path, "robot-cert-only")  # the next call
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED and "revoked" in err.value.details()
        with pytest.raises(grpc.RpcError) as err:
            next(watch)  # no checkpoint to announce: the stream only ends because the robot was revoked
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert time.monotonic() - revoked_at < 10
        # Other robots' certificates still work; revoking again finds nothing new to revoke.
        assert not _begin(_link(creds, address, robot=None, client_cert_of="robot1"), tmp_path)[0].already_stored
        assert sop_main(["certs", "revoke", "robot-cert-only", "--dir", str(creds.root)]) == 2
