"""The learner's gRPC server: Ingest, Policy and Fleet services plus health and reflection.

    service = LearnerService(config, *open_stores(data_dir, config.max_episode_bytes))
    server, port = create_server(service)      # bound, not started: tests bind 127.0.0.1:0
    server.start(); ...; service.stop(server)   # drains in-flight calls for config.shutdown_grace_s

The server is grpc.aio on an event loop thread of its own (sop_ros.link.aio_runner): checkpoint
watches wait on the loop without a thread, the other calls run on a worker pool, and every call is
admitted per robot first (sop_ros.link.admission), so a fleet larger than the pool, or one robot
flooding it, leaves the other robots and the health check served.

The trainer living in the same process hooks in with `service.on_episode_committed.append(fn)`
and announces a new checkpoint with `service.publish_checkpoint(manifest)`; sop_ros.learner
composes the whole learner process from these parts.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Optional

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sop_ros.core.episodes.episode_limits import DEFAULT_EPISODE_LIMITS, EpisodeLimits
from sop_ros.core.storage.checkpoint_store import CheckpointStore
from sop_ros.core.storage.data_layout import CHECKPOINTS_DIR, EPISODES_DIR
from sop_ros.core.storage.episode_store import EpisodeStore
from sop_ros.link import options
from sop_ros.link.admission import Admission, AdmissionLimits
from sop_ros.link.aio_handlers import add_service
from sop_ros.link.aio_runner import AioServer
from sop_ros.link.auth import Authenticator
from sop_ros.link.fleet_service import CompatibilityPolicy, FleetServicer
from sop_ros.link.ingest_service import IngestServicer, StagingQuota
from sop_ros.link.log_limits import limit_grpc_logs
from sop_ros.link.policy_service import PolicyServicer, latest_checkpoint
from sop_ros.link.protos import SERVICE_NAMES, fleet_pb2, ingest_pb2, policy_pb2
from sop_ros.link.revocation import REVOKED_CERTS_FILE

_LOGGER = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LearnerServerConfig:
    """How the learner listens and whom it trusts. Secure by default: TLS plus tokens or client certs."""

    address: str = options.DEFAULT_LEARNER_ADDRESS
    tls_cert: Optional[Path] = None
    tls_key: Optional[Path] = None
    client_ca: Optional[Path] = None  # set: mutual TLS, every client needs a certificate from this CA
    tokens_file: Optional[Path] = None  # hashed bearer tokens (sop certs init)
    # Revoked client certificates (sop certs revoke); None: revoked_certs.json next to client_ca.
    revoked_certs: Optional[Path] = None
    insecure: bool = False  # plaintext; with no tokens file also no authentication at all
    expected_robots: int = 8
    max_episode_bytes: int = options.MAX_EPISODE_BYTES
    # Declared bytes of begun, uncommitted uploads: a robot uploads one episode at a time (resumes re-begin the
    # same one), so a few episodes each; all robots together bound the staging disk.
    staging_quota_robot_bytes: int = 4 * options.MAX_EPISODE_BYTES
    staging_quota_total_bytes: int = 64 * options.MAX_EPISODE_BYTES
    stale_staging_s: float = 24 * 3600.0  # uploads untouched this long are removed (start-up and periodically)
    heartbeat_interval_ms: int = 1000
    shutdown_grace_s: float = 10.0
    admission: AdmissionLimits = AdmissionLimits()  # calls and watches one robot may hold at once
    compatibility: CompatibilityPolicy = CompatibilityPolicy()

    def __post_init__(self) -> None:
        if self.insecure and (self.tls_cert or self.tls_key or self.client_ca):
            raise ValueError("LearnerServerConfig: insecure=True contradicts tls_cert/tls_key/client_ca; choose one")
        if not self.insecure:
            if not (self.tls_cert and self.tls_key):
                raise ValueError(
                    "LearnerServerConfig: tls_cert and tls_key are required (or insecure=True for plaintext)"
                )
            if not (self.tokens_file or self.client_ca):
                raise ValueError(
                    "LearnerServerConfig: a TLS learner needs tokens_file or client_ca to authenticate robots"
                )
        if self.expected_robots < 1:
            raise ValueError(f"LearnerServerConfig.expected_robots must be >= 1, got {self.expected_robots}")
        for name in ("max_episode_bytes", "staging_quota_robot_bytes", "staging_quota_total_bytes", "stale_staging_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"LearnerServerConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.staging_quota_robot_bytes < self.max_episode_bytes:
            raise ValueError("LearnerServerConfig.staging_quota_robot_bytes must hold at least one max_episode_bytes")

    def revocation_list(self) -> Optional[Path]:
        if self.revoked_certs is not None:
            return Path(self.revoked_certs)
        return Path(self.client_ca).parent / REVOKED_CERTS_FILE if self.client_ca else None

    def server_credentials(self) -> Optional[grpc.ServerCredentials]:
        if self.insecure:
            return None
        pair = (Path(self.tls_key).read_bytes(), Path(self.tls_cert).read_bytes())
        ca = Path(self.client_ca).read_bytes() if self.client_ca else None
        return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)


class LearnerService:
    """The three sop.v1 servicers over one pair of stores, plus the hooks the trainer uses."""

    def __init__(self, config: LearnerServerConfig, episode_store: EpisodeStore, checkpoint_store: CheckpointStore):
        self.config = config
        self.episode_store = episode_store
        self.checkpoint_store = checkpoint_store
        self.auth = auth = Authenticator(
            config.tokens_file,
            allow_anonymous=config.insecure and not config.tokens_file,
            revoked_certs=config.revocation_list(),
        )
        quota = StagingQuota(config.staging_quota_robot_bytes, config.staging_quota_total_bytes)
        self.ingest = IngestServicer(episode_store, auth, config.max_episode_bytes, quota)
        self.policy = PolicyServicer(checkpoint_store, auth)
        self.fleet = FleetServicer(
            auth, config.compatibility, config.heartbeat_interval_ms, episode_store.count, self._latest_version
        )
        self.health = health.aio.HealthServicer()  # answered on the event loop, never queued behind workers
        self._server: Optional[AioServer] = None

    @property
    def on_episode_committed(self) -> list:
        """Callbacks `fn(stored_episode)` run after each acknowledged commit (exceptions are logged)."""
        return self.ingest.on_episode_committed

    def publish_checkpoint(self, manifest) -> bool:
        """Announce a checkpoint already in the CheckpointStore to every watching robot (newest only)."""
        announced = self.policy.publish(manifest)
        _LOGGER.info(
            "checkpoint %s %s", manifest.version, "announced" if announced else "not newer than the announced one"
        )
        return announced

    def _latest_version(self) -> int:
        latest = latest_checkpoint(self.checkpoint_store)
        return int(latest.version) if latest is not None else 0

    def set_serving(self, serving: bool) -> None:
        """What the health service answers (needs the server create_server made)."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING

        async def apply() -> None:
            for name in ("",) + SERVICE_NAMES:
                await self.health.set(name, status)

        if self._server is None:
            raise RuntimeError("LearnerService.set_serving: no server yet (create_server makes it)")
        self._server.call(apply())

    def stop(self, server: AioServer, grace_s: Optional[float] = None) -> None:
        """Refuse new calls, end checkpoint watches, let in-flight uploads finish within the grace period."""
        if not server.stopped:  # a second stop has nothing left to tell the health service
            self.set_serving(False)
        self.policy.close()
        server.stop(self.config.shutdown_grace_s if grace_s is None else grace_s).wait()


