#!/usr/bin/env bash
# Manual check, NOT part of the test suite: run launch/fleet.launch.py under the real
# ROS 2 launch stack (`ros2 launch sop_ros fleet.launch.py`) on a machine without a ROS 2
# install. The result is recorded in docs/launch-check.md.
#
#   scripts/check_ros2_launch.sh [WORKDIR]        (default /tmp/launchcheck; nothing is written to the repo)
#
# Needs:
#   - the repo's .venv from scripts/setup.sh (copied to WORKDIR/venv, never modified);
#   - git mirrors of ros2/launch, ros2/launch_ros, ros2/ros2cli, ros2/rcl_interfaces
#     (MIRRORS=/work/.mirror by default: $MIRRORS/ros2+<name>/repo, a bare git dir or a clone);
#     launch/launch_ros have no PyPI wheels, so they are built from source with colcon;
#   - PyPI (or the local index) for colcon-common-extensions, osrf-pycommon and argcomplete.
# Env: EXTRA_PATCH=file.diff applies a proposed fix to the build copy only;
#      REBUILD_LAUNCH_STACK=1 rebuilds the launch stack even if WORKDIR has it; ROS_DOMAIN_ID.
#
# Steps: 1 venv copy without sop_ros + colcon; 2 launch stack (8 packages) from the mirrors
# with colcon against the PyPI ROS 2 wheels; 3 colcon build of a copy of this repo;
# 4 three `ros2 launch` runs, each driven by WORKDIR/drive_launch.py: wait for every
# robot's GetRobotStatus service and /diagnostics heartbeat (and the learner's gRPC health
# when it is started), SIGINT to the ros2 launch pid only (pitfall P10), then check that
# no process started by the run is left.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mkdir -p "${1:-/tmp/launchcheck}" && cd "${1:-/tmp/launchcheck}" && pwd)"
MIRRORS="${MIRRORS:-/work/.mirror}"
SRC_VENV="${SRC_VENV:-$ROOT/.venv}"
VENV="$WORK/venv"
# The releases the packaging spike used (rolling-era; the mirrors have no kilted branch).
LAUNCH_TAG=3.7.1 LAUNCH_ROS_TAG=0.28.0 ROS2CLI_TAG=0.36.1 RCL_INTERFACES_TAG=2.2.0
PY_TOOLS=(colcon-common-extensions==0.3.0 colcon-core==0.21.3 colcon-ros==0.5.0 colcon-cmake==0.2.30
          osrf-pycommon==2.0.2 argcomplete==3.7.2)
log() { printf '\n[check %s] %s\n' "$(date +%T)" "$*"; }
t_start=$SECONDS

[ -x "$SRC_VENV/bin/python" ] || { echo "no $SRC_VENV: run scripts/setup.sh first" >&2; exit 1; }
export PATH="$VENV/bin:$PATH" VIRTUAL_ENV="$VENV"
unset PYTHONPATH
# Never from the checkout: its sop_ros/ and launch/ would shadow the installed ones (pitfalls P5, P6).
cd "$WORK"

