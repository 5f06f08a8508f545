"""Build-time codegen: generated modules use relative imports, are regenerated only when stale."""

from __future__ import annotations

import shutil

import pytest

from sop_ros.link import codegen

pytestmark = pytest.mark.timeout(60)


def test_generate_check_and_regenerate_when_proto_changes(tmp_path):
    proto_dir = tmp_path / "proto"
    shutil.copytree(codegen.DEFAULT_PROTO_DIR, proto_dir)
    out = tmp_path / "gen"
    assert codegen.main(["--proto-dir", str(proto_dir), "--out", str(out), "--check"]) == 1
    assert codegen.main(["--proto-dir", str(proto_dir), "--out", str(out)]) == 0
    assert codegen.main(["--proto-dir", str(proto_dir), "--out", str(out), "--check"]) == 0
    grpc_module = (out / "sop" / "v1" / "ingest_pb2_grpc.py").read_text()
    assert "from . import ingest_pb2" in grpc_module and "from sop.v1 import" not in grpc_module
    assert (out / "sop" / "v1" / "fleet_pb2.pyi").exists()
    stamp = (out / codegen.STAMP_NAME).read_text()
    codegen.ensure_generated(proto_dir, out)  # current: nothing rewritten
    assert (out / codegen.STAMP_NAME).read_text() == stamp
    fleet = proto_dir / "sop" / "v1" / "fleet.proto"
    fleet.write_text(fleet.read_text() + "\nmessage AddedLater { string note = 1; }\n")
    assert not codegen.is_current(proto_dir, out)
    codegen.ensure_generated(proto_dir, out)
    assert "AddedLater" in (out / "sop" / "v1" / "fleet_pb2.py").read_text()
    assert codegen.is_current(proto_dir, out)


def test_package_modules_are_current():
    from sop_ros.link import protos  # noqa: F401 - importing regenerates when stale

    assert codegen.is_current()
