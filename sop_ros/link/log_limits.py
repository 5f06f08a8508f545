"""Log lines a hostile client can cause, at most once per kind per interval.

grpc logs a full traceback for every request it cannot decode ("Exception deserializing
message!", logger grpc._common) and for every exception a handler raises (grpc._server, and
grpc._cython.cygrpc under grpc.aio); the learner's aio handlers log each undecodable request
(UNDECODABLE_REQUEST, sop_ros.link.aio_handlers) they refuse. A client
sending garbage in a loop would fill the learner's log and disk. RateLimitedRecords lets the first
record of each kind through per interval (its traceback shortened to the exception's one line),
counts the rest, and says how many it held back on the next one it lets through.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

GRPC_LOGGERS = ("grpc._common", "grpc._server", "grpc._cython.cygrpc", "sop_ros.link.aio_handlers")
UNDECODABLE_REQUEST = "undecodable request refused (INVALID_ARGUMENT)"
DEFAULT_INTERVAL_S = 60.0


class RateLimitedRecords(logging.Filter):
    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_passed: dict[str, float] = {}
        self._held_back: collections.Counter[str] = collections.Counter()
        self.counts: collections.Counter[str] = collections.Counter()  # every record seen, by kind

    def filter(self, record: logging.LogRecord) -> bool:
        kind = str(record.msg)
        now = self._clock()
        with self._lock:
            self.counts[kind] += 1
            last = self._last_passed.get(kind)
            if last is not None and now - last < self.interval_s:
                self._held_back[kind] += 1
                return False
            self._last_passed[kind] = now
            held, self._held_back[kind] = self._held_back[kind], 0
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            record.msg = f"{record.msg} ({type(error).__name__}: {str(error)[:200]})"
            record.exc_info, record.exc_text = None, None
        if held:
            record.msg = f"{record.msg} [{held} more like this in the last {self.interval_s:.0f} s not logged]"
        return True


_installed: dict[str, RateLimitedRecords] = {}
_install_lock = threading.Lock()


def limit_grpc_logs(interval_s: float = DEFAULT_INTERVAL_S) -> RateLimitedRecords:
    """Install one RateLimitedRecords on grpc's server-side loggers (idempotent); returns it (its counts)."""
    with _install_lock:
        if "filter" not in _installed:
            _installed["filter"] = RateLimitedRecords(interval_s)
            for name in GRPC_LOGGERS:
                logging.getLogger(name).addFilter(_installed["filter"])
        return _installed["filter"]
