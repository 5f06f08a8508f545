"""A directory that appears complete or not at all: built under a temp name next to the target, renamed at the end."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from sop_ros.core.storage.durable_files import fsync_dir, temp_path_for


@contextlib.contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield a temp directory on the target's filesystem; rename it to `target` only when the body succeeds.

    A failure (or Ctrl-C) removes the temp directory, so a reader never finds half a dataset or buffer.
    An existing non-empty target is refused rather than merged into.
    """
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target}: already exists and is not empty (choose a new output directory)")
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path_for(target)
    temp.mkdir()
    try:
        yield temp
        if target.exists():
            target.rmdir()  # the empty directory checked above
        os.rename(temp, target)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
