"""Robot-side client core of the fleet link (no rclpy): what the bridge node drives.

    link = LinkClient.connect(LinkClientConfig(address, ca_cert=..., token_file=...))
    uploader = EpisodeUploader(link, spool, robot_id); uploader.start(); uploader.notify()
    follower = CheckpointFollower(link, cache_dir, robot_id); follower.on_checkpoint.append(fn); follower.start()
    member = FleetMember(link, RobotDescription(...), status_provider); member.start()
Each part has start()/stop() and a status() (or attributes) for diagnostics.
"""

from sop_ros.link.channel import LinkClient, LinkClientConfig, RetryPolicy, is_transient
from sop_ros.link.checkpoint_info import CheckpointRef
from sop_ros.link.follower import CheckpointFollower, ChecksumError, DownloadedCheckpoint, FollowerStatus
from sop_ros.link.membership import FleetMember, IncompatibleRobotError, RobotDescription
from sop_ros.link.uploader import EpisodeUploader, UploaderStatus, UploadRefusedError

__all__ = [
    "CheckpointFollower",
    "CheckpointRef",
    "ChecksumError",
    "DownloadedCheckpoint",
    "EpisodeUploader",
    "FleetMember",
    "FollowerStatus",
    "IncompatibleRobotError",
    "LinkClient",
    "LinkClientConfig",
    "RetryPolicy",
    "RobotDescription",
    "UploadRefusedError",
    "UploaderStatus",
    "is_transient",
]
