"""How every sop_ros node process starts and stops.

A node never assumes it owns its process (DESIGN.md): node classes take no global
state, and `run_nodes` can host one or several of them on one executor.
"""
from __future__ import annotations

import sys
from typing import Callable, Sequence

import rclpy
import rclpy.logging
from rclpy._rclpy_pybind11 import RCLError
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node


def run_nodes(factories: Sequence[Callable[[], Node]], args: Sequence[str] | None = None) -> int:
    """Init rclpy, spin the nodes until SIGINT/SIGTERM, shut down without a traceback."""
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
    except RCLError:
        # SIGINT shuts the context down while a worker thread is inside rcl_wait: that wait then
        # fails with "context is not valid". It is the same shutdown, not a fault.
        if rclpy.ok():
            raise
    finally:
        for node in nodes:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
    return exit_code


def declare(node: Node, name: str, default, description: str):
    """Declare a parameter with a description and return its value."""
    from rcl_interfaces.msg import ParameterDescriptor

    return node.declare_parameter(name, default, ParameterDescriptor(description=description)).value
