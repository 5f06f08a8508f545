"""A grpc.aio server on an event loop thread of its own, started and stopped from synchronous code.

The learner (LearnerProcess, tests, the benchmarks) is synchronous: its trainer, housekeeping and
signal handling are threads. This keeps that shape: the server's event loop runs on one thread
owned here, the synchronous handlers on a worker pool owned here, and start()/stop() mirror
grpc.Server's, so callers do not change.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent import futures
from typing import Any, Optional

import grpc

from sop_ros.link.admission import Admission
from sop_ros.link.aio_handlers import Runtime

_LOGGER = logging.getLogger(__name__)
_SETTLE_S = 5.0  # after the server stopped: how long its cancelled handlers get to unwind


class AioServer:
    def __init__(self, workers: int, options: list[tuple[str, Any]]):
        self.loop = asyncio.new_event_loop()
        self.pool = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sop-learner")
        self._thread = threading.Thread(target=self.loop.run_forever, name="sop-learner-loop", daemon=True)
        self._thread.start()
        self._stopped = False
        self.runtime: Optional[Runtime] = None
        try:
            self.server: grpc.aio.Server = self.call(self._create(options))
        except BaseException:
            self._close_loop()
            raise

    async def _create(self, options: list[tuple[str, Any]]) -> grpc.aio.Server:
        # No maximum_concurrent_rpcs: it would refuse health checks too; admission bounds each robot instead.
        return grpc.aio.server(migration_thread_pool=self.pool, options=options)

    def call(self, coroutine: Coroutine, timeout: Optional[float] = None) -> Any:
        """Run `coroutine` on the server's loop and wait for its result (from any other thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def new_runtime(self, admission: Admission, admission_key: Callable[[Any, str], Optional[str]]) -> Runtime:
        self.runtime = Runtime(self.loop, self.pool, admission, admission_key)
        return self.runtime

    def add_port(self, address: str, credentials: Optional[grpc.ServerCredentials]) -> int:
        """Listen on `address` (plaintext when credentials is None); the bound port, OSError when it cannot."""

        async def add() -> int:
            if credentials is None:
                return self.server.add_insecure_port(address)
            return self.server.add_secure_port(address, credentials)

        try:
            port = self.call(add())
        except RuntimeError as exc:  # grpc: "Failed to bind to address"
            raise OSError(f"cannot listen on {address}: {exc}") from exc
        if not port:
            raise OSError(f"cannot listen on {address}")
        return port

    def start(self) -> None:
        self.call(self.server.start())

    @property
    def stopped(self) -> bool:
        return self._stopped

    def stop(self, grace: Optional[float]) -> threading.Event:
        """Refuse new calls, give in-flight ones `grace` seconds, then cancel them; returns a set Event
        (grpc.Server.stop's shape: callers `.wait()` on it). Idempotent."""
        stopped = threading.Event()
        if not self._stopped:
            self._stopped = True
            if self.runtime is not None:
                self.runtime.stopping.set()
            try:
                self.call(self._stop(grace))
            finally:
                self._close_loop()
        stopped.set()
        return stopped

    async def _stop(self, grace: Optional[float]) -> None:
        await self.server.stop(grace)
        current = asyncio.current_task()
        rest = [task for task in asyncio.all_tasks() if task is not current]
        for task in rest:
            task.cancel()
        if rest:
            await asyncio.wait(rest, timeout=_SETTLE_S)
        await self.loop.shutdown_asyncgens()

    def _close_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()
        # Workers still finishing a step (an fsync, a commit) complete on their own; nothing waits for them.
        self.pool.shutdown(wait=False, cancel_futures=True)