def create_server(service: LearnerService) -> tuple[AioServer, int]:
    """A bound (not started) server; returns it with the bound port (useful with port 0)."""
    config = service.config
    limit_grpc_logs()  # undecodable requests must not write one traceback each
    server = AioServer(options.worker_threads(config.expected_robots), options.server_options())
    try:
        runtime = server.new_runtime(Admission(config.admission), service.auth.admission_key)
        add_service(server.server, runtime, ingest_pb2, "Ingest", service.ingest)
        add_service(server.server, runtime, policy_pb2, "Policy", service.policy)
        add_service(server.server, runtime, fleet_pb2, "Fleet", service.fleet)
        health_pb2_grpc.add_HealthServicer_to_server(service.health, server.server)
        reflection.enable_server_reflection(
            SERVICE_NAMES + (health.SERVICE_NAME, reflection.SERVICE_NAME), server.server
        )
        credentials = config.server_credentials()
        if credentials is None:
            _LOGGER.warning(
                "INSECURE learner on %s: plaintext gRPC%s. Use only on a trusted network or for tests.",
                config.address,
                "" if config.tokens_file else " and NO authentication",
            )
        port = server.add_port(config.address, credentials)
        service._server = server
        service.set_serving(True)
    except BaseException:
        server.stop(0)
        raise
    return server, port


def open_stores(
    data_dir: Path,
    max_episode_bytes: int = options.MAX_EPISODE_BYTES,
    limits: EpisodeLimits = DEFAULT_EPISODE_LIMITS,
    task_ids: Optional[frozenset[str]] = None,
) -> tuple[EpisodeStore, CheckpointStore]:
    """The learner's stores; uploads must fit `limits` and (when given) be of one of `task_ids`."""
    data_dir = Path(data_dir)
    return (
        EpisodeStore(data_dir / EPISODES_DIR, max_episode_bytes=max_episode_bytes, limits=limits, task_ids=task_ids),
        CheckpointStore(data_dir / CHECKPOINTS_DIR),
    )
