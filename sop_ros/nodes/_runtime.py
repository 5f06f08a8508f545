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

import math
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Optional, Union

import rclpy
import rclpy.logging
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy._rclpy_pybind11 import RCLError
from rclpy.exceptions import InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

_STOP_CHECK_S = 0.25  # longest a stop request waits for the executor (idle robot: 4 wake-ups a second)


def run_nodes(factories: Sequence[Callable[[], Node]], args: Sequence[str] | None = None) -> int:
    """Init rclpy, spin the nodes until SIGINT/SIGTERM, shut down without a traceback."""
    # SIGINT/SIGTERM only set a flag (Python's own C handler, no rclpy handler): the executor spins in
    # slices of _STOP_CHECK_S and stops between callbacks, then the nodes are closed and the context
    # shut down, in that order. rclpy's handler shut the context down from its signal thread while
    # callbacks ran (their publishes then failed on the invalid context), and under heavy load a node
    # (joystick, policy) was seen to stay in rcl_wait after SIGINT until SIGKILLed. Python's default
    # handler would raise KeyboardInterrupt at any bytecode; landing inside an rclpy Task's constructor
    # it left a half-built Future whose __del__ printed an AttributeError.
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    rclpy.init(args=list(sys.argv if args is None else args), signal_handler_options=SignalHandlerOptions.NO)
    nodes: list[Node] = []
    executor = SingleThreadedExecutor()
    exit_code = 0
    try:
        for factory in factories:
            try:
                nodes.append(factory())
            except (ValueError, OSError) as exc:
                # Bad parameters or a missing file: one clear line, not a traceback.
                rclpy.logging.get_logger("sop_ros").fatal(
                    f"cannot start {getattr(factory, '__name__', factory)}: {exc}"
                )
                exit_code = 2
                return exit_code
            executor.add_node(nodes[-1])
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=_STOP_CHECK_S)
    except ExternalShutdownException:
        pass  # the context was shut down from elsewhere
    except RCLError as exc:
        if not is_shutdown_error(exc):
            raise
    finally:
        for node in nodes:
            close = getattr(node, "close", None)
            if close is not None:
                close()
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return exit_code


def is_shutdown_error(exc: BaseException, context=None) -> bool:
    """An rcl call failed because SIGINT/SIGTERM shut the context down meanwhile (not a fault)."""
    return isinstance(exc, RCLError) and not (context.ok() if context is not None else rclpy.ok())


# (low, high) of a numeric parameter, both inclusive (as ROS checks them); high None = no upper bound.
ValueRange = tuple[Union[int, float], Optional[Union[int, float]]]
_INT64_MAX = 2**63 - 1


def declare(
    node: Node,
    name: str,
    default,
    description: str,
    *,
    value_range: Optional[ValueRange] = None,
    read_only: bool = False,
):
    """Declare a parameter with its descriptor and return its value.

    value_range becomes the descriptor's IntegerRange (int default) or FloatingPointRange (float default), so
    ROS refuses an out-of-range value both as a start-up override and from `ros2 param set`; read_only
    parameters cannot be set after the node started. A bad start-up value raises ValueError naming it.
    """
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if value_range is not None:
        low, high = value_range
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            raise TypeError(f"parameter '{name}': a range needs a numeric default, got {default!r}")
        if isinstance(default, int) and isinstance(low, float):
            # The default's type is the parameter's type: 10 would make a rate an integer parameter.
            raise ValueError(f"parameter '{name}': write its default {default!r} as a float ({default}.0)")
        if isinstance(default, int):
            top = _INT64_MAX if high is None else int(high)
            descriptor.integer_range = [IntegerRange(from_value=int(low), to_value=top)]
        else:
            top = math.inf if high is None else float(high)
            descriptor.floating_point_range = [FloatingPointRange(from_value=float(low), to_value=top)]
    try:
        return node.declare_parameter(name, default, descriptor).value
    except InvalidParameterValueException as exc:
        raise ValueError(f"parameter '{name}': {exc}") from None
