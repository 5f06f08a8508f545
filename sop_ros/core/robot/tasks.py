"""Task specs: the tasks a fleet can be asked to do (id, instruction, step limit), read from a task file.

The package's default task file is `sop_ros.resources.default_tasks_path()`; the core only reads
the file it is given.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml


class TaskConfigError(ValueError):
    """The task file or a task entry is malformed."""


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task the fleet can be asked to do."""

    task_id: str  # e.g. "push-v3"; for the sim it is the MetaWorld environment name
    instruction: str  # natural-language instruction given to the policy
    max_steps: int  # episode step limit (the episode is truncated, and failed, after this)

    def __post_init__(self) -> None:
        if not self.task_id:
            raise TaskConfigError("task field 'task_id': must be a non-empty string")
        if not isinstance(self.instruction, str) or not self.instruction.strip():
            raise TaskConfigError(f"task '{self.task_id}' field 'instruction': must be a non-empty string")
        if not isinstance(self.max_steps, int) or self.max_steps <= 0:
            raise TaskConfigError(
                f"task '{self.task_id}' field 'max_steps': must be a positive integer, got {self.max_steps!r}"
            )


def load_task_specs(path: str | Path) -> dict[str, TaskSpec]:
    """Read config/tasks.yaml: `tasks: {task_id: {instruction: str, max_steps: int}}`, in file order."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TaskConfigError(f"cannot read task file {path}: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), dict) or not raw["tasks"]:
        raise TaskConfigError(f"task file {path}: expected a non-empty mapping under 'tasks'")
    specs: dict[str, TaskSpec] = {}
    for task_id, entry in raw["tasks"].items():
        if not isinstance(entry, dict):
            raise TaskConfigError(f"task file {path}: task '{task_id}' must be a mapping")
        unknown = set(entry) - {"instruction", "max_steps"}
        if unknown:
            raise TaskConfigError(f"task file {path}: task '{task_id}' has unknown fields {sorted(unknown)}")
        specs[str(task_id)] = TaskSpec(str(task_id), entry.get("instruction", ""), entry.get("max_steps", 0))
    return specs


def select_tasks(specs: dict[str, TaskSpec], names: str | None) -> dict[str, TaskSpec]:
    """The specs named in `names` (comma-separated task ids, in that order); all of them when empty."""
    if not names:
        return dict(specs)
    chosen = [t.strip() for t in names.split(",") if t.strip()]
    unknown = [t for t in chosen if t not in specs]
    if unknown:
        raise TaskConfigError(f"unknown task(s) {unknown}; known: {sorted(specs)}")
    return {t: specs[t] for t in chosen}
