"""Per-robot admission: how many calls and idle streams each robot may hold at once on the learner.

A robot normally holds one checkpoint watch, up to two uploads, a download and a heartbeat; a robot
that opens more (a bug, a reconnect storm, an attacker with one robot's credentials) is refused with
RESOURCE_EXHAUSTED, and only that robot: every other robot's calls and the health check keep their
share of the learner. A global cap bounds memory when many identities flood at once (anonymous mode
lets a caller claim any robot id). Used from the server's event loop thread only, so no locks.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
from typing import Optional


class Kind(str, enum.Enum):
    CALL = "call"  # runs on a worker thread: unary calls, uploads, downloads
    WATCH = "watch"  # an idle server stream served on the event loop (checkpoint watch)


@dataclasses.dataclass(frozen=True)
class AdmissionLimits:
    watches_per_robot: int = 2  # one watch, plus one while a reconnect replaces it
    calls_per_robot: int = 6  # two uploads, a download, a heartbeat, register/status, one spare
    total: int = 20_000  # every admitted watch and call together (memory bound, not a fairness one)

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            if getattr(self, field.name) < 1:
                raise ValueError(f"AdmissionLimits.{field.name} must be >= 1, got {getattr(self, field.name)}")

    def per_robot(self, kind: Kind) -> int:
        return self.watches_per_robot if kind is Kind.WATCH else self.calls_per_robot


class Ticket:
    """One admitted call or stream; release() (idempotent) gives its place back."""

    def __init__(self, admission: Admission, kind: Kind, key: Optional[str]):
        self._admission, self.kind, self.key = admission, kind, key
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._release(self.kind, self.key)


class Admission:
    def __init__(self, limits: AdmissionLimits = AdmissionLimits()):
        self.limits = limits
        self._held: collections.Counter[tuple[Kind, str]] = collections.Counter()
        self._total = 0
        self.refused: collections.Counter[Kind] = collections.Counter()  # for logs and tests

    def admit(self, kind: Kind, key: Optional[str]) -> Optional[Ticket]:
        """A ticket, or None when `key` already holds its limit of `kind` (or the learner its total).
        A None key (an anonymous caller naming no robot) counts against the total only."""
        if self._total >= self.limits.total or (
            key is not None and self._held[(kind, key)] >= self.limits.per_robot(kind)
        ):
            self.refused[kind] += 1
            return None
        self._held[(kind, key)] += 1
        self._total += 1
        return Ticket(self, kind, key)

    def refusal(self, kind: Kind, key: Optional[str]) -> str:
        """Why admit() refused: the message a refused caller reads."""
        if self._total >= self.limits.total:
            return f"the learner holds its limit of {self.limits.total} calls and streams; retry later"
        what = "checkpoint watches" if kind is Kind.WATCH else "concurrent calls"
        return f"{key} already holds {self.limits.per_robot(kind)} {what}, its limit; retry when one ends"

    def held(self, kind: Kind, key: str) -> int:
        return self._held[(kind, key)]

    @property
    def total(self) -> int:
        return self._total

    def _release(self, kind: Kind, key: Optional[str]) -> None:
        self._total -= 1
        if key is None:
            return
        self._held[(kind, key)] -= 1
        if self._held[(kind, key)] <= 0:
            del self._held[(kind, key)]  # identities come and go: keep only those holding something
