"""The fleet description (config/fleet.yaml): robots, learner, credentials.

`load_fleet(path)` validates the file and returns typed objects; any problem raises
FleetConfigError whose message is one line naming the file, the field and what is
wrong (the CLI prints it without a traceback). Relative paths in the file are
resolved against the file's directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator, model_validator

from sop_ros.link.options import DEFAULT_LEARNER_ADDRESS
from sop_ros.resources import config_dir, robot_control_rate_hz, robot_spool_max_bytes

_ROBOT_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")  # also a valid ROS name token
_NAMESPACE = re.compile(r"^(/[A-Za-z][A-Za-z0-9_]*)+$")


# YAML has no path type: a path is a string, converted (only strings are accepted).
PathStr = Annotated[Path, Strict(False)]


class FleetConfigError(ValueError):
    """The fleet description is invalid; str(error) is one line: file: field: problem."""


class _Strict(BaseModel):
    # Unknown keys are errors (a typo must not silently fall back to a default), and
    # values are not coerced ("10" is not a number).
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RobotCredentials(_Strict):
    token_file: Optional[PathStr] = Field(None, description="file holding this robot's bearer token")
    ca_cert: Optional[PathStr] = Field(None, description="CA certificate that signed the learner's certificate")
    client_cert: Optional[PathStr] = Field(None, description="robot certificate for mutual TLS")
    client_key: Optional[PathStr] = Field(None, description="robot private key for mutual TLS")


class LearnerTls(_Strict):
    cert: PathStr = Field(description="learner certificate (PEM)")
    key: PathStr = Field(description="learner private key (PEM)")
    client_ca: Optional[PathStr] = Field(None, description="CA for robot certificates; set to require mutual TLS")


class FleetLearnerConfig(_Strict):
    address: str = Field(DEFAULT_LEARNER_ADDRESS, description="host:port the learner serves on and robots connect to")
    run_locally: bool = Field(True, description="start the learner together with the fleet")
    data_dir: Optional[PathStr] = Field(
        None, description="episode and checkpoint stores (default: <state_dir>/learner)"
    )
    algorithm: Literal["bc", "hg_dagger", "recap"] = "hg_dagger"
    insecure: bool = Field(False, description="plaintext gRPC without TLS or tokens (loud warning; local tests only)")
    tls: Optional[LearnerTls] = None
    tokens_file: Optional[PathStr] = Field(None, description="hashed per-robot bearer tokens")

    @field_validator("address")
    @classmethod
    def _host_port(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"expected host:port, got {v!r}")
        return v

    @model_validator(mode="after")
    def _secure_or_explicitly_insecure(self) -> FleetLearnerConfig:
        if not self.insecure and (self.tls is None or self.tokens_file is None):
            raise ValueError("set tls and tokens_file, or insecure: true for a plaintext local fleet")
        return self


class RobotConfig(_Strict):
    id: str = Field(description="unique robot id; also the default namespace")
    namespace: Optional[str] = Field(None, description="ROS namespace of the robot's nodes (default /<id>)")
    backend: Literal["sim", "hardware"]
    tasks: list[str] = Field(min_length=1, description="task ids this robot runs, e.g. push-v3")
    control_rate_hz: float = Field(default_factory=robot_control_rate_hz, gt=0, le=1000)  # config/robot.yaml's
    respawn: bool = Field(False, description="restart a node of this robot when it dies")
    respawn_delay_s: float = Field(2.0, ge=0)
    spool_dir: Optional[PathStr] = Field(None, description="on-robot episode spool (default: <state_dir>/<id>/spool)")
    spool_max_bytes: int = Field(default_factory=robot_spool_max_bytes, gt=0)  # config/robot.yaml's
    checkpoint_cache_dir: Optional[PathStr] = Field(
        None, description="verified checkpoints from the learner (default: <state_dir>/<id>/checkpoints)"
    )
    credentials: RobotCredentials = RobotCredentials()

    @field_validator("id")
    @classmethod
    def _id_is_a_name(cls, v: str) -> str:
        if not _ROBOT_ID.fullmatch(v):
            raise ValueError(f"{v!r} is not a valid id (letters, digits, underscore; starts with a letter)")
        return v

    @field_validator("namespace")
    @classmethod
    def _namespace_is_absolute(cls, v: Optional[str]) -> Optional[str]:
        if v is not None and not _NAMESPACE.fullmatch(v):
            raise ValueError(f"{v!r} is not an absolute ROS namespace like /robot1")
        return v

    @property
    def resolved_namespace(self) -> str:
        return self.namespace or f"/{self.id}"


class FleetDescription(_Strict):
    fleet: str = Field("default", description="fleet name; the learner keeps a latest checkpoint per fleet")
    state_dir: Optional[PathStr] = Field(
        None, description="where robots and the learner keep data (default ~/.sop/<fleet>)"
    )
    learner: FleetLearnerConfig = FleetLearnerConfig(insecure=True)
    robots: list[RobotConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> FleetDescription:
        for attr, label in (("id", "id"), ("resolved_namespace", "namespace")):
            seen: dict[str, int] = {}
            for i, robot in enumerate(self.robots):
                value = getattr(robot, attr)
                if value in seen:
                    raise _FieldError(f"robots.{i}.{label}", f"duplicate {label} {value!r} (also robots.{seen[value]})")
                seen[value] = i
        return self

    def robot(self, robot_id: str) -> RobotConfig:
        for robot in self.robots:
            if robot.id == robot_id:
                return robot
        raise FleetConfigError(
            f"no robot with id {robot_id!r} in the fleet (robots: {', '.join(r.id for r in self.robots)})"
        )

    @property
    def resolved_state_dir(self) -> Path:
        return self.state_dir or Path.home() / ".sop" / self.fleet

    def learner_data_dir(self) -> Path:
        return self.learner.data_dir or self.resolved_state_dir / "learner"

    def spool_dir(self, robot: RobotConfig) -> Path:
        return robot.spool_dir or self.resolved_state_dir / robot.id / "spool"

    def checkpoint_cache_dir(self, robot: RobotConfig) -> Path:
        return robot.checkpoint_cache_dir or self.resolved_state_dir / robot.id / "checkpoints"


class _FieldError(ValueError):
    def __init__(self, field: str, problem: str):
        super().__init__(problem)
        self.field = field


def _absolutize(model: BaseModel, base: Path) -> BaseModel:
    updates = {}
    for name, value in model:
        if isinstance(value, Path):
            value = value.expanduser()
            updates[name] = value if value.is_absolute() else (base / value).resolve()
        elif isinstance(value, BaseModel):
            updates[name] = _absolutize(value, base)
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            updates[name] = [_absolutize(v, base) for v in value]
    return model.model_copy(update=updates)


def _check_files_exist(fleet: FleetDescription) -> None:
    """Credential files must exist when the fleet is loaded, not when a robot first connects."""

    def walk(model: BaseModel, prefix: str):
        for name, value in model:
            path = f"{prefix}{name}"
            if isinstance(value, BaseModel):
                yield from walk(value, path + ".")
            elif isinstance(value, list):
                for i, v in enumerate(value):
                    if isinstance(v, BaseModel):
                        yield from walk(v, f"{path}.{i}.")
            elif isinstance(value, Path) and name not in _STATE_PATHS:
                yield path, value

    for field, path in walk(fleet, ""):
        if not path.is_file():
            raise _FieldError(field, f"file not found: {path}")


_STATE_PATHS = {"state_dir", "data_dir", "spool_dir", "checkpoint_cache_dir"}  # created on demand, need not exist


def _format_pydantic_error(err: ValidationError) -> tuple[str, str]:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(top level)"
    kind, msg = first["type"], first["msg"]
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind == "missing":
        msg = "required field is missing"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind not in ("extra_forbidden", "missing") and "input" in first and not isinstance(first["input"], (dict, list)):
        msg += f" (got {first['input']!r})"
    return field, msg


def parse_fleet(
    data: object, source: str = "<fleet>", base_dir: Path | None = None, check_files: bool = True
) -> FleetDescription:
    try:
        if not isinstance(data, dict):
            raise _FieldError("(top level)", "expected a mapping with keys fleet, learner, robots")
        fleet = FleetDescription.model_validate(data)
        fleet = _absolutize(fleet, base_dir or Path.cwd())
        if check_files:
            _check_files_exist(fleet)
        return fleet
    except ValidationError as err:
        # Our own field errors raised inside validators arrive wrapped by pydantic.
        ctx = err.errors()[0].get("ctx", {})
        inner = ctx.get("error")
        if isinstance(inner, _FieldError):
            raise FleetConfigError(f"{source}: {inner.field}: {inner}") from None
        field, msg = _format_pydantic_error(err)
        raise FleetConfigError(f"{source}: {field}: {msg}") from None
    except _FieldError as err:
        raise FleetConfigError(f"{source}: {err.field}: {err}") from None


def load_fleet(path: str | os.PathLike, check_files: bool = True) -> FleetDescription:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise FleetConfigError(f"{path}: cannot read the fleet description: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "(parse)"
        raise FleetConfigError(f"{path}: {where}: invalid YAML: {getattr(err, 'problem', err)}") from None
    return parse_fleet(data, source=str(path), base_dir=path.resolve().parent, check_files=check_files)


def default_fleet_path() -> Path:
    """The embedded defaults: config/fleet.yaml of the checkout or of the installed share dir."""
    return config_dir() / "fleet.yaml"
