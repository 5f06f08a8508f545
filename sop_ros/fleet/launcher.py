"""The pip-only launcher: runs the specs of node_specs() as supervised processes.

What `ros2 launch` does for a full ROS 2 install, for installs without launch_ros:
- each node runs as `python -m sop_ros.nodes <exe> --ros-args ...` with the same
  name, namespace, parameters (a params file, as launch_ros writes) and remappings;
- every output line is prefixed with the process name;
- Ctrl-C / SIGTERM shuts everything down (SIGINT, then SIGTERM, then SIGKILL); the specs that stop
  first (each robot's lifecycle manager, which deactivates the robot's nodes last first) get SIGINT
  and are waited for before the rest;
- a process that dies is restarted when its spec says respawn, otherwise the launcher
  says which one died with which exit code, stops the rest and exits non-zero.
Each child runs in its own process group so a terminal's Ctrl-C reaches it once,
from us (packaging spike P10), and nothing is left behind. SIGINT and SIGTERM go to the
node process only, as `ros2 launch` sends them: a node stops its own helpers (torchrun its
workers), and a helper caught mid-start must not die under it (glfw's library probe, a
short-lived Python child of a sim node still importing, printed "Fatal Python error" when
the group got SIGINT). SIGKILL, and the final sweep, take the whole group.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Optional, TextIO

import yaml

from sop_ros.core.process_lifetime import LAUNCHER_PID_ENV
from sop_ros.fleet.specs import NodeSpec, ProcessSpec

log = logging.getLogger("sop_ros.launcher")

SHUTDOWN_GRACE_S = 10.0  # per stage: SIGINT, then SIGTERM, then SIGKILL


def command_for(spec: NodeSpec | ProcessSpec, params_dir: Path) -> list[str]:
    """The command line that starts `spec` (the same arguments launch_ros would pass)."""
    if isinstance(spec, ProcessSpec):
        return [sys.executable, "-m", spec.module, *spec.args]
    params_file = params_dir / f"{spec.fully_qualified_name.strip('/').replace('/', '__')}.yaml"
    params_file.write_text(yaml.safe_dump({spec.fully_qualified_name: {"ros__parameters": spec.parameters}}))
    cmd = [
        sys.executable,
        "-m",
        f"{spec.package}.nodes",
        spec.executable,
        "--ros-args",
        "-r",
        f"__node:={spec.name}",
        "-r",
        f"__ns:={spec.namespace}",
        "--params-file",
        str(params_file),
    ]
    for src, dst in spec.remappings:
        cmd += ["-r", f"{src}:={dst}"]
    return cmd


@dataclasses.dataclass
class _Child:
    spec: NodeSpec | ProcessSpec
    cmd: list[str]
    proc: Optional[subprocess.Popen] = None
    restarts: int = 0
    respawn_at: Optional[float] = None

    @property
    def label(self) -> str:
        spec = self.spec
        return spec.fully_qualified_name if isinstance(spec, NodeSpec) else spec.name


class FleetLauncher:
    """Start, supervise and stop a list of specs. `run()` blocks until shutdown and returns the exit code."""

    def __init__(
        self,
        specs: Sequence[NodeSpec | ProcessSpec],
        out: TextIO = sys.stdout,
        env: Optional[dict] = None,
        on_started: Optional[Callable[[FleetLauncher], None]] = None,
    ):
        if not specs:
            raise ValueError("nothing to launch: the selection contains no nodes")
        self._params_dir = Path(tempfile.mkdtemp(prefix="sop_launch_params_"))
        self._children = [_Child(spec, command_for(spec, self._params_dir)) for spec in specs]
        self._out = out
        self._out_lock = threading.Lock()
        self._env = dict(os.environ if env is None else env)
        self._env[LAUNCHER_PID_ENV] = str(os.getpid())  # children die with us (core.process_lifetime)
        self._env.setdefault("PYTHONUNBUFFERED", "1")
        self._env.setdefault("RCUTILS_LOGGING_BUFFERED_STREAM", "0")
        self._stop = threading.Event()
        self._on_started = on_started
        self.exit_code = 0

    @property
    def pids(self) -> list[int]:
        return [c.proc.pid for c in self._children if c.proc is not None and c.proc.poll() is None]

    def request_stop(self, *_args) -> None:
        self._stop.set()

    def _emit(self, label: str, line: str) -> None:
        with self._out_lock:
            self._out.write(f"[{label}] {line}" if line.endswith("\n") else f"[{label}] {line}\n")
            self._out.flush()

    def _start(self, child: _Child) -> None:
        child.proc = subprocess.Popen(
            child.cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self._env,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        threading.Thread(target=self._pump, args=(child.label, child.proc.stdout), daemon=True).start()
        self._emit("launch", f"started {child.label} (pid {child.proc.pid})")

    def _pump(self, label: str, stream) -> None:
        for line in stream:
            self._emit(label, line)

    def run(self) -> int:
        installed = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                installed[sig] = signal.signal(sig, self.request_stop)
        try:
            for child in self._children:
                self._start(child)
            if self._on_started:
                self._on_started(self)
            while not self._stop.wait(0.2):
                self._supervise()
        finally:
            self._shutdown()
            for sig, handler in installed.items():
                signal.signal(sig, handler)
            for f in self._params_dir.iterdir():
                f.unlink()
            self._params_dir.rmdir()
        return self.exit_code

    def _supervise(self) -> None:
        now = time.monotonic()
        for child in self._children:
            if child.respawn_at is not None:
                if now >= child.respawn_at:
                    child.respawn_at = None
                    child.restarts += 1
                    self._start(child)
                continue
            code = child.proc.poll() if child.proc else None
            if code is None:
                continue
            if child.spec.respawn:
                self._emit(
                    "launch", f"{child.label} exited with code {code}; respawning in {child.spec.respawn_delay_s:g} s"
                )
                child.respawn_at = now + child.spec.respawn_delay_s
            else:
                self._emit("launch", f"ERROR: {child.label} died with exit code {code}; shutting the fleet down")
                self.exit_code = 1
                self._stop.set()
                return

    def _shutdown(self) -> None:
        first = [c for c in self._live() if getattr(c.spec, "stops_first", False)]
        for child in first:
            try:
                os.kill(child.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + SHUTDOWN_GRACE_S
        while any(c.proc.poll() is None for c in first) and time.monotonic() < deadline:
            time.sleep(0.05)
        live = self._live()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if not live:
                break
            for child in live:
                try:
                    if sig == signal.SIGKILL:
                        os.killpg(child.proc.pid, sig)
                    else:
                        os.kill(child.proc.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + SHUTDOWN_GRACE_S
            while live and time.monotonic() < deadline:
                live = [c for c in live if c.proc.poll() is None]
                time.sleep(0.05)
            if live and sig != signal.SIGKILL:
                self._emit(
                    "launch",
                    f"{', '.join(c.label for c in live)} still running after {signal.Signals(sig).name}; escalating",
                )
        for child in self._children:
            if child.proc is not None:
                child.proc.wait()
                # A node's own children (e.g. worker processes) share its group: reap them too.
                try:
                    os.killpg(child.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        self._emit("launch", "all processes stopped")

    def _live(self) -> list[_Child]:
        return [c for c in self._children if c.proc is not None and c.proc.poll() is None]
