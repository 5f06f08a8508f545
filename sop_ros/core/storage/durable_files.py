"""Crash-safe file primitives: write to a temp name in the same directory, fsync, rename, fsync the directory.

Temp names carry the writer's pid so a later process can tell a crashed writer's leftovers
(pid gone) from a file another live process is writing right now.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".partial"
_TEMP_RE = re.compile(r"^\.(?P<final>.+)\.(?P<pid>\d+)\.(?P<token>[0-9a-f]+)" + re.escape(TEMP_SUFFIX) + "$")


def temp_path_for(final: Path) -> Path:
    """A hidden, unique temp name next to `final` (same filesystem, so rename is atomic)."""
    return final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def is_temp_name(name: str) -> bool:
    return _TEMP_RE.fullmatch(name) is not None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale_temp(path: Path, max_age_s: float = 3600.0) -> bool:
    """A temp file whose writer process is gone (or that is older than max_age_s, covering pid reuse)."""
    m = _TEMP_RE.fullmatch(path.name)
    if m is None:
        return False
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return False
    return not _pid_alive(int(m.group("pid"))) or age > max_age_s


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(final: Path) -> Iterator[BinaryIO]:
    """Yield a binary file; on clean exit it is fsynced and atomically renamed to `final`.

    On any exception the temp file is removed and `final` is untouched. A SIGKILL leaves only a
    temp file (see is_stale_temp), never a partial `final`.
    """
    final = Path(final)
    tmp = temp_path_for(final)
    f = open(tmp, "xb")
    try:
        yield f
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        f.close()
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(final: Path, data: bytes) -> None:
    with atomic_output(final) as f:
        f.write(data)
