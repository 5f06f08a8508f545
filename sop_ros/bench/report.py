"""One way to report a benchmark: a rich table on stdout and, optionally, the same figures as JSON."""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


class BenchArgumentError(ValueError):
    """A benchmark's arguments are unusable; `sop bench` says so in one line."""


def machine_info() -> dict[str, Any]:
    """Where the figures were measured: results are meaningless without it."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def print_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], console: Console | None = None
) -> None:
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col != columns[0] else "left")
    for row in rows:
        table.add_row(*[f"{v:.3g}" if isinstance(v, float) else str(v) for v in row])
    (console or Console(width=max(160, Console().width))).print(table)


def write_json(path: str | os.PathLike, figures: Mapping[str, Any]) -> None:
    """Write atomically so a half-written file is never mistaken for a result."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(figures)
    payload.setdefault("machine", machine_info())
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        json.dump(payload, tmp, indent=2, sort_keys=True)
        tmp.write("\n")
    os.replace(tmp.name, path)
