"""What the transport benchmark runs against: servers in processes of their own, raw channels, random episodes.

ServerProcess starts a learner, or the raw baseline (a gRPC server that swallows uploaded bytes and streams a
preloaded blob, with the fleet link's server options and chunk size), in its own process; raw_channel opens a
channel with the link's channel options, so the link's figures compare against plain gRPC moving the same bytes.
"""

from __future__ import annotations

import logging
import multiprocessing
import uuid
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np

RAW_SERVICE = "sop.bench.RawBlob"


def random_episode(robot_id: str, steps: int, hw: int, rng: np.random.Generator):
    """A finished episode of `steps` random steps (hw x hw images) recorded by `robot_id`."""
    from sop_ros.core.episodes.episode import Actor, EpisodeBuilder, LabelSource

    builder = EpisodeBuilder(
        robot_id,
        "reach-v3",
        "reach the goal",
        (4, 4),
        episode_id=str(uuid.UUID(int=int(rng.integers(1 << 62)), version=4)),
        start_ns=1,
    )
    for t in range(steps):
        builder.add_step(
            rng.integers(0, 255, (hw, hw, 3), dtype=np.uint8),
            rng.standard_normal(7).astype(np.float32),
            rng.standard_normal(4).astype(np.float32),
            Actor.POLICY,
            0,
            1 + t,
        )
    return builder.close(True, LabelSource.ENVIRONMENT, steps + 10)


class _RawBlobServicer:
    """The baseline: a gRPC server that swallows uploaded bytes and streams a preloaded blob."""

    def __init__(self, blob: bytes):
        self.blob = blob

    def handlers(self):
        return grpc.method_handlers_generic_handler(
            RAW_SERVICE,
            {
                "Upload": grpc.stream_unary_rpc_method_handler(self._upload),
                "Download": grpc.unary_stream_rpc_method_handler(self._download),
            },
        )

    def _upload(self, chunks, context) -> bytes:
        return str(sum(len(c) for c in chunks)).encode()

    def _download(self, request: bytes, context):
        from sop_ros.link.options import CHUNK_BYTES

        view = memoryview(self.blob)
        for start in range(0, len(view), CHUNK_BYTES):
            yield bytes(view[start : start + CHUNK_BYTES])


def _serve(kind: str, path: str, robots: int, ready, stop) -> None:
    """Child process: the raw baseline server (`path` = blob file) or a learner (`path` = data dir)."""
    from sop_ros.link import options

    logging.getLogger("sop_ros").setLevel(logging.ERROR)  # the insecure-mode warnings are expected here
    if kind == "raw":
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=options.server_options())
        server.add_generic_rpc_handlers((_RawBlobServicer(Path(path).read_bytes() if path else b"").handlers(),))
        ready.send(server.add_insecure_port("127.0.0.1:0"))
        server.start()
        stop.wait()
        server.stop(0).wait()
        return
    from sop_ros.link.server import LearnerServerConfig, LearnerService, create_server, open_stores

    stores = open_stores(Path(path))
    service = LearnerService(LearnerServerConfig(address="127.0.0.1:0", insecure=True, expected_robots=robots), *stores)
    server, port = create_server(service)
    server.start()
    ready.send(port)
    stop.wait()
    service.stop(server, grace_s=1.0)
    stores[0].close()


class ServerProcess:
    """A server in its own process, as the learner runs on its own machine (context manager yielding its address).

    The clients (robots) stay in the benchmark process: server and clients do not share one GIL.
    """

    def __init__(self, kind: str, path: Path | str = "", robots: int = 1):
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        receive, send = context.Pipe(duplex=False)
        self._process = context.Process(target=_serve, args=(kind, str(path), robots, send, self._stop), daemon=True)
        self._process.start()
        if not receive.poll(120):
            self._process.kill()
            raise RuntimeError(f"benchmark {kind} server did not start")
        self.address = f"127.0.0.1:{receive.recv()}"

    @property
    def pid(self) -> int:
        return self._process.pid

    def __enter__(self) -> str:
        return self.address

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._process.join(30)
        if self._process.is_alive():
            self._process.kill()


def raw_channel(address: str) -> grpc.Channel:
    from sop_ros.link import options

    return grpc.insecure_channel(address, options=options.channel_options())
