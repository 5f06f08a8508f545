"""Bridge node: the robot's end of the fleet link, a thin rclpy wrapper of sop_ros.link.client.

- Uploads the episode spool oldest-first (EpisodeUploader: resumable, deletes an episode only
  after the learner's ack). A recorder's EpisodeStatus with UPLOAD_SPOOLED on `episode_status`
  wakes it (it also polls the spool); after each ack it publishes that episode's EpisodeStatus
  again with UPLOAD_ACKED.
- Follows the learner's checkpoint announcements into `cache_dir` (CheckpointFollower: newest
  only, resumable, sha256-verified) and announces each verified checkpoint on `policy_update`
  (PolicyUpdate, reliable + transient-local, depth 1) for the policy node, which swaps at an
  episode boundary. A checkpoint already in the cache is announced at startup, so a robot
  restarted without a learner runs its last policy.
- Registers with the learner (robot config, software version) and heartbeats (FleetMember).
- Publishes on `diagnostics` every `status_period_s`: `bridge` (upload, download, membership), `link`
  and `spool` (core.robot.health_checks: thresholds from config).
Credentials come from parameters (CA, client certificate + key, token file); plaintext only
with `insecure: true`, which the launchers set only when the fleet's learner is insecure.
A managed node (sop_ros/nodes/_lifecycle.py): configure connects (a channel, no call yet), activate
starts the uploader, follower and heartbeat threads, deactivate stops and joins them (an upload in
flight resumes from the learner's offset next time), cleanup closes the channel.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from pathlib import Path
from typing import Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from sop_ros import __version__
from sop_ros.core.episodes.episode_file import EpisodeFileError, read_episode_metadata
from sop_ros.core.robot.health_checks import link_check, spool_check
from sop_ros.core.storage.spool import Spool
from sop_ros.link.client import (
    CheckpointFollower,
    DownloadedCheckpoint,
    EpisodeUploader,
    FleetMember,
    LinkClient,
    LinkClientConfig,
    RobotDescription,
)
from sop_ros.link.protos import fleet_pb2
from sop_ros.msg import EpisodeStatus, PolicyUpdate
from sop_ros.nodes import _qos
from sop_ros.nodes._defaults import AT_LEAST_ONE, PERIOD_S, RATE_HZ, Params
from sop_ros.nodes._diagnostics import check_status
from sop_ros.nodes._lifecycle import ManagedNode
from sop_ros.nodes._runtime import run_nodes

_KNOWN_EPISODES = 1000  # SPOOLED statuses remembered for the ACKED re-publication
_STOP_TIMEOUT_S = 5.0
_LINK_LOGGER = "sop_ros.link"


class _RosLogHandler(logging.Handler):
    """Sends the link core's `logging` records (retries, refusals, downloads) to the node's ROS logger."""

    def __init__(self, node: Node):
        super().__init__(logging.INFO)
        self._logger = node.get_logger()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.name}: {self.format(record)}"
            if record.levelno >= logging.ERROR:
                self._logger.error(text)
            elif record.levelno >= logging.WARNING:
                self._logger.warning(text)
            else:
                self._logger.info(text)
        except Exception:  # noqa: BLE001 - logging must never break the link threads
            self.handleError(record)


def link_config(
    address: str,
    insecure: bool,
    ca_cert: str,
    token_file: str,
    client_cert: str,
    client_key: str,
    server_name_override: str = "",
) -> LinkClientConfig:
    """LinkClientConfig from string parameters ("" = unset); errors name the parameter."""

    def path(name: str, value: str) -> Optional[Path]:
        if not value:
            return None
        if not Path(value).is_file():
            raise ValueError(f"parameter '{name}': no such file {value}")
        return Path(value)

    files = {
        name: path(name, value)
        for name, value in (
            ("ca_cert", ca_cert),
            ("token_file", token_file),
            ("client_cert", client_cert),
            ("client_key", client_key),
        )
    }
    try:
        return LinkClientConfig(
            address=address, insecure=insecure, server_name_override=server_name_override or None, **files
        )
    except ValueError as exc:
        raise ValueError(
            f"bridge link parameters (address, insecure, ca_cert, token_file, client_cert, client_key): {exc}"
        ) from None


def _declare_link_config(p: Params) -> LinkClientConfig:
    """How to reach and trust the learner."""
    return link_config(
        address=p("address", "learner host:port"),
        insecure=p("insecure", "plaintext gRPC without TLS (only for a fleet whose learner is insecure)"),
        ca_cert=p("ca_cert", "CA certificate of the learner (TLS); empty with insecure"),
        token_file=p("token_file", "file with this robot's bearer token (empty = no token)"),
        client_cert=p("client_cert", "robot certificate for mutual TLS (with client_key)"),
        client_key=p("client_key", "robot private key for mutual TLS (with client_cert)"),
        server_name_override=p("server_name_override", "TLS server name to expect (empty = from the address)"),
    )


def _declare_description(p: Params, robot_id: str) -> RobotDescription:
    """The robot's config for the learner's compatibility handshake."""
    return RobotDescription(
        robot_id=robot_id,
        software_version=__version__,
        tasks=tuple(p("tasks", "task ids this robot runs (compatibility handshake)")),
        backend=p("backend", "sim or hardware (compatibility handshake)"),
        control_rate_hz=float(
            p("control_rate_hz", "control rate in Hz (compatibility handshake)", value_range=RATE_HZ)
        ),
        action_dim=int(p("action_dim", "dimension of one action (compatibility handshake)", value_range=AT_LEAST_ONE)),
        state_dim=int(
            p("state_dim", "dimension of the proprio state (compatibility handshake)", value_range=AT_LEAST_ONE)
        ),
    )


class BridgeNode(ManagedNode):
    def __init__(self, **kwargs):
        super().__init__("bridge", **kwargs)
        p = Params(self, "bridge")
        self.robot_id = p("robot_id", "robot id from the fleet description (the identity it uploads as)")
        self.link_config = _declare_link_config(p)
        self.spool_dir = p("spool_dir", "on-robot episode spool directory (the recorder writes, the bridge uploads)")
        self.spool_max_bytes = p("spool_max_bytes", "spool size above which writes warn", value_range=AT_LEAST_ONE)
        self.cache_dir = p("cache_dir", "local cache of verified checkpoints")
        self.fleet = p("fleet", "fleet whose checkpoints to follow ('' = the learner's newest)")
        self.description = _declare_description(p, self.robot_id)
        self.status_period_s = p(
            "status_period_s", "seconds between diagnostics of the bridge's state", value_range=PERIOD_S
        )
        self.link_reply_warn_s = p("link_reply_warn_s", "no learner answer this long: WARN", value_range=PERIOD_S)
        self.spool_warn_episodes = p("spool_warn_episodes", "more episodes waiting: WARN", value_range=(0, None))
        self._lock = threading.Lock()
        self.link: Optional[LinkClient] = None
        self._log_handler: Optional[_RosLogHandler] = None

    def configure(self) -> None:
        self._log_handler = _RosLogHandler(self)
        link_logger = logging.getLogger(_LINK_LOGGER)
        link_logger.addHandler(self._log_handler)
        if link_logger.getEffectiveLevel() > logging.INFO:
            link_logger.setLevel(logging.INFO)
        self.spool = Spool(self.spool_dir, self.spool_max_bytes)
        self._spooled: collections.OrderedDict[str, EpisodeStatus] = collections.OrderedDict()
        self._episodes_recorded = 0
        self._announced_version = 0
        self._remember_pending_episodes()

        self.link = LinkClient.connect(self.link_config)
        self.uploader = EpisodeUploader(self.link, self.spool, self.robot_id)
        self.follower = CheckpointFollower(self.link, Path(self.cache_dir), robot_id=self.robot_id, fleet=self.fleet)
        self.member = FleetMember(self.link, self.description, self._robot_status)
        self.uploader.on_uploaded.append(self._on_uploaded)
        self.follower.on_checkpoint.append(self._announce)

        self.policy_pub = self.managed_publisher(PolicyUpdate, "policy_update", _qos.LATCHED)
        self.status_pub = self.managed_publisher(EpisodeStatus, "episode_status", _qos.EVENTS)
        self.diag_pub = self.managed_publisher(DiagnosticArray, "diagnostics", 10)
        self.managed_subscription(EpisodeStatus, "episode_status", self._on_episode_status, _qos.EVENTS)
        self.managed_timer(self.status_period_s, self._publish_diagnostics)
        self.get_logger().info(
            f"bridge to {self.link_config.address} ({'INSECURE plaintext' if self.link_config.insecure else 'TLS'}): "
            f"spool {self.spool_dir}, {len(self.spool)} pending; checkpoint cache {self.cache_dir}"
        )

    def activate(self) -> None:
        cached = self.follower.latest()
        if cached is not None:
            self.get_logger().info(
                f"checkpoint v{cached.version} is in the cache; announcing it until the learner has a newer one"
            )
            self._announce(cached)
        self.uploader.start()
        self.follower.start()
        self.member.start()

    def deactivate(self) -> None:
        """Stop and join the link threads (an upload in flight resumes from the learner's offset next time)."""
        self.member.stop(_STOP_TIMEOUT_S)
        self.follower.stop(_STOP_TIMEOUT_S)
        self.uploader.stop(_STOP_TIMEOUT_S)

    def cleanup(self) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None
        if self._log_handler is not None:
            logging.getLogger(_LINK_LOGGER).removeHandler(self._log_handler)
            self._log_handler = None

    # --- episodes --------------------------------------------------------------------------
    def _remember_pending_episodes(self) -> None:
        """Episodes spooled before this bridge started: their status for the ACKED announcement."""
        for entry in self.spool.pending():
            try:
                meta = read_episode_metadata(entry.path)
            except EpisodeFileError as exc:
                self.get_logger().warning(
                    f"spooled episode {entry.episode_id}: unreadable metadata ({exc}); the learner will judge it"
                )
                continue
            human = sum(end - start for start, end, *_ in meta.get("intervention_segments", []))
            outcome = {True: EpisodeStatus.OUTCOME_SUCCESS, False: EpisodeStatus.OUTCOME_FAILURE}.get(
                meta.get("success"), EpisodeStatus.OUTCOME_UNLABELED
            )
            self._remember(
                EpisodeStatus(
                    episode_id=entry.episode_id,
                    robot_id=self.robot_id,
                    task_id=meta["task_id"],
                    instruction=meta["instruction"],
                    step=int(meta["num_steps"]),
                    outcome=outcome,
                    upload_state=EpisodeStatus.UPLOAD_SPOOLED,
                    human_steps=int(human),
                )
            )

    def _remember(self, msg: EpisodeStatus) -> None:
        with self._lock:
            self._spooled[msg.episode_id.lower()] = msg
            while len(self._spooled) > _KNOWN_EPISODES:
                self._spooled.popitem(last=False)

    def _on_episode_status(self, msg: EpisodeStatus) -> None:
        if msg.upload_state != EpisodeStatus.UPLOAD_SPOOLED:
            return  # running episodes, and our own ACKED announcements
        with self._lock:
            new = msg.episode_id.lower() not in self._spooled
        if new:
            self._episodes_recorded += 1
        self._remember(msg)
        self.uploader.notify()

    def _on_uploaded(self, episode_id: str) -> None:
        """Uploader thread, after the learner's ack and the removal from the spool."""
        with self._lock:
            known = self._spooled.pop(episode_id.lower(), None)
        msg = EpisodeStatus(episode_id=episode_id, robot_id=self.robot_id, outcome=EpisodeStatus.OUTCOME_UNLABELED)
        if known is not None:
            msg = EpisodeStatus(
                episode_id=known.episode_id,
                robot_id=known.robot_id,
                task_id=known.task_id,
                instruction=known.instruction,
                step=known.step,
                outcome=known.outcome,
                human_steps=known.human_steps,
            )
        msg.upload_state = EpisodeStatus.UPLOAD_ACKED
        pending = self.spool.pending()
        msg.spooled_episodes, msg.spooled_bytes = len(pending), sum(e.size_bytes for e in pending)
        msg.header.stamp = self.get_clock().now().to_msg()
        self.status_pub.publish(msg)  # a lifecycle publisher: dropped once the node deactivated
        self.get_logger().info(f"episode {episode_id} acknowledged by the learner; {len(pending)} left in the spool")

    # --- checkpoints -----------------------------------------------------------------------
    def _announce(self, checkpoint: DownloadedCheckpoint) -> None:
        """Follower thread (or startup): a verified checkpoint in the cache -> PolicyUpdate."""
        ref = checkpoint.ref
        with self._lock:
            if ref.version <= self._announced_version:
                return
            self._announced_version = ref.version
        msg = PolicyUpdate(
            version=ref.version,
            parent_version=ref.parent_version,
            content_hash=ref.content_hash,
            local_path=str(checkpoint.weights_path),
            manifest_path=str(checkpoint.manifest_path),
            algorithm=ref.algorithm,
            training_step=ref.training_step,
            metrics=[KeyValue(key=str(k), value=f"{v:.6g}") for k, v in sorted(ref.metrics.items())],
        )
        msg.header.stamp = self.get_clock().now().to_msg()
        self.policy_pub.publish(msg)
        self.get_logger().info(
            f"announced checkpoint v{ref.version} ({ref.algorithm}, step {ref.training_step}, "
            f"sha256 {ref.content_hash[:12]})"
        )

    # --- state -----------------------------------------------------------------------------
    def _robot_status(self) -> fleet_pb2.RobotStatus:
        """Heartbeat payload (FleetMember thread)."""
        upload = self.uploader.status()
        pending = self.spool.pending()
        return fleet_pb2.RobotStatus(
            episodes_spooled=len(pending),
            spool_bytes=sum(e.size_bytes for e in pending),
            policy_version=self._announced_version,
            episodes_uploaded=upload.episodes_uploaded + upload.episodes_already_stored,
            upload_errors=upload.transient_errors + upload.refused,
            state=upload.state,
            episodes_recorded=self._episodes_recorded,
        )

    def _publish_diagnostics(self) -> None:
        upload, download = self.uploader.status(), self.follower.status()
        problems = [
            text
            for text in (
                upload.last_error if upload.state == "backoff" or upload.parked else "",
                self.member.last_error,
                download.last_error,
            )
            if text
        ]
        level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
        down_since = self.member.unreachable_since
        if down_since is not None:  # nothing leaves the robot: an operator must see it
            level = DiagnosticStatus.ERROR
            problems.insert(0, f"learner unreachable for {time.monotonic() - down_since:.0f} s")
        values = {
            "learner_reachable": down_since is None,
            "learner_unreachable_s": 0.0 if down_since is None else round(time.monotonic() - down_since, 1),
            "upload_state": upload.state,
            "episodes_pending": upload.pending,
            "episodes_parked": upload.parked,
            "episodes_uploaded": upload.episodes_uploaded,
            "episodes_already_stored": upload.episodes_already_stored,
            "bytes_sent": upload.bytes_sent,
            "upload_transient_errors": upload.transient_errors,
            "upload_refused": upload.refused,
            "upload_last_error": upload.last_error,
            "checkpoint_announced_by_learner": download.announced_version,
            "checkpoint_downloaded": download.downloaded_version,
            "checkpoint_published": self._announced_version,
            "checkpoint_downloads": download.downloads,
            "checkpoint_errors": download.errors,
            "checkpoint_last_error": download.last_error,
            "fleet_last_error": self.member.last_error,
            "learner_latest_version": self.member.latest_policy_version,
        }
        status = DiagnosticStatus(
            level=level,
            name=f"sop_ros/{self.robot_id}/bridge",
            hardware_id=self.robot_id,
            message="; ".join(problems) or f"{upload.state}, {upload.pending} episode(s) pending",
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
        )
        msg = DiagnosticArray(status=[status, *self._link_and_spool_statuses(down_since)])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(msg)

    def _link_and_spool_statuses(self, down_since: Optional[float]) -> list[DiagnosticStatus]:
        now, replied = time.monotonic(), self.member.last_reply_at
        link = link_check(
            None if down_since is None else now - down_since,
            None if replied is None else now - replied,
            self.link_reply_warn_s,
        )
        pending = self.spool.pending()
        spool = spool_check(
            len(pending),
            sum(e.size_bytes for e in pending),
            self.uploader.status().parked,
            self.spool_warn_episodes,
            self.spool_max_bytes,
        )
        return [check_status(self.robot_id, check) for check in (link, spool)]


def main(args=None) -> int:
    return run_nodes([BridgeNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
