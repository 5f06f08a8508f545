"""Newest-only broadcast: every subscriber sees the latest value, never a backlog.

One slot holds the latest announcement; publishing overwrites it and wakes the waiters.
A subscriber asks for "anything newer than what I saw", so a slow subscriber that
missed versions 3..9 gets 10 and nothing else (ZMQ CONFLATE / "drain to latest",
without a queue per subscriber).
"""

from __future__ import annotations

import threading
from typing import Generic, Optional, TypeVar

T = TypeVar("T")


class LatestSlot(Generic[T]):
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._version = 0
        self._value: Optional[T] = None
        self._closed = False

    def publish(self, version: int, value: T) -> bool:
        """Store `value` if `version` is newer than the current one; returns whether it was."""
        with self._cond:
            if version <= self._version:
                return False
            self._version, self._value = version, value
            self._cond.notify_all()
            return True

    def latest(self) -> tuple[int, Optional[T]]:
        with self._cond:
            return self._version, self._value

    def wait_newer(self, seen_version: int, timeout: float) -> Optional[tuple[int, T]]:
        """The latest (version, value) if newer than seen_version, waiting up to `timeout` s; None otherwise."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._version > seen_version, timeout)
            if self._version > seen_version and self._value is not None and not self._closed:
                return self._version, self._value
            return None

    def close(self) -> None:
        """Wake every waiter for good (server shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed
