"""The sop.v1 servicers under grpc.aio: synchronous methods on a worker pool, async ones on the event loop.

An idle checkpoint watch is an async method: it waits on the event loop and holds no thread, so one
learner holds thousands. Every other method stays synchronous (uploads fsync, downloads read maps)
and runs on the worker pool. Each call is admitted for its robot (sop_ros.link.admission) on the event
loop before it takes a worker, so one robot's excess is refused to that robot alone. grpc's own
migration of sync handlers is not used: it cannot admit first, its context lacks is_active(), and an
undecodable request would end as UNKNOWN with a logged traceback instead of INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any, Optional

import grpc
from google.protobuf.message_factory import GetMessageClass

from sop_ros.link.admission import Admission, Kind, Ticket
from sop_ros.link.log_limits import UNDECODABLE_REQUEST

_LOGGER = logging.getLogger(__name__)  # rate-limited by log_limits: a hostile client can cause these lines
_STEP_S = 1.0  # how often a worker waiting on the event loop checks that its call and the loop still run
_END = object()


class Refusal(Exception):
    """A check run on the event loop refused the call (LoopContext.abort); the handler sends the status."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple = ()):
        super().__init__(details)
        self.code, self.details, self.trailing = code, details, trailing

    async def send(self, context) -> None:
        await context.abort(self.code, self.details, self.trailing)


class LoopContext:
    """The synchronous part of a ServicerContext, for checks (auth, fields) run on the event loop."""

    def __init__(self, context):
        self._context = context
        self._trailing: tuple = ()

    def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise Refusal(code, details, self._trailing)

    def set_trailing_metadata(self, metadata) -> None:
        self._trailing = tuple(metadata)

    def auth_context(self):
        return self._context.auth_context()

    def invocation_metadata(self):
        return self._context.invocation_metadata()

    def peer(self) -> str:
        return self._context.peer()


class ThreadContext(LoopContext):
    """A grpc.ServicerContext for a synchronous handler on a worker thread; abort and reads hop to the loop."""

    def __init__(self, context, loop: asyncio.AbstractEventLoop, stopping: threading.Event):
        super().__init__(context)
        self._loop, self._stopping = loop, stopping
        self.cancelled = threading.Event()  # the client went away (or the call ended) while a worker ran

    def is_active(self) -> bool:
        return not (self.cancelled.is_set() or self._stopping.is_set() or self._context.done())

    def on_loop(self, coroutine) -> Any:
        """Run `coroutine` on the event loop and wait for it; ConnectionAbortedError once the call has ended."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        while True:
            try:
                return future.result(_STEP_S)
            except futures.TimeoutError:
                if not self.is_active() or not self._loop.is_running():
                    future.cancel()
                    raise ConnectionAbortedError("the call ended while its handler waited") from None

    def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self.on_loop(self._context.abort(code, details))  # raises grpc's AbortError, which ends the call
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    def set_trailing_metadata(self, metadata) -> None:
        self._context.set_trailing_metadata(metadata)

    def time_remaining(self) -> Optional[float]:
        return self._context.time_remaining()


class Runtime:
    """What every wrapped handler shares: the loop, the worker pool and the per-robot admission."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pool: futures.ThreadPoolExecutor,
        admission: Admission,
        admission_key: Callable[[Any, str], Optional[str]],
    ):
        self.loop, self.pool, self.admission = loop, pool, admission
        self._admission_key = admission_key
        self.stopping = threading.Event()  # set when the server stops: workers' is_active() turns False

    async def admit(self, kind: Kind, context, request: Any = None) -> Ticket:
        key = self._admission_key(context, _claimed_robot(request))
        ticket = self.admission.admit(kind, key)
        if ticket is None:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, self.admission.refusal(kind, key))
        return ticket


class _Worker:
    """One call's synchronous steps on the pool. Its ticket is held until the last step has returned,
    even when the client cancels meanwhile: a cancelled call still occupies its worker until then."""

    def __init__(self, runtime: Runtime, ticket: Ticket, context):
        self._runtime, self._ticket = runtime, ticket
        self.context = ThreadContext(context, runtime.loop, runtime.stopping)
        self._pending: Optional[asyncio.Future] = None

    async def run(self, fn: Callable, *args: Any) -> Any:
        self._pending = self._runtime.loop.run_in_executor(self._runtime.pool, fn, *args)
        return await asyncio.shield(self._pending)  # a cancelled call must not orphan the running step

    async def __aenter__(self) -> _Worker:
        return self

    async def __aexit__(self, exc_type, exc, tb) -> None:
        self.context.cancelled.set()  # the call is over: a step still running stops at its next is_active()
        if self._pending is not None and not self._pending.done():
            self._pending.add_done_callback(self._release_late)
        else:
            self._ticket.release()

    def _release_late(self, future: asyncio.Future) -> None:
        if not future.cancelled():
            future.exception()  # retrieved: the error of a call nobody waits for any more is not news
        self._ticket.release()


