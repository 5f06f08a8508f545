"""Lifecycle manager: brings one robot's managed nodes up in dependency order and down in reverse.

For nodes in other processes (each launcher starts a robot's nodes as processes of their own; the
in-process equivalent is sop_ros.nodes._runtime.bring_up/take_down). It talks to them only through
the standard services `<node>/get_state` and `<node>/change_state`, so it drives any ROS 2
lifecycle node. `managed_nodes` lists the nodes, relative to the manager's namespace, in bring-up
order: activating the manager configures them all, then activates them in that order, and keeps
watching (every `watch_period_s`) to bring a node up again that came back unconfigured (respawned).
Deactivating the manager (SIGINT/SIGTERM to its process) deactivates them, last first. A node that
refuses to come up stops the manager's process with exit code 1, so a launcher reports it.
"""

from __future__ import annotations

import threading
import time

import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.executors import SingleThreadedExecutor

from sop_ros.nodes._defaults import PERIOD_S, Params
from sop_ros.nodes._lifecycle import ManagedNode
from sop_ros.nodes._runtime import run_nodes

_TAKE_DOWN_WAIT_S = 0.5  # a node whose services do not answer by then is gone or stopping by itself
_SLICE_S = 0.1  # a call in progress notices a stop request this quickly
_ATTEMPT_S = 5.0  # one service call's wait during bring-up; then it is asked again
_WARN_AFTER_S = 30.0  # a node not up by then is reported once (bring-up goes on until the timeout)
# Labels a node reports while a transition runs (the answer comes once it has finished).
# The transition that takes a node from each settled state one step towards active.
_TOWARDS_ACTIVE = {"unconfigured": Transition.TRANSITION_CONFIGURE, "inactive": Transition.TRANSITION_ACTIVATE}
_TRANSITION_STATES = ("configuring", "activating", "deactivating", "cleaningup", "shuttingdown", "errorprocessing")


