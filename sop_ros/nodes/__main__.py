"""Start a node by executable name: `python -m sop_ros.nodes <executable> [--ros-args ...]`.

Both launchers start nodes through here (the CMake-installed lib/sop_ros/<exe> scripts call
`run`). A node may spend seconds importing torch or MuJoCo; a Ctrl-C or SIGTERM in that
window means "never mind", so it exits quietly instead of printing a KeyboardInterrupt
traceback from inside an import. Once imported, the node handles signals itself.
"""

import importlib
import signal
import sys

from sop_ros.core.process_lifetime import die_with_launcher


def _exit_quietly(signum, _frame):
    sys.exit(0)


def run(executable: str, argv: list[str] | None = None) -> int:
    previous = {sig: signal.signal(sig, _exit_quietly) for sig in (signal.SIGINT, signal.SIGTERM)}
    die_with_launcher()
    module = importlib.import_module(f"sop_ros.nodes.{executable}")
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    return module.main(argv)


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit("usage: python -m sop_ros.nodes EXECUTABLE [--ros-args ...]")
    sys.exit(run(sys.argv[1], [f"sop_ros.nodes.{sys.argv[1]}", *sys.argv[2:]]))
