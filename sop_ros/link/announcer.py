"""Newest-only broadcast: every subscriber sees the latest value, never a backlog.

One slot holds the latest announcement; publishing overwrites it and wakes the waiters.
A subscriber asks for "anything newer than what I saw", so a slow subscriber that
missed versions 3..9 gets 10 and nothing else (ZMQ CONFLATE / "drain to latest",
without a queue per subscriber). Waiting is either blocking (wait_newer, threads) or by listener:
an asyncio watcher registers a callback that wakes its event loop, so it holds no thread while idle.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, Optional, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._version = 0
        self._value: Optional[T] = None
        self._closed = False
        self._listeners: set[Callable[[], None]] = set()

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` (from the publishing thread, so it must not block) on every publish and on close."""
        with self._cond:
            self._listeners.add(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        with self._cond:
            self._listeners.discard(listener)

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify_all()
            listeners = list(self._listeners)
        for listener in listeners:  # outside the lock: a listener may call back into the slot
            listener()

    def publish(self, version: int, value: T) -> bool:
        """Store `value` if `version` is newer than the current one; returns whether it was."""
        with self._cond:
            if version <= self._version:
                return False
            self._version, self._value = version, value
        self._notify()
        return True

    def latest(self) -> tuple[int, Optional[T]]:
        with self._cond:
            return self._version, self._value

    def newer(self, seen_version: int) -> Optional[tuple[int, T]]:
        """The latest (version, value) if newer than seen_version and the slot is open; None otherwise."""
        with self._cond:
            if self._version > seen_version and self._value is not None and not self._closed:
                return self._version, self._value
            return None

    def wait_newer(self, seen_version: int, timeout: float) -> Optional[tuple[int, T]]:
        """The latest (version, value) if newer than seen_version, waiting up to `timeout` s; None otherwise."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._version > seen_version, timeout)
        return self.newer(seen_version)

    def close(self) -> None:
        """Wake every waiter for good (server shutdown)."""
        with self._cond:
            self._closed = True
        self._notify()

    @property
    def closed(self) -> bool:
        return self._closed