class LifecycleManagerNode(ManagedNode):
    def __init__(self, **kwargs):
        super().__init__("lifecycle_manager", **kwargs)
        p = Params(self, "lifecycle_manager")
        self.managed_nodes: list[str] = p("managed_nodes", "nodes to bring up, in this order (relative names)")
        self.timeout_s = p(
            "transition_timeout_s",
            "longest wait for a node's services or a transition (a node may still be importing torch)",
            value_range=PERIOD_S,
        )
        self.watch_period_s = p(
            "watch_period_s", "how often the nodes' states are checked once up", value_range=PERIOD_S
        )
        self.robot_up = threading.Event()

    def configure(self) -> None:
        # A node and executor of the manager's own for the service calls: the calls are made from the
        # watch thread and, on deactivation, from the thread that runs the transition, and neither can
        # wait on the executor that spins this node. Without the process's arguments: their __node
        # remapping would give it this node's name.
        self._client_node = rclpy.create_node(
            f"{self.get_name()}_client",
            namespace=self.get_namespace(),
            context=self.context,
            use_global_arguments=False,
            start_parameter_services=False,
        )
        self._client_executor = SingleThreadedExecutor(context=self.context)
        self._client_executor.add_node(self._client_node)
        self._service_clients = {
            name: (
                self._client_node.create_client(GetState, f"{name}/get_state"),
                self._client_node.create_client(ChangeState, f"{name}/change_state"),
            )
            for name in self.managed_nodes
        }
        self.watcher = self.managed_worker("lifecycle_watch", self._watch)

    def deactivate(self) -> None:
        self.watcher.stop()  # no bring-up runs while the robot is taken down
        self.robot_up.clear()
        for name in reversed(self.managed_nodes):
            if self._state(name, _TAKE_DOWN_WAIT_S) == "active":
                self._transition(name, Transition.TRANSITION_DEACTIVATE)
        self.get_logger().info(f"robot down: deactivated {list(reversed(self.managed_nodes))}")

    def cleanup(self) -> None:
        self._client_executor.shutdown()
        self._client_node.destroy_node()

    # --- watch thread --------------------------------------------------------------------------
    def _watch(self, stop: threading.Event) -> None:
        if not self._bring_up(stop):
            return
        self.robot_up.set()
        self.get_logger().info(f"robot up: {self.managed_nodes} active")
        while not stop.wait(self.watch_period_s):
            for name in self.managed_nodes:
                state = self._state(name, self.watch_period_s, stop)
                if state in ("unconfigured", "inactive"):
                    self.get_logger().warning(f"{name} is {state} (restarted?); bringing it up again")
                    self._bring_up(stop, [name])

    def _bring_up(self, stop: threading.Event, names: list[str] | None = None) -> bool:
        """Configure every node, then activate them in order; on a refusal stop this process (exit 1)."""
        names = self.managed_nodes if names is None else names
        for to_state in ("inactive", "active"):
            for name in names:
                reached, state = self._reach(name, to_state, stop)
                if stop.is_set():
                    return False
                if not reached:
                    self.get_logger().error(f"{name} did not come up (state {state}); stopping the robot's manager")
                    self.exit_code = 1
                    return False
        return True

    def _reach(self, name: str, to_state: str, stop: threading.Event):
        """Take one node to to_state (or beyond) from where it is: (reached, last state seen).

        Calls are retried in short attempts until transition_timeout_s: a request can be lost while
        discovery settles, and a busy node answers late; waiting the whole timeout on one request would
        stall the robot on a single lost message. A transition is re-sent only while the node still
        reports the state it starts from, so a late answer never runs a transition twice. A node that
        restarted during bring-up is unconfigured again when its turn to activate comes: configured first.
        """
        past = ("inactive", "active") if to_state == "inactive" else ("active",)
        start = time.monotonic()
        deadline = start + self.timeout_s
        state, warned = "unreachable", False
        while not stop.is_set() and time.monotonic() < deadline:
            attempt_s = min(_ATTEMPT_S, max(deadline - time.monotonic(), _SLICE_S))
            state = self._state(name, attempt_s, stop)
            if state in past:
                return True, state
            if state in _TOWARDS_ACTIVE:
                answered, success = self._transition(name, _TOWARDS_ACTIVE[state], stop, attempt_s)
                if answered and not success and self._state(name, attempt_s, stop) == state:
                    return False, f"{state}: refused the transition"
            elif state in _TRANSITION_STATES:
                stop.wait(_SLICE_S)  # answered mid-transition (a multi-threaded node): ask again shortly
            elif state != "unreachable":
                return False, state  # finalized: the node cannot come up any more
            if not warned and time.monotonic() - start > _WARN_AFTER_S:
                self.get_logger().warning(
                    f"{name} not {to_state} after {_WARN_AFTER_S:g} s (state {state}); still trying"
                )
                warned = True
        return False, state

    # --- service calls -------------------------------------------------------------------------
    def _state(self, name: str, wait_s: float, stop: threading.Event | None = None) -> str:
        """The node's state label, or 'unreachable'."""
        response = self._call(self._service_clients[name][0], GetState.Request(), wait_s, stop)
        return response.current_state.label if response is not None else "unreachable"

    def _transition(
        self, name: str, transition_id: int, stop: threading.Event | None = None, wait_s: float | None = None
    ) -> tuple[bool, bool]:
        """(answered, success) of one change_state call."""
        request = ChangeState.Request(transition=Transition(id=transition_id))
        response = self._call(self._service_clients[name][1], request, wait_s or self.timeout_s, stop)
        return response is not None, response is not None and response.success

    def _call(self, client, request, wait_s: float, stop: threading.Event | None):
        """One service call; None when it does not answer within wait_s or `stop` is set meanwhile."""
        deadline = time.monotonic() + wait_s
        stopped = (lambda: stop.is_set()) if stop is not None else (lambda: False)
        while not client.wait_for_service(timeout_sec=_SLICE_S):
            if stopped() or time.monotonic() >= deadline:
                return None
        future = client.call_async(request)
        while not future.done() and not stopped() and time.monotonic() < deadline:
            self._client_executor.spin_until_future_complete(future, _SLICE_S)
        if not future.done():
            client.remove_pending_request(future)
            return None
        return future.result()


def main(args=None) -> int:
    return run_nodes([LifecycleManagerNode], args)


if __name__ == "__main__":
    raise SystemExit(main())
