"""Model size and speed: parameters, act() latency and training-step latency per config.

Baseline in the same run: the batch-1 act() latency of `tiny` is the reference the other rows'
latencies are divided by (ratio column), so figures from different machines stay comparable.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from sop_ros.bench.report import machine_info, print_table


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--configs", default="tiny,base", help="comma-separated model presets (default: tiny,base)")
    parser.add_argument("--batch-size", type=int, default=32, help="training batch size (default 32)")
    parser.add_argument("--iterations", type=int, default=20, help="timed iterations for tiny (default 20)")
    parser.add_argument(
        "--large-iterations", type=int, default=2, help="timed iterations for other presets on CPU (default 2)"
    )
    parser.add_argument(
        "--large-batch-size", type=int, default=4, help="training batch for other presets on CPU (default 4)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave torch's default)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")


def _time_ms(fn: Callable[[], Any], iterations: int, device: torch.device) -> float:
    fn()  # warm-up (allocations, kernel selection)
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        samples.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(samples)


def _bench_preset(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from sop_ros.core.algorithms import PER_SAMPLE_LOSS, Batch, DataSource, make_algorithm
    from sop_ros.core.model import VLAPolicy, preset

    cfg = preset(name, value_bins=51)
    torch.manual_seed(0)
    policy = VLAPolicy(cfg, device=device)
    small = name.startswith("tiny") or device.type == "cuda"
    iterations = args.iterations if small else args.large_iterations
    size = cfg.vision.image_size
    rng = np.random.default_rng(0)
    obs = {"image": rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "state": np.zeros(cfg.state_dim, np.float32)}
    instruction = "push the puck to the goal"
    policy.act(obs, instruction)  # fills the instruction cache: the MiniLM encoder is not timed
    act_ms = _time_ms(lambda: policy.act(obs, instruction), iterations, device)
    cfg_ms = _time_ms(lambda: policy.act(obs, instruction, indicator="positive", guidance=1.5), iterations, device)

    b = args.batch_size if small else min(args.batch_size, args.large_batch_size)
    algo = make_algorithm("bc", {"chunk_size": cfg.chunk_size})
    batch = Batch(
        images=torch.from_numpy(rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8)).to(device),
        states=torch.randn(b, cfg.state_dim, device=device),
        instructions=[instruction] * b,
        task_ids=["t"] * b,
        sources=[DataSource.OFFLINE] * b,
        targets={
            "action_chunk": torch.zeros(b, cfg.chunk_size, cfg.action_dim, device=device),
            "chunk_mask": torch.ones(b, cfg.chunk_size, dtype=torch.bool, device=device),
        },
    )
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4)

    def train_step() -> None:
        policy.train()
        loss, metrics = algo.loss(policy, batch)
        metrics.pop(PER_SAMPLE_LOSS)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    train_ms = _time_ms(train_step, iterations, device)

    def count(m):
        return sum(p.numel() for p in m.parameters()) if m is not None else 0

    return {
        "preset": name,
        "image_size": size,
        "chunk": f"{cfg.chunk_size}x{cfg.action_dim}",
        "params_policy_m": (count(policy) - count(policy.value_net)) / 1e6,
        "params_vision_m": count(policy.encoder.vision) / 1e6,
        "params_value_m": count(policy.value_net) / 1e6,
        "act_ms": act_ms,
        "act_cfg_ms": cfg_ms,
        "train_step_ms": train_ms,
        "batch_size": b,
        "iterations": iterations,
        "device": str(device),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rows = [_bench_preset(name.strip(), args, device) for name in args.configs.split(",") if name.strip()]
    base = next((r["act_ms"] for r in rows if r["preset"] == "tiny"), rows[0]["act_ms"])
    for r in rows:
        r["act_ratio_vs_tiny"] = r["act_ms"] / base
    return {"benchmark": "model", "rows": rows, "torch_threads": torch.get_num_threads(), "machine": machine_info()}


def render(figures: dict[str, Any]) -> None:
    columns = [
        "preset",
        "device",
        "image",
        "chunk",
        "policy Mp",
        "vision Mp",
        "value Mp",
        "act ms",
        "CFG ms",
        "train ms",
        "batch",
        "act/tiny",
    ]
    rows = [
        [
            r["preset"],
            r["device"],
            r["image_size"],
            r["chunk"],
            r["params_policy_m"],
            r["params_vision_m"],
            r["params_value_m"],
            r["act_ms"],
            r["act_cfg_ms"],
            r["train_step_ms"],
            r["batch_size"],
            r["act_ratio_vs_tiny"],
        ]
        for r in figures["rows"]
    ]
    print_table(f"sop bench model (torch threads: {figures['torch_threads']})", columns, rows)
