"""Robot side of Fleet: the compatibility handshake and periodic heartbeats."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Optional

import grpc

from sop_ros.link.channel import LinkClient, RetryPolicy, is_transient
from sop_ros.link.options import PROTOCOL_VERSION
from sop_ros.link.protos import fleet_pb2

_LOGGER = logging.getLogger(__name__)
# Codes that mean "cannot reach the learner" (not a refusal): the link is down until a heartbeat gets through.
_UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class IncompatibleRobotError(RuntimeError):
    """The learner refused this robot at registration; the message says why."""


@dataclasses.dataclass(frozen=True)
class RobotDescription:
    robot_id: str
    software_version: str
    tasks: Sequence[str]
    backend: str
    control_rate_hz: float
    action_dim: int
    state_dim: int
    protocol_version: int = PROTOCOL_VERSION

    def register_request(self) -> fleet_pb2.RegisterRequest:
        config = fleet_pb2.RobotConfig(
            tasks=list(self.tasks),
            backend=self.backend,
            control_rate_hz=self.control_rate_hz,
            action_dim=self.action_dim,
            state_dim=self.state_dim,
        )
        return fleet_pb2.RegisterRequest(
            robot_id=self.robot_id,
            software_version=self.software_version,
            protocol_version=self.protocol_version,
            config=config,
        )


StatusProvider = Callable[[], fleet_pb2.RobotStatus]


class FleetMember:
    """Registers once, then heartbeats; re-registers when the learner forgot us (restart)."""

    def __init__(
        self,
        link: LinkClient,
        robot: RobotDescription,
        status_provider: StatusProvider = fleet_pb2.RobotStatus,
        retry: RetryPolicy = RetryPolicy(),
    ):
        self._link = link
        self.robot = robot
        self._status_provider = status_provider
        self._retry = retry
        self.heartbeat_interval_s = 1.0
        self.latest_policy_version = 0
        self.last_error = ""  # of the last failed call; cleared by the next heartbeat that gets through
        self.unreachable_since: Optional[float] = None  # time.monotonic() when the learner became unreachable
        self.last_reply_at: Optional[float] = None  # time.monotonic() of the learner's last heartbeat answer
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def register(self) -> fleet_pb2.RegisterResponse:
        response = self._link.fleet.Register(
            self.robot.register_request(), metadata=self._link.metadata, timeout=self._link.deadlines.unary_s
        )
        if not response.accepted:
            raise IncompatibleRobotError(f"learner refused robot {self.robot.robot_id!r}: {response.reason}")
        if response.heartbeat_interval_ms:
            self.heartbeat_interval_s = response.heartbeat_interval_ms / 1000.0
        return response

    def heartbeat(self) -> fleet_pb2.HeartbeatResponse:
        request = fleet_pb2.HeartbeatRequest(
            robot_id=self.robot.robot_id, status=self._status_provider(), sent_ns=time.time_ns()
        )
        try:
            response = self._link.fleet.Heartbeat(
                request, metadata=self._link.metadata, timeout=self._link.deadlines.unary_s
            )
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
                raise
            self.register()  # the learner restarted and forgot us
            response = self._link.fleet.Heartbeat(
                request, metadata=self._link.metadata, timeout=self._link.deadlines.unary_s
            )
        self.latest_policy_version = response.latest_policy_version
        return response

    def start(self) -> None:
        """Heartbeat in the background (registering first); refusal is logged and ends the thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"sop-heartbeat-{self.robot.robot_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: Optional[float] = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        delays = self._retry.delays()
        registered = False
        while not self._stop.is_set():
            try:
                if not registered:
                    self.register()
                    registered = True
                self.heartbeat()
                self._reached()
                delays = self._retry.delays()
                self._stop.wait(self.heartbeat_interval_s)
            except IncompatibleRobotError as exc:
                self.last_error = str(exc)
                _LOGGER.error("%s", exc)
                return
            except grpc.RpcError as exc:
                self.last_error = f"{exc.code().name}: {exc.details()}"
                if exc.code() in _UNREACHABLE:
                    self._lost()
                elif not is_transient(exc):
                    _LOGGER.error("heartbeat refused: %s", self.last_error)
                self._stop.wait(next(delays))

    @property
    def learner_reachable(self) -> bool:
        return self.unreachable_since is None

    def _backlog(self) -> str:
        try:
            status = self._status_provider()
        except Exception:  # a status provider must not break the link's logging
            return "an unknown number of episodes"
        return f"{status.episodes_spooled} episode(s), {status.spool_bytes / 2**20:.1f} MiB"

    def _lost(self) -> None:
        """One log line when the learner becomes unreachable (not one per retry)."""
        if self.unreachable_since is None:
            self.unreachable_since = time.monotonic()
            _LOGGER.warning(
                "learner %s unreachable (%s); %s wait in the spool, retrying",
                self._link.address,
                self.last_error,
                self._backlog(),
            )

    def _reached(self) -> None:
        self.last_error = ""
        self.last_reply_at = time.monotonic()
        if self.unreachable_since is not None:
            down_s, self.unreachable_since = time.monotonic() - self.unreachable_since, None
            _LOGGER.info(
                "learner %s reachable again after %.0f s; backlog %s", self._link.address, down_s, self._backlog()
            )
