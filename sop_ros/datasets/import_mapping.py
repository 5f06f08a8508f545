"""Which columns of a LeRobot dataset become a sop_ros episode's camera, state and action, and which sop_ros
task each dataset task is (`sop dataset import --mapping FILE` or flags).

    camera: observation.images.front     # a video feature
    state: observation.state
    action: action
    robot_id: lerobot-import             # the robot the episodes are recorded under
    success: null                        # label for episodes the dataset does not label (true | false | null)
    tasks:                               # dataset task string -> sop_ros task id, or {task_id, instruction}
      "Push the puck to the goal": push-v3
      "pick it": {task_id: pick-place-v3, instruction: "pick up the puck and place it at the goal"}
A task string missing here is allowed only when the dataset itself says its sop_ros task (`task_id`
column of meta/episodes, as `sop dataset export` writes it); the instruction is then the task string.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import yaml

from sop_ros.datasets import lerobot_format as fmt

_KEYS = {"camera", "state", "action", "robot_id", "success", "tasks"}


@dataclasses.dataclass(frozen=True)
class TaskTarget:
    task_id: str
    instruction: str


@dataclasses.dataclass(frozen=True)
class ImportMapping:
    camera: str = fmt.DEFAULT_CAMERA_KEY
    state: str = fmt.STATE_KEY
    action: str = fmt.ACTION_KEY
    robot_id: str = "lerobot-import"
    success: Optional[bool] = None
    tasks: dict[str, TaskTarget] = dataclasses.field(default_factory=dict)

    def target(self, task: str, dataset_task_id: Optional[str]) -> Optional[TaskTarget]:
        """The sop_ros task of a dataset task string: the mapping's, else the dataset's own task id, else None."""
        if task in self.tasks:
            return self.tasks[task]
        return TaskTarget(dataset_task_id, task) if dataset_task_id else None


def _task_target(path: Path, task: str, value) -> TaskTarget:
    if isinstance(value, str) and value:
        return TaskTarget(value, task)
    if isinstance(value, dict) and isinstance(value.get("task_id"), str) and set(value) <= {"task_id", "instruction"}:
        return TaskTarget(value["task_id"], str(value.get("instruction", task)))
    raise ValueError(f"{path}: field 'tasks.{task}': expected a task id or {{task_id, instruction}}, got {value!r}")


def load_mapping(path: Path) -> ImportMapping:
    """The mapping YAML; an unknown key or a wrong type is an error naming the file and the field."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read the mapping: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the mapping must be a YAML mapping")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {unknown}; known: {sorted(_KEYS)}")
    for key in ("camera", "state", "action", "robot_id"):
        if key in raw and not (isinstance(raw[key], str) and raw[key]):
            raise ValueError(f"{path}: field '{key}': must be a non-empty string")
    if raw.get("success") not in (None, True, False):
        raise ValueError(f"{path}: field 'success': must be true, false or null")
    tasks = raw.get("tasks") or {}
    if not isinstance(tasks, dict):
        raise ValueError(f"{path}: field 'tasks': must map task strings to task ids")
    return ImportMapping(
        camera=raw.get("camera", fmt.DEFAULT_CAMERA_KEY),
        state=raw.get("state", fmt.STATE_KEY),
        action=raw.get("action", fmt.ACTION_KEY),
        robot_id=raw.get("robot_id", "lerobot-import"),
        success=raw.get("success"),
        tasks={str(task): _task_target(path, str(task), value) for task, value in tasks.items()},
    )
