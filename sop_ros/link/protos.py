"""The generated sop.v1 modules, (re)generated from proto/ on first import when missing or stale."""

from __future__ import annotations

from sop_ros.link import codegen

codegen.ensure_generated()

from sop_ros.link._gen.sop.v1 import fleet_pb2, fleet_pb2_grpc, ingest_pb2, ingest_pb2_grpc, policy_pb2, policy_pb2_grpc  # noqa: E402  # noqa: E402  # noqa: E402

SERVICE_NAMES = (
    ingest_pb2.DESCRIPTOR.services_by_name["Ingest"].full_name,
    policy_pb2.DESCRIPTOR.services_by_name["Policy"].full_name,
    fleet_pb2.DESCRIPTOR.services_by_name["Fleet"].full_name,
)

__all__ = [
    "SERVICE_NAMES",
    "fleet_pb2",
    "fleet_pb2_grpc",
    "ingest_pb2",
    "ingest_pb2_grpc",
    "policy_pb2",
    "policy_pb2_grpc",
]
