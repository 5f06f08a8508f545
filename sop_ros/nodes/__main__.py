"""Start a node by executable name: `python -m sop_ros.nodes <executable> [--ros-args ...]`.

Both launchers start nodes through here (the CMake-installed lib/sop_ros/<exe> scripts call
`run`). A node may spend seconds importing torch or MuJoCo; a Ctrl-C or SIGTERM in that
window means "never mind", so it exits quietly instead of printing a KeyboardInterrupt
traceback from inside an import. Once imported, the node handles signals itself.
"""

import os
import signal
import sys


def _exit_quietly(signum, _frame):
    # Nothing of the node runs yet, so nothing is lost by leaving at once. os._exit, not sys.exit: a
    # SystemExit raised inside a half-done import of MuJoCo/EGL, torch or rclpy runs the interpreter's
    # finalisation over half-built extension state (a sim_robot signalled at start-up died of SIGSEGV).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# Installed before anything of sop_ros is imported: a signal in that window printed a KeyboardInterrupt
# traceback. run_nodes replaces it with its own stop flag once the node exists.
for _signal in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_signal, _exit_quietly)

import importlib  # noqa: E402

from sop_ros.core.process_lifetime import die_with_launcher  # noqa: E402


def run(executable: str, argv: list[str] | None = None) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_quietly)  # the CMake-installed scripts import run() from here
    die_with_launcher()
    module = importlib.import_module(f"sop_ros.nodes.{executable}")
    return module.main(argv)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit("usage: python -m sop_ros.nodes EXECUTABLE [--ros-args ...]")
    sys.exit(run(sys.argv[1], [f"sop_ros.nodes.{sys.argv[1]}", *sys.argv[2:]]))
