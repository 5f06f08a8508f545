"""Managed nodes: the one shape of every sop_ros node that owns hardware, threads or the link.

A ManagedNode is an rclpy LifecycleNode (DESIGN.md "Managed nodes"), so any ROS 2 client drives it
through `<node>/get_state` and `<node>/change_state`. Subclasses declare their parameters in
__init__ (a bad value stops the process with one line before anything is opened) and override the
hooks; the base class does the bookkeeping every node would otherwise repeat:
- configure(): allocate (backends, spool, link); make publishers, subscriptions and timers with
  managed_publisher / managed_subscription / managed_timer, workers with managed_worker.
- activate(): publishers enabled, timers started, workers started, then the hook; then the newest
  message a latched subscription (transient local, depth 1: a state such as the announced
  checkpoint) received while inactive is delivered, since it is still the current state.
- deactivate(): the hook, then timers cancelled and workers stopped and JOINED, then publishers
  disabled; callbacks that were already queued see `is_active` False and do nothing.
- cleanup(): the hook frees what configure allocated; the base destroys the managed entities.
- shutdown (from any state) and error processing run the same steps as deactivate + cleanup.
A transition that raises ValueError/OSError fails with that one line logged; anything else is
logged with its traceback and ends in error processing (rclpy itself would swallow it silently).
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from rclpy.lifecycle import LifecycleNode, LifecyclePublisher, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy
from rclpy.service import Service
from rclpy.timer import Timer

from sop_ros.nodes._defaults import Params

WORKER_JOIN_S = 5.0  # a worker that has not stopped by then is reported (it can no longer publish)


class ManagedWorker:
    """A node's worker thread: runs target(stop_event) from activate until deactivate joins it."""

    def __init__(self, node: ManagedNode, name: str, target: Callable[[threading.Event], None]):
        self._node, self.name, self._target = node, name, target
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.stop_event.clear()
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._target(self.stop_event)
        except Exception:  # noqa: BLE001 - a worker's crash is reported, the node stays manageable
            self._node.get_logger().error(f"worker {self.name} failed:\n{traceback.format_exc()}")

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is None:
            return
        self.thread.join(WORKER_JOIN_S)
        if self.thread.is_alive():
            self._node.get_logger().error(f"worker {self.name} still running {WORKER_JOIN_S:g} s after its stop")

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


