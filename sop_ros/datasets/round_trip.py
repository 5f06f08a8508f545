"""How faithful an export -> import round trip was: exact per-step fields, and the images' PSNR (codec loss)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from sop_ros.core.episodes.episode_file import read_episode
from sop_ros.datasets.video import psnr


@dataclasses.dataclass(frozen=True)
class RoundTripReport:
    episodes: int  # imported episodes found in the reference (matched by episode id)
    unmatched: int  # imported episodes the reference does not hold
    exact_fields: dict[str, bool]  # states, actions, actors, policy_versions, stamps_ns: identical in every episode
    psnr_mean_db: float  # over all frames' pixels per episode, averaged over episodes
    psnr_min_db: float  # the worst episode

    def summary(self) -> str:
        exact = ", ".join(f"{name} {'identical' if same else 'DIFFER'}" for name, same in self.exact_fields.items())
        return (
            f"round trip: {self.episodes} episodes matched ({self.unmatched} unmatched); {exact}; "
            f"images PSNR mean {self.psnr_mean_db:.2f} dB, worst episode {self.psnr_min_db:.2f} dB"
        )


_EXACT_FIELDS = ("states", "actions", "actors", "policy_versions", "stamps_ns")


def compare_round_trip(reference_paths: list[Path], imported_paths: list[Path]) -> RoundTripReport:
    """Compare imported episode files with the originals they were exported from (one episode in memory at a time)."""
    reference = {read_episode(p).episode_id: p for p in reference_paths}
    exact = dict.fromkeys(_EXACT_FIELDS, True)
    psnrs = []
    unmatched = 0
    for path in imported_paths:
        imported = read_episode(path)
        if imported.episode_id not in reference:
            unmatched += 1
            continue
        original = read_episode(reference[imported.episode_id])
        for name in _EXACT_FIELDS:
            exact[name] &= np.array_equal(getattr(original, name), getattr(imported, name))
        psnrs.append(psnr(original.images, imported.images))
    if not psnrs:
        raise ValueError("no imported episode matches a reference episode (compare the dataset with its source)")
    return RoundTripReport(len(psnrs), unmatched, exact, float(np.mean(psnrs)), float(np.min(psnrs)))
