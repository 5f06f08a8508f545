"""A launched process dies with its launcher.

The launchers start every node (and the local learner) in its own session, so a terminal's Ctrl-C
reaches it once, through the launcher. The price: a launcher that is killed outright (SIGKILL, an
OOM kill, a test runner's hard timeout) leaves its robots' nodes running, still publishing on the
robot's topics. The launcher names itself in LAUNCHER_PID_ENV; a child that finds it asks Linux to
send it SIGINT (its ordinary, graceful shutdown) when that parent dies, and exits at once if the
parent is already gone. Elsewhere (no prctl) nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

LAUNCHER_PID_ENV = "SOP_LAUNCHER_PID"
_PR_SET_PDEATHSIG = 1


def die_with_launcher() -> None:
    """If started by a launcher (LAUNCHER_PID_ENV), get SIGINT when it dies; exit 0 if it already has."""
    launcher = os.environ.pop(LAUNCHER_PID_ENV, None)  # not inherited: our own children are not the launcher's
    if not launcher or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGINT), 0, 0, 0)
    except (OSError, AttributeError):
        return
    # The launcher may have died between our fork and the prctl: then nobody will signal us.
    if str(os.getppid()) != launcher:
        sys.exit(0)
