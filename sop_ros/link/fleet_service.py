"""Fleet: compatibility handshake, heartbeats, and the operator's fleet status (state kept in memory).

A learner restart forgets registrations; a robot's next heartbeat then gets FAILED_PRECONDITION
and the client registers again, so no state here needs to be durable.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Optional

import grpc

from sop_ros.link import validate
from sop_ros.link.auth import Authenticator
from sop_ros.link.options import MAX_MESSAGE_BYTES, PROTOCOL_VERSION
from sop_ros.link.protos import fleet_pb2, fleet_pb2_grpc

# What one robot may report: the fleet status lists every robot, so each entry stays small.
MAX_TASKS_PER_ROBOT = 64
MAX_TEXT_CHARS = 64  # software_version, backend, status state
_PAGE_BYTES = MAX_MESSAGE_BYTES - (64 << 10)  # a status page and its envelope fit the message limit


@dataclasses.dataclass(frozen=True)
class CompatibilityPolicy:
    """What a robot must match to join. None means "not checked"."""

    protocol_version: int = PROTOCOL_VERSION
    software_version: str = ""  # the learner's sop_ros version; robots must share its major.minor
    action_dim: Optional[int] = None
    state_dim: Optional[int] = None
    tasks: Optional[frozenset[str]] = None  # tasks the learner trains on

    def refusal(self, request: fleet_pb2.RegisterRequest) -> str:
        """Why the robot is refused, or "" when it is compatible."""
        if request.protocol_version != self.protocol_version:
            return (
                f"protocol version {request.protocol_version} is not supported: "
                f"this learner speaks sop.v1 protocol {self.protocol_version}; update the robot's sop_ros"
            )
        if self.software_version and _major_minor(request.software_version) != _major_minor(self.software_version):
            return (
                f"software version {request.software_version!r} is incompatible with the learner's "
                f"{self.software_version!r} (major.minor must match)"
            )
        cfg = request.config
        if self.action_dim is not None and cfg.action_dim != self.action_dim:
            return f"action_dim {cfg.action_dim} differs from the learner's policy action_dim {self.action_dim}"
        if self.state_dim is not None and cfg.state_dim != self.state_dim:
            return f"state_dim {cfg.state_dim} differs from the learner's policy state_dim {self.state_dim}"
        if self.tasks is not None:
            unknown = sorted(set(cfg.tasks) - self.tasks)
            if unknown:
                return f"tasks {unknown} are not trained by this learner (known: {sorted(self.tasks)})"
        if cfg.control_rate_hz < 0 or cfg.control_rate_hz != cfg.control_rate_hz:
            return f"control_rate_hz {cfg.control_rate_hz} is not a valid rate"
        return ""


def _major_minor(version: str) -> tuple[str, ...]:
    return tuple(version.strip().split(".")[:2])


class FleetServicer(fleet_pb2_grpc.FleetServicer):
    def __init__(
        self,
        authenticator: Authenticator,
        policy: CompatibilityPolicy,
        heartbeat_interval_ms: int,
        episodes_stored: Callable[[], int],
        latest_policy_version: Callable[[], int],
    ):
        self._auth = authenticator
        self._policy = policy
        self._heartbeat_interval_ms = heartbeat_interval_ms
        self._episodes_stored = episodes_stored
        self._latest_policy_version = latest_policy_version
        self._robots: dict[str, fleet_pb2.RobotEntry] = {}
        self._lock = threading.Lock()

    def Register(self, request: fleet_pb2.RegisterRequest, context: grpc.ServicerContext) -> fleet_pb2.RegisterResponse:
        validate.name(context, request.robot_id, "robot_id")
        self._auth.require_robot(context, request.robot_id)
        _check_registration(context, request)
        reason = self._policy.refusal(request)
        response = fleet_pb2.RegisterResponse(
            accepted=not reason,
            reason=reason,
            server_protocol_version=self._policy.protocol_version,
            server_software_version=self._policy.software_version,
            heartbeat_interval_ms=self._heartbeat_interval_ms,
        )
        if reason:
            return response
        entry = fleet_pb2.RobotEntry(
            robot_id=request.robot_id,
            software_version=request.software_version,
            config=request.config,
            registered_ns=time.time_ns(),
        )
        with self._lock:
            self._robots[request.robot_id] = entry
        return response

    def Heartbeat(
        self, request: fleet_pb2.HeartbeatRequest, context: grpc.ServicerContext
    ) -> fleet_pb2.HeartbeatResponse:
        validate.name(context, request.robot_id, "robot_id")
        self._auth.require_robot(context, request.robot_id)
        _check_text(context, request.status.state, "status.state")
        with self._lock:
            entry = self._robots.get(request.robot_id)
            if entry is None:
                validate.fail(
                    context,
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"robot {request.robot_id!r} is not registered with this learner; call Register",
                )
            entry.status.CopyFrom(request.status)
            entry.last_heartbeat_ns = time.time_ns()
        return fleet_pb2.HeartbeatResponse(
            latest_policy_version=self._latest_policy_version(), server_time_ns=time.time_ns()
        )

    def GetFleetStatus(
        self, request: fleet_pb2.GetFleetStatusRequest, context: grpc.ServicerContext
    ) -> fleet_pb2.FleetStatus:
        identity = self._auth.identify(context)
        if not identity.may_read_fleet():
            validate.fail(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{identity.role.value} {identity.principal!r} may not read fleet status (operator token required)",
            )
        with self._lock:
            total = len(self._robots)
            entries = sorted(
                (fleet_pb2.RobotEntry.FromString(e.SerializeToString()) for e in self._robots.values()),
                key=lambda e: e.robot_id,
            )
        page, next_token = _page(entries, request.page_token, request.page_size)
        return fleet_pb2.FleetStatus(
            robots=page,
            episodes_stored=self._episodes_stored(),
            latest_policy_version=self._latest_policy_version(),
            server_time_ns=time.time_ns(),
            next_page_token=next_token,
            robots_total=total,
        )


def _page(entries: list, page_token: str, page_size: int) -> tuple[list, str]:
    """The entries after `page_token` (a robot id), up to page_size and the byte budget; and the next token."""
    rest = [e for e in entries if e.robot_id > page_token] if page_token else entries
    page, used = [], 0
    for entry in rest:
        size = entry.ByteSize() + 8  # field tag and length
        if page and ((page_size and len(page) >= page_size) or used + size > _PAGE_BYTES):
            break
        page.append(entry)
        used += size
    return page, (page[-1].robot_id if len(page) < len(rest) else "")


def _check_text(context: grpc.ServicerContext, value: str, field: str) -> None:
    if len(value) > MAX_TEXT_CHARS:
        validate.fail(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{field}: {len(value)} characters, at most {MAX_TEXT_CHARS}",
        )


def _check_registration(context: grpc.ServicerContext, request: fleet_pb2.RegisterRequest) -> None:
    _check_text(context, request.software_version, "software_version")
    _check_text(context, request.config.backend, "config.backend")
    if len(request.config.tasks) > MAX_TASKS_PER_ROBOT:
        validate.fail(
            context,
            grpc.StatusCode.INVALID_ARGUMENT,
            f"config.tasks: {len(request.config.tasks)} tasks, at most {MAX_TASKS_PER_ROBOT}",
        )
    for task in request.config.tasks:
        validate.name(context, task, "config.tasks[]")
