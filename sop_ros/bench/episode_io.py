"""Episode file I/O speed: write and read time of a synthetic episode (the 60 ms budget of episode_file)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from sop_ros.bench.synthetic_episodes import synthetic_episode
from sop_ros.core.episodes.episode_file import read_episode, write_episode


def bench_episode_io(num_steps: int = 300, image_hw: int = 64, repeats: int = 3) -> dict[str, float]:
    """Best-of-`repeats` write and read wall time (ms) of a synthetic noisy episode, plus its file size."""
    ep = synthetic_episode(num_steps, image_hw)
    write_ms, read_ms = [], []
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bench.mcap"
        for _ in range(repeats):
            t0 = time.perf_counter()
            write_episode(ep, path)
            write_ms.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            read_episode(path)
            read_ms.append((time.perf_counter() - t0) * 1e3)
        size = path.stat().st_size
    return {
        "write_ms": min(write_ms),
        "read_ms": min(read_ms),
        "file_bytes": float(size),
        "num_steps": float(num_steps),
    }