class ManagedNode(LifecycleNode):
    """Base of the managed nodes; see the module docstring for what each transition does."""

    def __init__(self, node_name: str, **kwargs):
        super().__init__(node_name, **kwargs)
        self.autostart = Params(self, "lifecycle")(
            "autostart", "configure and activate at start (false: a lifecycle manager drives the transitions)"
        )
        self._lifecycle_active = False
        self._configured_entities: list[Any] = []  # publishers, subscriptions, timers made by configure
        self._managed_timers: list[Any] = []
        self._managed_workers: list[ManagedWorker] = []
        self._held_deliveries: list[Callable[[], None]] = []  # latched messages that came while inactive
        self._lifecycle_configured = False
        self.exit_code: int | None = None  # set: the node asks its process to stop with this code

    # --- hooks for subclasses ----------------------------------------------------------------
    def configure(self) -> None:
        """Allocate; raise ValueError/OSError for a refusal worth one line."""

    def activate(self) -> None:
        """Runs after publishers, timers and workers started."""

    def deactivate(self) -> None:
        """Runs first on deactivation, while publishers still publish (e.g. a last status)."""

    def cleanup(self) -> None:
        """Free what configure allocated, also after a configure that failed halfway (the managed
        entities are destroyed by the base)."""

    # --- managed entities --------------------------------------------------------------------
    @property
    def is_active(self) -> bool:
        return self._lifecycle_active

    @property
    def lifecycle_state(self) -> str:
        """unconfigured, inactive, active, finalized (or a transition's label while it runs)."""
        return self._state_machine.current_state[1]

    def managed_publisher(self, msg_type, topic: str, qos):
        publisher = self.create_lifecycle_publisher(msg_type, topic, qos)
        self._configured_entities.append(publisher)
        return publisher

    def managed_subscription(self, msg_type, topic: str, callback: Callable[[Any], None], qos):
        latched = qos.durability == DurabilityPolicy.TRANSIENT_LOCAL and qos.depth == 1
        gated = self._when_active_or_held(callback) if latched else self._when_active(callback)
        subscription = self.create_subscription(msg_type, topic, gated, qos)
        self._configured_entities.append(subscription)
        return subscription

    def managed_service(self, srv_type, name: str, callback):
        service = self.create_service(srv_type, name, callback)
        self._configured_entities.append(service)
        return service

    def managed_timer(self, period_s: float, callback: Callable[[], None]):
        timer = self.create_timer(period_s, self._when_active(callback), autostart=False)
        self._configured_entities.append(timer)
        self._managed_timers.append(timer)
        return timer

    def managed_worker(self, name: str, target: Callable[[threading.Event], None]) -> ManagedWorker:
        worker = ManagedWorker(self, name, target)
        self._managed_workers.append(worker)
        return worker

    def _when_active(self, callback: Callable[..., None]) -> Callable[..., None]:
        def gated(*args):
            if self._lifecycle_active:
                callback(*args)

        return gated

    def _when_active_or_held(self, callback: Callable[[Any], None]) -> Callable[[Any], None]:
        """A latched state that arrives while inactive is held for activation: its publisher sends it once
        (the bridge announces its cached checkpoint as it activates, before the policy does)."""
        held: list[Any] = []
        lock = threading.Lock()

        def gated(msg) -> None:
            with lock:
                active = self._lifecycle_active
                held[:] = [] if active else [msg]
            if active:
                callback(msg)

        def deliver_held() -> None:
            with lock:
                msgs, held[:] = list(held), []
            for msg in msgs:
                callback(msg)

        self._held_deliveries.append(deliver_held)
        return gated

    # --- transitions (rclpy calls these; each returns a TransitionCallbackReturn) --------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._lifecycle_configured = True
        try:
            self.configure()
        except (ValueError, OSError) as exc:
            self.get_logger().error(f"cannot configure: {exc}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        except Exception:  # noqa: BLE001 - logged here, rclpy would drop it
            self.get_logger().error(f"configure failed:\n{traceback.format_exc()}")
            return TransitionCallbackReturn.ERROR
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # enables the lifecycle publishers
        self._lifecycle_active = True
        for timer in self._managed_timers:
            timer.reset()
        for worker in self._managed_workers:
            worker.start()
        result = self._guarded("activate", self.activate, result)
        if result == TransitionCallbackReturn.SUCCESS:
            for deliver_held in self._held_deliveries:
                deliver_held()
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = self._guarded("deactivate", self._stop)
        return result if result != TransitionCallbackReturn.SUCCESS else super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = self._guarded("cleanup", self._release)
        return result if result != TransitionCallbackReturn.SUCCESS else super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        return self._guarded("shutdown", self._stop_and_release)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        # From error processing the node goes back to unconfigured: release whatever it held.
        return self._guarded("error processing", self._stop_and_release)

    def _guarded(self, what: str, step: Callable[[], None], result=TransitionCallbackReturn.SUCCESS):
        try:
            step()
        except Exception:  # noqa: BLE001 - logged here, rclpy would drop it
            self.get_logger().error(f"{what} failed:\n{traceback.format_exc()}")
            return TransitionCallbackReturn.ERROR
        return result

    def _stop(self) -> None:
        if not self._lifecycle_active:
            return
        try:
            self.deactivate()
        finally:
            self._lifecycle_active = False
            for timer in self._managed_timers:
                timer.cancel()
            for worker in self._managed_workers:
                worker.stop()
            for entity in self._configured_entities:
                if isinstance(entity, LifecyclePublisher):
                    entity.on_deactivate(None)  # lifecycle publishers: drop what a late thread publishes

    def _release(self) -> None:
        if not self._lifecycle_configured:
            return
        try:
            self.cleanup()
        finally:
            self._lifecycle_configured = False
            for entity in reversed(self._configured_entities):
                if isinstance(entity, LifecyclePublisher):
                    self.destroy_lifecycle_publisher(entity)
                elif isinstance(entity, Timer):
                    self.destroy_timer(entity)
                elif isinstance(entity, Service):
                    self.destroy_service(entity)
                else:
                    self.destroy_subscription(entity)
            self._configured_entities, self._managed_timers, self._managed_workers = [], [], []
            self._held_deliveries = []

    def _stop_and_release(self) -> None:
        try:
            self._stop()
        finally:
            self._release()
