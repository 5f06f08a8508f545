#!/usr/bin/env bash
# One-command, idempotent setup for machines without a ROS 2 install:
#   .venv/ with pinned dependencies (ROS 2 Kilted PyPI wheels, torch 2.13.0 CPU, ...),
#   the custom interfaces built with CMake into the venv, the gRPC stubs generated,
#   and sop_ros installed editable (source edits are picked up without reinstalling).
# A second run with nothing changed only compares a fingerprint and exits in about a second.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
BUILD="$ROOT/build/cmake"
PY="${PYTHON:-python3}"
STAMP="$VENV/.sop_setup_fingerprint"
cd "$ROOT"

# What the environment is built from; any change re-runs the affected steps.
fp() { { cat "$@" 2>/dev/null || true; } | sha256sum | cut -c1-16; }
deps_fp=$(fp setup.py requirements/*.txt)
ifaces_fp=$(fp CMakeLists.txt package.xml msg/*.msg srv/*.srv)
proto_fp=$(fp proto/sop/v1/*.proto)
fingerprint="deps=$deps_fp ifaces=$ifaces_fp proto=$proto_fp"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$fingerprint" ] && [ -x "$VENV/bin/sop" ]; then
  echo "setup: up to date ($VENV)"
  exit 0
fi
old="$(cat "$STAMP" 2>/dev/null || true)"
t0=$SECONDS

# MuJoCo renders offscreen through EGL; install Debian's Mesa EGL if it is missing.
if ! ldconfig -p 2>/dev/null | grep -q 'libEGL.so.1'; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing libegl1 libegl-mesa0 libgl1-mesa-dri (offscreen rendering)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri >/dev/null
  else
    echo "setup: WARNING: libEGL not found; install libegl1 libegl-mesa0 libgl1-mesa-dri for simulation rendering" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"

if [[ "$old" != *"deps=$deps_fp"* ]]; then
  echo "setup: installing pinned dependencies (first run: about 2 minutes)"
  # -e: the editable finder maps sop_ros to this checkout; the constraints pin every package.
  python -m pip install -q -c requirements/constraints.txt -e ".[ros,test]"
fi
echo "setup: dependencies ready ($((SECONDS - t0)) s)"

if [[ "$old" != *"ifaces=$ifaces_fp"* ]] || ! python -c "import sop_ros.msg, sop_ros.srv" 2>/dev/null; then
  echo "setup: building the ROS 2 interfaces (msg/, srv/) with CMake"
  mkdir -p "$ROOT/build"
  export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
  cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$VENV" \
    -DPython3_EXECUTABLE="$VENV/bin/python" -DSOP_ROS_INSTALL_PYTHON_SOURCES=OFF -DBUILD_TESTING=OFF >"$ROOT/build/cmake-configure.log" 2>&1 \
    || { tail -30 "$ROOT/build/cmake-configure.log"; exit 1; }
  cmake --build "$BUILD" -j"$(nproc)" >"$ROOT/build/cmake-build.log" 2>&1 || { tail -30 "$ROOT/build/cmake-build.log"; exit 1; }
  cmake --install "$BUILD" >/dev/null
fi
echo "setup: interfaces ready ($((SECONDS - t0)) s)"

if [ -f sop_ros/link/codegen.py ]; then
  python -m sop_ros.link.codegen
fi
# Check from a neutral directory that the generated and hand-written halves import together.
(cd / && python -c "import sop_ros.msg, sop_ros.srv, sop_ros.cli")
echo "$fingerprint" >"$STAMP"
echo "setup: done in $((SECONDS - t0)) s; the CLI is $VENV/bin/sop"
