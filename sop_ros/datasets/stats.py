"""Per-feature statistics as LeRobot keeps them: min, max, mean, std and count, per episode and over the dataset.

Vectors get per-dimension figures; images per-channel figures of pixel values scaled to [0, 1], shaped
[3, 1, 1] so they broadcast over [C, H, W] tensors as LeRobot's normalisation expects.
"""

from __future__ import annotations

import numpy as np

QUANTILES = {"q01": 0.01, "q10": 0.10, "q50": 0.50, "q90": 0.90, "q99": 0.99}  # LeRobot's quantile normalisation
STAT_NAMES = ("min", "max", "mean", "std", "count", *QUANTILES)
# Image stats from an evenly spaced sample of frames and pixels: a 640x480 episode stays cheap (quantiles sort).
_MAX_IMAGE_FRAMES = 100
_MAX_IMAGE_PIXELS = 1 << 18


def feature_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """Stats of one feature over the frames of an episode: values [T] or [T, D]."""
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    return {
        "min": x.min(axis=0),
        "max": x.max(axis=0),
        "mean": x.mean(axis=0),
        "std": x.std(axis=0),
        "count": np.array([x.shape[0]], dtype=np.int64),
        **{name: np.quantile(x, q, axis=0) for name, q in QUANTILES.items()},
    }


def image_stats(images: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel stats of uint8 [T, H, W, 3] images in [0, 1]; count is the number of frames sampled."""
    step = max(1, len(images) // _MAX_IMAGE_FRAMES)
    sample = images[::step]
    pixels = sample.reshape(-1, sample.shape[-1])  # sampled while still uint8: the float copy stays small
    per_channel = pixels[:: max(1, len(pixels) // _MAX_IMAGE_PIXELS)].astype(np.float64) / 255.0
    stats = feature_stats(per_channel)
    stats = {k: v.reshape(-1, 1, 1) for k, v in stats.items() if k != "count"}
    stats["count"] = np.array([len(sample)], dtype=np.int64)
    return stats


def aggregate_stats(per_episode: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Dataset stats from episode stats (count-weighted mean; variance by the law of total variance).

    Quantiles are the count-weighted mean of the episodes' quantiles: an approximation (exact ones would need
    every frame at once), as LeRobot aggregates them too.
    """
    counts = np.array([float(s["count"][0]) for s in per_episode])
    weights = counts / counts.sum()
    means = np.stack([s["mean"] for s in per_episode])
    variances = np.stack([s["std"] ** 2 for s in per_episode])
    w = weights.reshape((-1,) + (1,) * (means.ndim - 1))
    mean = (w * means).sum(axis=0)
    variance = (w * (variances + (means - mean) ** 2)).sum(axis=0)
    return {
        "min": np.min(np.stack([s["min"] for s in per_episode]), axis=0),
        "max": np.max(np.stack([s["max"] for s in per_episode]), axis=0),
        "mean": mean,
        "std": np.sqrt(variance),
        "count": np.array([int(counts.sum())], dtype=np.int64),
        **{name: (w * np.stack([s[name] for s in per_episode])).sum(axis=0) for name in QUANTILES},
    }


def stats_to_json(stats: dict[str, np.ndarray]) -> dict[str, list]:
    return {name: np.asarray(value).tolist() for name, value in stats.items()}
