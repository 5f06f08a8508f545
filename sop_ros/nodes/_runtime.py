"""How every sop_ros node process starts and stops.

A node never assumes it owns its process (DESIGN.md): node classes take no global
state, and `run_nodes` can host one or several of them on one executor.
"""
from __future__ import annotations

import signal
import sys
from typing import Callable, Sequence

import rclpy
import rclpy.logging
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node


def run_nodes(factories: Sequence[Callable[[], Node]], args: Sequence[str] | None = None) -> int:
    """Init rclpy, spin the nodes until SIGINT/SIGTERM, shut down without a traceback."""
    # rclpy's own handler shuts the context down (spin then raises ExternalShutdownException) and
    # chains to the Python handler installed before init. Python's default one raises
    # KeyboardInterrupt at whatever bytecode the main thread is running; landing inside an rclpy
    # Task's constructor it left a half-built Future whose __del__ printed an AttributeError.
    # So the chained handler only notes the signal.
    previous_sigint = signal.signal(signal.SIGINT, _note_sigint)
    rclpy.init(args=list(sys.argv if args is None else args))
    nodes: list[Node] = []
    executor = MultiThreadedExecutor()
    exit_code = 0
    try:
        for factory in factories:
            try:
                nodes.append(factory())
            except (ValueError, OSError) as exc:
                # Bad parameters or a missing file: one clear line, not a traceback.
                rclpy.logging.get_logger("sop_ros").fatal(f"cannot start {getattr(factory, '__name__', factory)}: {exc}")
                exit_code = 2
                return exit_code
            executor.add_node(nodes[-1])
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # rclpy turns SIGINT into ExternalShutdownException (packaging spike P10)
    except RCLError as exc:
        # SIGINT shuts the context down while a worker thread is inside rcl_wait: that wait then
        # fails with "context is not valid". It is the same shutdown, not a fault.
        if not is_shutdown_error(exc):
            raise
    except Exception as exc:
        # A signal that lands while a node is still being built no longer interrupts the constructor
        # (see above); what then fails on the shut-down context is the shutdown: one line, no traceback.
        if rclpy.ok():
            raise
        rclpy.logging.get_logger("sop_ros").warning(f"stopped while starting: {exc!r}")
    finally:
        for node in nodes:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        executor.shutdown()
        _retrieve_shutdown_errors(executor)
        rclpy.try_shutdown()
        signal.signal(signal.SIGINT, previous_sigint)
    return exit_code


def _note_sigint(signum, _frame) -> None:
    """SIGINT after rclpy's handler has shut the context down: nothing left to do here."""


def is_shutdown_error(exc: BaseException, context=None) -> bool:
    """An rcl call failed because SIGINT/SIGTERM shut the context down meanwhile (not a fault)."""
    return isinstance(exc, RCLError) and not (context.ok() if context is not None else rclpy.ok())


def _retrieve_shutdown_errors(executor: MultiThreadedExecutor) -> None:
    """Collect the callbacks that failed after the executor stopped collecting them.

    A callback that publishes while SIGINT invalidates the context fails with RCLError; the
    executor (rclpy Kilted keeps them in `_futures`) no longer retrieves it, and rclpy then prints
    "exception was never retrieved" to stderr. Those are the shutdown; anything else is logged.
    """
    for future in list(getattr(executor, "_futures", ())):
        if not future.done():
            continue
        exc = future.exception()
        if exc is not None and not is_shutdown_error(exc):
            rclpy.logging.get_logger("sop_ros").error(f"a callback failed while shutting down: {exc!r}")


def declare(node: Node, name: str, default, description: str):
    """Declare a parameter with a description and return its value."""
    from rcl_interfaces.msg import ParameterDescriptor

    return node.declare_parameter(name, default, ParameterDescriptor(description=description)).value
