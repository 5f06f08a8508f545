"""The robot/operator end of the link: channel (TLS, client cert, token), stubs, deadlines, retry timing."""

from __future__ import annotations

import dataclasses
import logging
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import grpc

from sop_ros.link import options
from sop_ros.link.protos import fleet_pb2_grpc, ingest_pb2_grpc, policy_pb2_grpc
from sop_ros.link.validate import REASON_EPISODE_TOO_LARGE, REASON_METADATA_KEY

_LOGGER = logging.getLogger(__name__)

# Worth retrying with backoff: the learner is restarting, overloaded or the network blipped.
TRANSIENT_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)


@dataclasses.dataclass(frozen=True)
class LinkClientConfig:
    """Where the learner is and how to prove who we are. TLS unless insecure=True."""

    address: str
    ca_cert: Optional[Path] = None  # CA that signed the learner's certificate
    client_cert: Optional[Path] = None  # mutual TLS (both or neither)
    client_key: Optional[Path] = None
    token_file: Optional[Path] = None  # bearer token (sop certs init writes robots/<id>/token)
    token: Optional[str] = None  # the token itself, instead of token_file
    insecure: bool = False
    server_name_override: Optional[str] = None  # TLS name to expect when address is not in the SAN
    deadlines: options.Deadlines = options.Deadlines()

    def __post_init__(self) -> None:
        if not self.address:
            raise ValueError("LinkClientConfig.address must be set (host:port)")
        if self.insecure and (self.ca_cert or self.client_cert or self.client_key):
            raise ValueError("LinkClientConfig: insecure=True contradicts ca_cert/client_cert/client_key")
        if not self.insecure and not self.ca_cert:
            raise ValueError("LinkClientConfig.ca_cert is required for TLS (or insecure=True for plaintext)")
        if bool(self.client_cert) != bool(self.client_key):
            raise ValueError("LinkClientConfig: client_cert and client_key go together")
        if self.token and self.token_file:
            raise ValueError("LinkClientConfig: give token or token_file, not both")

    def bearer_token(self) -> Optional[str]:
        if self.token_file:
            return Path(self.token_file).read_text().strip()
        return self.token

    def open_channel(self) -> grpc.Channel:
        opts = options.channel_options()
        if self.insecure:
            _LOGGER.warning("INSECURE link to %s: plaintext gRPC, tokens travel unencrypted", self.address)
            return grpc.insecure_channel(self.address, options=opts)
        creds = grpc.ssl_channel_credentials(
            root_certificates=Path(self.ca_cert).read_bytes(),
            private_key=Path(self.client_key).read_bytes() if self.client_key else None,
            certificate_chain=Path(self.client_cert).read_bytes() if self.client_cert else None,
        )
        if self.server_name_override:
            opts.append(("grpc.ssl_target_name_override", self.server_name_override))
        return grpc.secure_channel(self.address, creds, options=opts)


class LinkClient:
    """One channel to the learner with its stubs, call metadata and deadlines. Thread-safe (gRPC channels are)."""

    def __init__(
        self,
        channel: grpc.Channel,
        token: Optional[str] = None,
        deadlines: options.Deadlines = options.Deadlines(),
        address: str = "",
    ):
        self.channel = channel
        self.deadlines = deadlines
        self.address = address  # for log lines ("" when unknown)
        self.metadata: tuple[tuple[str, str], ...] = ((options.AUTH_METADATA_KEY, f"Bearer {token}"),) if token else ()
        self.ingest = ingest_pb2_grpc.IngestStub(channel)
        self.policy = policy_pb2_grpc.PolicyStub(channel)
        self.fleet = fleet_pb2_grpc.FleetStub(channel)

    @classmethod
    def connect(cls, config: LinkClientConfig) -> LinkClient:
        return cls(config.open_channel(), config.bearer_token(), config.deadlines, config.address)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> LinkClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter in [delay*(1-jitter), delay]."""

    initial_s: float = 0.2
    max_s: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not (0 < self.initial_s <= self.max_s) or self.multiplier < 1 or not (0 <= self.jitter <= 1):
            raise ValueError(f"RetryPolicy: need 0 < initial_s <= max_s, multiplier >= 1, 0 <= jitter <= 1; got {self}")

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        while True:
            yield delay * (1.0 - self.jitter * random.random())
            delay = min(self.max_s, delay * self.multiplier)


def is_transient(error: grpc.RpcError) -> bool:
    """Retry-worthy: a transient code, unless the learner marked the refusal as permanent."""
    if not isinstance(error, grpc.RpcError) or error.code() not in TRANSIENT_CODES:
        return False
    trailing = dict(error.trailing_metadata() or ())
    return trailing.get(REASON_METADATA_KEY) != REASON_EPISODE_TOO_LARGE
