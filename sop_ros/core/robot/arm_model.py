"""The arm's URDF as data: links, joints and the transform each joint makes for given positions.

What robot_state_publisher does, for installs without it: parse the URDF (xml.etree: a URDF is
plain XML and only the kinematic tree is needed here) and turn joint positions into one
parent -> child transform per joint (TF). Fixed, prismatic, revolute and continuous joints are
supported; anything else is rejected with the joint's name.
"""

from __future__ import annotations

import dataclasses
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

import numpy as np

SUPPORTED_JOINT_TYPES = ("fixed", "prismatic", "revolute", "continuous")


class UrdfError(ValueError):
    """The URDF is malformed or uses something this model does not support."""


@dataclasses.dataclass(frozen=True)
class Transform:
    """A rigid transform: translation (x, y, z) and rotation quaternion (x, y, z, w)."""

    parent: str
    child: str
    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]


@dataclasses.dataclass(frozen=True)
class UrdfJoint:
    name: str
    type: str
    parent: str
    child: str
    origin_xyz: tuple[float, float, float]
    origin_rpy: tuple[float, float, float]
    axis: tuple[float, float, float]
    lower: float
    upper: float

    @property
    def movable(self) -> bool:
        return self.type != "fixed"


def quaternion_from_rpy(roll: float, pitch: float, yaw: float) -> tuple[float, float, float, float]:
    """URDF's fixed-axis roll-pitch-yaw (R = Rz(yaw) Ry(pitch) Rx(roll)) as (x, y, z, w)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (
        sr * cp * cy - cr * sp * sy,
        cr * sp * cy + sr * cp * sy,
        cr * cp * sy - sr * sp * cy,
        cr * cp * cy + sr * sp * sy,
    )


def quaternion_multiply(a: tuple[float, ...], b: tuple[float, ...]) -> tuple[float, float, float, float]:
    ax, ay, az, aw = a
    bx, by, bz, bw = b
    return (
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    )


def rotate(q: tuple[float, ...], v: np.ndarray) -> np.ndarray:
    x, y, z, w = q
    u = np.array([x, y, z])
    return 2.0 * np.dot(u, v) * u + (w * w - np.dot(u, u)) * v + 2.0 * w * np.cross(u, v)


def _floats(text: str | None, n: int, default: tuple[float, ...], where: str) -> tuple[float, ...]:
    if text is None:
        return default
    try:
        values = tuple(float(v) for v in text.split())
    except ValueError:
        raise UrdfError(f"{where}: expected {n} numbers, got {text!r}") from None
    if len(values) != n:
        raise UrdfError(f"{where}: expected {n} numbers, got {text!r}")
    return values


class ArmModel:
    """The kinematic tree of one URDF."""

    def __init__(self, name: str, links: list[str], joints: list[UrdfJoint]):
        self.name = name
        self.links = links
        self.joints = joints
        for j in joints:
            for end in (j.parent, j.child):
                if end not in links:
                    raise UrdfError(f"URDF joint '{j.name}': link '{end}' is not defined")
        children = [j.child for j in joints]
        if len(set(children)) != len(children):
            raise UrdfError(f"URDF '{name}': a link is the child of two joints (not a tree)")
        roots = [link for link in links if link not in children]
        if len(roots) != 1:
            raise UrdfError(f"URDF '{name}': expected one root link, found {roots}")
        self.root = roots[0]

    @classmethod
    def from_xml(cls, text: str, source: str = "<string>") -> ArmModel:
        try:
            robot = ET.fromstring(text)
        except ET.ParseError as exc:
            raise UrdfError(f"{source}: not well-formed XML: {exc}") from exc
        if robot.tag != "robot" or not robot.get("name"):
            raise UrdfError(f"{source}: the root element must be <robot name=...>")
        links = [link.get("name") for link in robot.findall("link")]
        if not links or not all(links) or len(set(links)) != len(links):
            raise UrdfError(f"{source}: links must have unique, non-empty names: {links}")
        joints = []
        for el in robot.findall("joint"):
            name, kind = el.get("name"), el.get("type")
            where = f"{source}: joint '{name}'"
            if not name:
                raise UrdfError(f"{source}: a joint has no name")
            if kind not in SUPPORTED_JOINT_TYPES:
                raise UrdfError(f"{where}: type {kind!r} is not supported ({', '.join(SUPPORTED_JOINT_TYPES)})")
            parent, child, origin = el.find("parent"), el.find("child"), el.find("origin")
            if parent is None or child is None:
                raise UrdfError(f"{where}: needs <parent link=...> and <child link=...>")
            axis_el, limit = el.find("axis"), el.find("limit")
            axis = _floats(axis_el.get("xyz") if axis_el is not None else None, 3, (1.0, 0.0, 0.0), f"{where} axis")
            norm = math.sqrt(sum(a * a for a in axis))
            if kind != "fixed" and norm == 0:
                raise UrdfError(f"{where}: axis must not be zero")
            if kind in ("prismatic", "revolute") and limit is None:
                raise UrdfError(f"{where}: a {kind} joint needs <limit lower upper>")
            joints.append(
                UrdfJoint(
                    name,
                    kind,
                    parent.get("link"),
                    child.get("link"),
                    _floats(
                        origin.get("xyz") if origin is not None else None, 3, (0.0, 0.0, 0.0), f"{where} origin xyz"
                    ),
                    _floats(
                        origin.get("rpy") if origin is not None else None, 3, (0.0, 0.0, 0.0), f"{where} origin rpy"
                    ),
                    tuple(a / norm for a in axis) if norm else axis,
                    float(limit.get("lower", "0")) if limit is not None else -math.inf,
                    float(limit.get("upper", "0")) if limit is not None else math.inf,
                )
            )
        if len({j.name for j in joints}) != len(joints):
            raise UrdfError(f"{source}: joint names must be unique")
        return cls(robot.get("name"), links, joints)

    @classmethod
    def from_file(cls, path: str | Path) -> ArmModel:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise UrdfError(f"cannot read URDF {path}: {exc}") from exc
        return cls.from_xml(text, str(path))

    @property
    def movable_joint_names(self) -> tuple[str, ...]:
        """The joints a JointState must carry, in file order."""
        return tuple(j.name for j in self.joints if j.movable)

    def joint_transforms(
        self, positions: Mapping[str, float], movable: bool = True, fixed: bool = True, prefix: str = ""
    ) -> list[Transform]:
        """parent -> child transform of each joint (movable joints at `positions`; frames get `prefix`)."""
        out = []
        for j in self.joints:
            if (j.movable and not movable) or (not j.movable and not fixed):
                continue
            translation = np.asarray(j.origin_xyz, dtype=np.float64)
            rotation = quaternion_from_rpy(*j.origin_rpy)
            if j.movable:
                if j.name not in positions:
                    raise KeyError(f"joint_transforms: no position for joint '{j.name}'")
                q = float(positions[j.name])
                axis = np.asarray(j.axis)
                if j.type == "prismatic":
                    translation = translation + rotate(rotation, axis * q)
                else:
                    half = q / 2.0
                    s = math.sin(half)
                    rotation = quaternion_multiply(rotation, (axis[0] * s, axis[1] * s, axis[2] * s, math.cos(half)))
            out.append(
                Transform(
                    prefix + j.parent,
                    prefix + j.child,
                    tuple(float(v) for v in translation),
                    tuple(float(v) for v in rotation),
                )
            )
        return out
