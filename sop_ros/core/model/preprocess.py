"""Image preprocessing inside the policy, so robots send raw uint8 camera frames."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def frames_to_pixels(frames: torch.Tensor, image_size: int) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, S, S] in [-1, 1] (SigLIP normalisation: mean 0.5, std 0.5).

    Non-square frames are centre-cropped to a square first, then resized (bilinear, antialiased).
    """
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"images must be uint8 [B, H, W, 3], got {tuple(frames.shape)} {frames.dtype}")
    x = frames.permute(0, 3, 1, 2).float().div_(255.0)
    h, w = x.shape[-2:]
    if h != w:
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        x = x[:, :, top : top + side, left : left + side]
    if x.shape[-1] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    return x.sub_(0.5).div_(0.5)


def random_shift(pixels: torch.Tensor, max_shift: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ-style augmentation: pad by replication and crop back at a random offset per image."""
    if max_shift <= 0:
        return pixels
    b, _, h, w = pixels.shape
    padded = F.pad(pixels, (max_shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=generator, device="cpu").tolist()
    return torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)])
