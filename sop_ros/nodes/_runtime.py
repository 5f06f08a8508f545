"""How every sop_ros node process starts and stops.

A node never assumes it owns its process (DESIGN.md): node classes take no global
state, and `run_nodes` can host one or several of them on one executor.

The executor is single-threaded. rclpy's MultiThreadedExecutor skips the ready entities of a
mutually exclusive callback group (every node's default) while one of its callbacks runs, and
dispatches them only at the next wake-up: a camera frame that arrived during a joint-state
callback waited 0.3-1.4 s for the policy (measured with `sop bench robots`, 1 robot: p99
frame-to-action 409 ms, 8.8 Hz of 10; single-threaded: 9 ms, 9.8 Hz, and half the CPU).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Sequence

import rclpy
import rclpy.logging
from rclpy.executors import SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from sop_ros.nodes._lifecycle import ManagedNode

_STOP_CHECK_S = 0.25  # longest a stop request waits for the executor (idle robot: 4 wake-ups a second)


def run_nodes(factories: Sequence[Callable[[], Node]], args: Sequence[str] | None = None) -> int:
    """Init rclpy, bring the nodes up, spin until SIGINT/SIGTERM, take them down; 2 if a node cannot start.

    The in-process lifecycle manager: managed nodes with `autostart` are configured, then activated in
    the order given (dependencies first), and on a stop every managed node is shut down (deactivated,
    its workers joined, cleaned up) in reverse order before the context goes, so no thread of a node
    publishes after its node stopped. Nodes without autostart wait for a lifecycle_manager node.
    """
    # SIGINT/SIGTERM only set a flag (Python's own C handler, no rclpy handler): the executor spins in
    # slices of _STOP_CHECK_S and the take-down runs between callbacks, on this thread. rclpy's handler
    # shut the context down from its signal thread while callbacks ran, and under heavy load a node was
    # seen to stay in rcl_wait after SIGINT until SIGKILLed. Python's default handler would raise
    # KeyboardInterrupt at any bytecode (inside an rclpy Task's constructor it left a half-built Future).
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    rclpy.init(args=list(sys.argv if args is None else args), signal_handler_options=SignalHandlerOptions.NO)
    nodes: list[Node] = []
    executor = SingleThreadedExecutor()
    try:
        for factory in factories:
            try:
                nodes.append(factory())
            except (ValueError, OSError) as exc:
                # Bad parameters or a missing file: one clear line, not a traceback.
                _fatal(f"cannot start {getattr(factory, '__name__', factory)}: {exc}")
                return 2
            executor.add_node(nodes[-1])
        if not bring_up([n for n in nodes if getattr(n, "autostart", False)]):
            return 2
        exit_codes: list[int] = []
        while not stop.is_set() and not exit_codes:
            executor.spin_once(timeout_sec=_STOP_CHECK_S)
            exit_codes = [n.exit_code for n in nodes if getattr(n, "exit_code", None) is not None]
        return exit_codes[0] if exit_codes else 0
    finally:
        take_down(nodes)
        for node in nodes:
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def bring_up(nodes: Sequence[ManagedNode]) -> bool:
    """Configure every node, then activate them in order; False (logged) at the first that refuses."""
    for transition in ("configure", "activate"):
        for node in nodes:
            if getattr(node, f"trigger_{transition}")() != TransitionCallbackReturn.SUCCESS:
                # The node logged why; this line says what follows from it.
                _fatal(f"{node.get_fully_qualified_name()} did not {transition}; stopping")
                return False
    return True


def take_down(nodes: Sequence[Node]) -> None:
    """Shut every lifecycle node down, last first, from whatever state it is in."""
    for node in reversed(nodes):
        if isinstance(node, ManagedNode) and node.lifecycle_state != "finalized":
            node.trigger_shutdown()


def _fatal(text: str) -> None:
    rclpy.logging.get_logger("sop_ros").fatal(text)