async def _parse(context, request_type, raw: bytes):
    try:
        return request_type.FromString(raw)
    except Exception as exc:  # any parse failure is the caller's malformed request
        _LOGGER.warning(UNDECODABLE_REQUEST, exc_info=exc)
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT, f"the request is not a valid {request_type.DESCRIPTOR.full_name}"
        )


def _claimed_robot(request: Any) -> str:
    """The robot id a request names (its robot_id or metadata.robot_id), "" when none."""
    for holder in (request, getattr(request, "metadata", None)):
        robot_id = getattr(holder, "robot_id", "")
        if isinstance(robot_id, str) and robot_id:
            return robot_id
    return ""


def _unary(runtime: Runtime, fn: Callable, request_type) -> Callable:
    async def handle(raw: bytes, context):
        request = await _parse(context, request_type, raw)
        async with _Worker(runtime, await runtime.admit(Kind.CALL, context, request), context) as worker:
            return await worker.run(fn, request, worker.context)

    return handle


def _server_stream(runtime: Runtime, fn: Callable, request_type) -> Callable:
    async def handle(raw: bytes, context) -> None:
        request = await _parse(context, request_type, raw)
        async with _Worker(runtime, await runtime.admit(Kind.CALL, context, request), context) as worker:
            responses = fn(request, worker.context)
            while (response := await worker.run(next, responses, _END)) is not _END:
                await context.write(response)

    return handle


def _client_stream(runtime: Runtime, fn: Callable, request_type) -> Callable:
    async def handle(_receiver, context):
        async with _Worker(runtime, await runtime.admit(Kind.CALL, context), context) as worker:
            return await worker.run(fn, _requests(context, request_type, worker.context), worker.context)

    return handle


def _requests(context, request_type, thread_context: ThreadContext):
    """The request stream as a blocking iterator for a worker; it ends when the client does or goes away."""
    while True:
        try:
            raw = thread_context.on_loop(context.read())
        except (Exception, asyncio.CancelledError):  # cancelled, ended or stopped: nothing more will come
            thread_context.cancelled.set()
            return
        if raw is grpc.aio.EOF:
            return
        try:
            request = request_type.FromString(raw)
        except Exception as exc:  # a malformed message ends the stream with INVALID_ARGUMENT
            _LOGGER.warning(UNDECODABLE_REQUEST, exc_info=exc)
            thread_context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"a message is not a valid {request_type.DESCRIPTOR.full_name}"
            )
        yield request


def _watch(runtime: Runtime, fn: Callable, request_type) -> Callable:
    async def handle(raw: bytes, context) -> None:
        request = await _parse(context, request_type, raw)
        ticket = await runtime.admit(Kind.WATCH, context, request)
        responses = fn(request, context)
        try:
            async for response in responses:
                await context.write(response)
        finally:
            await responses.aclose()
            ticket.release()

    return handle


def add_service(server: grpc.aio.Server, runtime: Runtime, pb2_module, service_name: str, servicer) -> None:
    """Register `servicer`'s methods of `service_name` (from the descriptor of `pb2_module`) on `server`."""
    service = pb2_module.DESCRIPTOR.services_by_name[service_name]
    handlers = {}
    for method in service.methods:
        fn = getattr(servicer, method.name)
        request_type = GetMessageClass(method.input_type)
        serializer = GetMessageClass(method.output_type).SerializeToString
        if inspect.isasyncgenfunction(fn) and method.server_streaming and not method.client_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _watch(runtime, fn, request_type), response_serializer=serializer
            )
        elif method.client_streaming and not method.server_streaming:
            handlers[method.name] = grpc.stream_unary_rpc_method_handler(
                _client_stream(runtime, fn, request_type), response_serializer=serializer
            )
        elif method.server_streaming and not method.client_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _server_stream(runtime, fn, request_type), response_serializer=serializer
            )
        elif not method.server_streaming:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(runtime, fn, request_type), response_serializer=serializer
            )
        else:
            raise TypeError(f"{service.full_name}.{method.name}: bidirectional streams are not supported")
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    server.add_registered_method_handlers(service.full_name, handlers)