# --- 1. the venv: a copy of .venv (all runtime deps, ROS 2 wheels) minus sop_ros, plus colcon
if [ ! -f "$VENV/.launchcheck_ready" ]; then
  log "copying $SRC_VENV to $VENV"
  rm -rf "$VENV"
  t0=$SECONDS
  cp -a "$SRC_VENV" "$VENV"
  echo "  copied in $((SECONDS - t0)) s"
  # Remove every trace of sop_ros (editable finder, CMake-installed interfaces) so that the
  # only sop_ros is the one colcon builds below, as on a fresh ROS 2 machine.
  "$VENV/bin/python" -m pip uninstall -q -y sop_ros_python
  rm -rf "$VENV"/lib/python3*/site-packages/sop_ros "$VENV"/lib/python3*/site-packages/sop_ros-*.egg-info \
    "$VENV"/lib/python3*/site-packages/__editable__*sop_ros* "$VENV/include/sop_ros" "$VENV/share/sop_ros" \
    "$VENV/lib/sop_ros" "$VENV"/lib/libsop_ros__*.so "$VENV"/share/ament_index/resource_index/*/sop_ros \
    "$VENV/bin/sop"
  log "installing colcon and the launch stack's Python deps into $VENV"
  t0=$SECONDS
  "$VENV/bin/python" -m pip install -q -c "$ROOT/requirements/constraints.txt" "${PY_TOOLS[@]}" 2>"$WORK/pip.log" \
    || { cat "$WORK/pip.log"; exit 1; }
  echo "  installed in $((SECONDS - t0)) s: $("$VENV/bin/python" -m pip list 2>/dev/null | grep -iE '^(colcon-core|colcon-ros|colcon-cmake|osrf-pycommon|argcomplete) ' | tr -s ' ' | paste -sd, -)"
  touch "$VENV/.launchcheck_ready"
fi
"$VENV/bin/python" - <<'EOF'
import importlib.util, sys
assert importlib.util.find_spec("sop_ros") is None, "sop_ros still importable from the venv copy"
print("venv:", sys.prefix, sys.version.split()[0])
EOF

# Wheel include-path fix-up for third-party interface packages (composition_interfaces),
# injected with CMAKE_PROJECT_INCLUDE and run at the end of the top-level CMakeLists.txt
# (same logic as in our CMakeLists.txt; pitfall P7).
cat >"$WORK/ros_wheels_fixup.cmake" <<'EOF'
function(_launchcheck_fix_wheel_include_dirs)
  find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module NumPy)
  get_property(_imported DIRECTORY PROPERTY IMPORTED_TARGETS)
  foreach(_tgt IN LISTS _imported)
    get_target_property(_incs ${_tgt} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _incs)
      continue()
    endif()
    set(_new "")
    set(_changed FALSE)
    foreach(_dir IN LISTS _incs)
      if(NOT EXISTS "${_dir}" AND _dir MATCHES "(/include/python3|/numpy/_?core/include)")
        set(_changed TRUE)
      else()
        list(APPEND _new "${_dir}")
      endif()
    endforeach()
    if(_changed)
      list(APPEND _new ${Python3_INCLUDE_DIRS} ${Python3_NumPy_INCLUDE_DIRS})
      list(REMOVE_DUPLICATES _new)
      set_target_properties(${_tgt} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_new}")
      message(STATUS "launchcheck: fixed include dirs of ${_tgt}")
    endif()
  endforeach()
endfunction()
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _launchcheck_fix_wheel_include_dirs)
EOF

export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
COLCON_ARGS=(--merge-install --event-handlers console_direct- console_cohesion- console_start_end+ summary+)
CMAKE_ARGS=(-DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF)

# --- 2. the launch stack from source (skipped when already built from the same tags)
STACK_STAMP="$WORK/ws_launch/.built-$LAUNCH_TAG-$LAUNCH_ROS_TAG-$ROS2CLI_TAG-$RCL_INTERFACES_TAG"
if [ -f "$STACK_STAMP" ] && [ -z "${REBUILD_LAUNCH_STACK:-}" ]; then
  log "launch stack already built in $WORK/ws_launch (REBUILD_LAUNCH_STACK=1 to rebuild)"
else
  log "exporting launch $LAUNCH_TAG, launch_ros $LAUNCH_ROS_TAG, ros2cli $ROS2CLI_TAG, rcl_interfaces $RCL_INTERFACES_TAG"
  rm -rf "$WORK/ws_launch"
  mkdir -p "$WORK/ws_launch/src"
  export_pkgs() {  # mirror-name tag package-dir...
    local name="$1" tag="$2" gitdir; shift 2
    gitdir="$(git -C "$MIRRORS/ros2+$name/repo" rev-parse --absolute-git-dir)"
    mkdir -p "$WORK/ws_launch/src/$name"
    git --git-dir="$gitdir" archive --format=tar "$tag" "$@" | tar -x -C "$WORK/ws_launch/src/$name"
    echo "  ros2/$name $tag ($(git --git-dir="$gitdir" rev-parse "$tag^{commit}")): $*"
  }
  export_pkgs launch "$LAUNCH_TAG" launch launch_xml launch_yaml
  export_pkgs launch_ros "$LAUNCH_ROS_TAG" launch_ros ros2launch
  export_pkgs ros2cli "$ROS2CLI_TAG" ros2cli ros2pkg
  export_pkgs rcl_interfaces "$RCL_INTERFACES_TAG" composition_interfaces
  t0=$SECONDS
  (cd "$WORK/ws_launch" && colcon build "${COLCON_ARGS[@]}" \
    --cmake-args "${CMAKE_ARGS[@]}" -DCMAKE_PROJECT_INCLUDE="$WORK/ros_wheels_fixup.cmake")
  log "launch stack built in $((SECONDS - t0)) s"
  touch "$STACK_STAMP"
fi

# --- 3. our package, from a copy of the checkout as it is (never build in the repo)
rm -rf "$WORK/ws"
mkdir -p "$WORK/ws/src/sop_ros"
tar -C "$ROOT" --exclude=./.venv --exclude=./build --exclude=./install --exclude=./log --exclude=./.git \
  --exclude='*.egg-info' --exclude=__pycache__ --exclude=./sop_ros/link/_gen -cf - . | tar -x -C "$WORK/ws/src/sop_ros"
echo "  checkout $(git -C "$ROOT" rev-parse --short HEAD) with $(git -C "$ROOT" status --porcelain | wc -l) uncommitted changes, copied as is"
if [ -n "${EXTRA_PATCH:-}" ]; then  # try a proposed fix, on the copy only
  log "applying $EXTRA_PATCH to the copy"
  patch -d "$WORK/ws/src/sop_ros" -p1 <"$EXTRA_PATCH"
fi
t0=$SECONDS
(cd "$WORK/ws" && colcon build "${COLCON_ARGS[@]}" --cmake-args "${CMAKE_ARGS[@]}")
log "sop_ros built in $((SECONDS - t0)) s"

# Underlay, then overlay (pitfall P12). The setup files are not `set -u` clean.
set +u
# shellcheck disable=SC1091
. "$WORK/ws_launch/install/setup.bash"
# shellcheck disable=SC1091
. "$WORK/ws/install/setup.bash"
set -u
log "ros2 launch sop_ros fleet.launch.py --show-args"
ros2 launch sop_ros fleet.launch.py --show-args

# --- 4. the runs
cat >"$WORK/drive_launch.py" <<'PY'
"""Run `ros2 launch sop_ros fleet.launch.py ARG:=VALUE...` and check it against node_specs().

The expected processes come from sop_ros.fleet.specs.node_specs() for the same fleet file,
robot and learner arguments (the function the launch file itself uses): wait until every
expected node is in the ROS graph, call each robot's GetRobotStatus, wait for its
/diagnostics heartbeat, check the learner's gRPC health when it is expected, then SIGINT
the ros2 launch pid only (pitfall P10) and check that no process of the run is left.
"""
import argparse, os, re, signal, subprocess, sys, time, uuid

import rclpy
from ament_index_python.packages import get_package_share_directory
from diagnostic_msgs.msg import DiagnosticArray
from sop_ros.fleet.description import load_fleet
from sop_ros.fleet.specs import NodeSpec, ProcessSpec, node_specs
from sop_ros.srv import GetRobotStatus

p = argparse.ArgumentParser()
p.add_argument("--log", required=True)
p.add_argument("--timeout", type=float, default=150.0, help="seconds for everything to come up")
p.add_argument("launch_args", nargs="*", help="ARG:=VALUE for fleet.launch.py")
a = p.parse_args()
largs = dict(x.split(":=", 1) for x in a.launch_args)
fleet = load_fleet(largs.get("fleet", os.path.join(get_package_share_directory("sop_ros"), "config", "fleet.yaml")))
robot = largs.get("robot", "")
specs = node_specs(fleet, robot_ids=[robot] if robot else None,
                   with_learner={"auto": None, "true": True, "false": False}[largs.get("learner", "auto")])
expected = sorted(s.fully_qualified_name for s in specs if isinstance(s, NodeSpec))
robots = sorted({s.robot_id for s in specs if isinstance(s, NodeSpec)})
absent = [r.id for r in fleet.robots if r.id not in robots]
learner = next((s for s in specs if isinstance(s, ProcessSpec)), None)
cmd = ["ros2", "launch", "sop_ros", "fleet.launch.py", *a.launch_args]
tag = uuid.uuid4().hex
failures = []

t0 = time.monotonic()
el = lambda: f"{time.monotonic() - t0:6.2f} s"


def died():
    with open(a.log, errors="replace") as f:
        return re.findall(r"\[ERROR\] \[([^\]]+)\]: process has died \[pid \d+, exit code (-?\d+)", f.read())


print(f"$ {' '.join(cmd)}   (ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']}, HOME={os.environ['HOME']})")
print(f"expected from node_specs(): {len(expected)} nodes" + (f" + process '{learner.name}'" if learner else ""), flush=True)
logf = open(a.log, "wb")
# Own session: a Ctrl-C at the terminal cannot reach the nodes; only ros2 launch gets SIGINT.
launch = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
                          env={**os.environ, "LAUNCHCHECK_TAG": tag})

rclpy.init(args=[])  # not sys.argv: its ARG:=VALUE would be taken as remap rules
node = rclpy.create_node("launchcheck_probe")
heartbeats = {}
node.create_subscription(DiagnosticArray, "/diagnostics",
                         lambda m: [heartbeats.setdefault(s.hardware_id, (el(), s.name, s.message)) for s in m.status], 10)
graph = lambda: {f"{ns.rstrip('/')}/{n}" for n, ns in node.get_node_names_and_namespaces()} - {"/launchcheck_probe"}
deadline = time.monotonic() + a.timeout
seen_at = {}
while time.monotonic() < deadline and launch.poll() is None and not died():
    for name in graph():
        seen_at.setdefault(name, el())
    if set(expected) <= set(seen_at):
        break
    rclpy.spin_once(node, timeout_sec=0.25)
for name in expected:
    print(f"[{seen_at[name]}] node up: {name}" if name in seen_at else f"[{el()}] node NOT up: {name}")
missing = [n for n in expected if n not in seen_at]
if missing:
    failures.append(f"nodes never came up: {missing}")

for rid in robots:
    cli = node.create_client(GetRobotStatus, f"/{rid}/get_robot_status")
    if not cli.wait_for_service(timeout_sec=10):
        failures.append(f"/{rid}/get_robot_status never came up")
        continue
    future = cli.call_async(GetRobotStatus.Request())
    rclpy.spin_until_future_complete(node, future, timeout_sec=10)
    r = future.result()
    if r is None or r.robot_id != rid:
        failures.append(f"/{rid}/get_robot_status: bad reply {r}")
        continue
    print(f"[{el()}] /{rid}/get_robot_status -> robot_id={r.robot_id} namespace={r.robot_namespace} "
          f"backend={r.backend} task_set={list(r.task_set)} current_task={r.current_task} "
          f"control_rate_hz={r.control_rate_hz} policy_version={r.policy_version} "
          f"episodes_finished={r.episodes_finished} uptime_s={r.uptime_s:.2f} software_version={r.software_version}", flush=True)
hb_deadline = time.monotonic() + 10
while time.monotonic() < hb_deadline and not all(r in heartbeats for r in robots):
    rclpy.spin_once(node, timeout_sec=0.2)
for _ in range(10):  # a little longer, to catch a robot that must not be there
    rclpy.spin_once(node, timeout_sec=0.2)
for rid in robots:
    if rid in heartbeats:
        print(f"[{heartbeats[rid][0]}] /diagnostics heartbeat: {heartbeats[rid][1]} '{heartbeats[rid][2]}'")
    else:
        failures.append(f"no /diagnostics heartbeat from {rid}")
for rid in absent:
    if rid in heartbeats or any(n.startswith(f"/{rid}/") for n in graph()):
        failures.append(f"{rid} is running but should not be")
    else:
        print(f"[{el()}] {rid}: not started (as expected)")
print(f"[{el()}] ROS graph: {sorted(graph())}")

if learner:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    status = None
    with grpc.insecure_channel(fleet.learner.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while (time.monotonic() < deadline and launch.poll() is None
               and not any(n.startswith(learner.name + "-") for n, _ in died())):
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                time.sleep(0.5)
    state = health_pb2.HealthCheckResponse.ServingStatus.Name(status) if status is not None else "unreachable"
    print(f"[{el()}] learner gRPC health at {fleet.learner.address}: {state}")
    if state != "SERVING":
        failures.append(f"learner at {fleet.learner.address} is {state}")
node.destroy_node()
rclpy.shutdown()
for name, code in died():
    failures.append(f"{name} died with exit code {code} before the SIGINT")

if launch.poll() is not None:
    failures.append(f"ros2 launch exited early with {launch.returncode}")
else:
    t_sig = time.monotonic()
    os.kill(launch.pid, signal.SIGINT)
    try:
        rc = launch.wait(timeout=30)
        print(f"[{el()}] SIGINT to ros2 launch (pid {launch.pid}): exited {rc} after {time.monotonic() - t_sig:.2f} s")
        if rc != 0:
            failures.append(f"ros2 launch exited {rc} after SIGINT")
    except subprocess.TimeoutExpired:
        failures.append("ros2 launch did not exit within 30 s of SIGINT")
        os.kill(launch.pid, signal.SIGKILL)
        launch.wait()
logf.close()
with open(a.log, errors="replace") as f:
    text = f.read()
started = re.findall(r"\[INFO\] \[([^\]]+)\]: process started", text)
clean = re.findall(r"\[INFO\] \[([^\]]+)\]: process has finished cleanly", text)
not_clean = sorted(set(started) - set(clean))
print(f"[{el()}] shutdown: {len(started)} processes started, {len(clean)} finished cleanly"
      + (f"; not clean: {not_clean}" if not_clean else ""))
if not_clean:
    failures.append(f"not finished cleanly: {not_clean}")
time.sleep(1)
left = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            if f"LAUNCHCHECK_TAG={tag}".encode() in f.read().split(b"\0"):
                left.append(int(pid))
    except OSError:
        pass
if left:
    failures.append(f"processes left after shutdown: {left}")
    for pid in left:  # only processes this run started (they carry its tag)
        os.kill(pid, signal.SIGKILL)
else:
    print(f"[{el()}] no process of this run is left")
print("RESULT", "OK" if not failures else "FAILED: " + "; ".join(dict.fromkeys(failures)), flush=True)
sys.exit(1 if failures else 0)
PY

export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( ($$ % 80) + 20 ))}"
# ~ of the runs is WORKDIR/home: the default fleet file keeps robot spools and learner data
# under ~/.sop/<fleet>, and ROS logs go to ~/.ros; nothing of the runs lands in the real home.
export HOME="$WORK/home"
rm -rf "$HOME"
mkdir -p "$HOME"
# The fleet file for the run with the learner: the default one with a free port instead of
# :50051, which a demo on this machine may hold.
port=$(python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
python - "$ROOT/config/fleet.yaml" "$WORK/fleet_check.yaml" "$port" <<'PY'
import sys, yaml
src, dst, port = sys.argv[1:]
fleet = yaml.safe_load(open(src))
fleet["learner"]["address"] = f"127.0.0.1:{port}"
yaml.safe_dump(fleet, open(dst, "w"), sort_keys=False)
PY

status=0
run() {  # name launch-args...
  local name="$1"; shift
  log "run $name"
  python "$WORK/drive_launch.py" --log "$WORK/run_$name.log" "$@" || status=1
  echo "--- ros2 launch output: $WORK/run_$name.log ($(wc -l <"$WORK/run_$name.log") lines); its launch lines:"
  grep -E '^\[(INFO|ERROR|WARNING)\] ' "$WORK/run_$name.log" || true
}
# 1. the whole fleet with its learner (learner:=auto, the fleet file says run_locally: true)
run all_with_learner fleet:="$WORK/fleet_check.yaml"
# 2. the installed default fleet file, all robots, no learner
run all_default_no_learner learner:=false
# 3. one robot's own computer
run robot1_only robot:=robot1 learner:=false
log "files the runs wrote under $HOME/.sop:"
find "$HOME/.sop" -maxdepth 4 2>/dev/null | sort | head -30
log "done in $((SECONDS - t_start)) s: $([ $status = 0 ] && echo ALL RUNS OK || echo SOME RUN FAILED)"
exit $status
