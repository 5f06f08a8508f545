"""Typed configuration of the VLA policy, with named presets and a JSON round trip.

A checkpoint stores `VLAConfig.to_dict()` next to its weights, so `VLAConfig.from_dict`
must rebuild exactly the architecture that produced them.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any, Optional


class ConfigError(ValueError):
    """A model configuration is invalid or does not parse."""


VISION_ARCHITECTURES = ("siglip", "resnet")


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """The vision tower, built from a transformers config.

    architecture "siglip": a SigLIP ViT (SiglipVisionConfig: patch_size, hidden_size, intermediate_size,
    num_hidden_layers, num_attention_heads); the one a pretrained tower can be loaded into.
    architecture "resnet": a small ResNet (ResNetConfig: stem width resnet_stem_width, one stage per
    entry of resnet_widths / resnet_depths; GroupNorm in place of BatchNorm); its final feature map,
    one token per cell, plus a learned position embedding, is what the fusion transformer reads.
    Convolutions learn from a few dozen demos far faster than a ViT trained from scratch
    (docs/RESULTS.md, "Base policy").
    """

    image_size: int = 64  # frames are resized to image_size x image_size inside the policy
    architecture: str = "siglip"
    patch_size: int = 8
    hidden_size: int = 96
    intermediate_size: int = 192
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    resnet_stem_width: int = 32
    resnet_widths: tuple[int, ...] = (32, 64, 128)
    resnet_depths: tuple[int, ...] = (1, 1, 1)
    # Local directory with a pretrained SiglipVisionModel (save_pretrained layout); None = random init.
    pretrained_path: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("resnet_widths", "resnet_depths"):  # JSON gives lists
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.architecture not in VISION_ARCHITECTURES:
            raise ConfigError(f"vision.architecture must be one of {VISION_ARCHITECTURES}, got {self.architecture!r}")
        _positive(
            self,
            (
                "image_size",
                "patch_size",
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "resnet_stem_width",
            ),
        )
        if self.architecture == "siglip":
            if self.image_size % self.patch_size:
                raise ConfigError(
                    f"vision.image_size {self.image_size} is not a multiple of vision.patch_size {self.patch_size}"
                )
            if self.hidden_size % self.num_attention_heads:
                raise ConfigError("vision.hidden_size must be divisible by vision.num_attention_heads")
            return
        if not self.resnet_widths or len(self.resnet_widths) != len(self.resnet_depths):
            raise ConfigError("vision.resnet_widths and vision.resnet_depths must be non-empty and of equal length")
        if any(not isinstance(v, int) or v <= 0 for v in self.resnet_widths + self.resnet_depths):
            raise ConfigError("vision.resnet_widths and vision.resnet_depths must hold positive ints")
        if self.pretrained_path:
            raise ConfigError("vision.pretrained_path is only supported for architecture 'siglip'")
        if self.image_size % self.resnet_stride:
            raise ConfigError(
                f"vision.image_size {self.image_size} is not a multiple of the ResNet's stride {self.resnet_stride}"
            )

    @property
    def resnet_stride(self) -> int:
        """Input pixels per output cell: the stem (stride-2 conv + max pool) and stages 2.. halve."""
        return 4 * 2 ** (len(self.resnet_widths) - 1)

    @property
    def token_dim(self) -> int:
        return self.hidden_size if self.architecture == "siglip" else self.resnet_widths[-1]

    @property
    def num_tokens(self) -> int:
        side = self.image_size // (self.patch_size if self.architecture == "siglip" else self.resnet_stride)
        return side * side


@dataclasses.dataclass(frozen=True)
class VLAConfig:
    """Architecture of the policy (and of the RECAP value network when value_bins > 0)."""

    vision: VisionConfig = dataclasses.field(default_factory=VisionConfig)
    state_dim: int = 4  # proprio state size (MetaWorld: hand xyz + gripper)
    action_dim: int = 4
    chunk_size: int = 4  # K actions predicted per call
    hidden_size: int = 128  # width of the fusion transformer (action expert)
    fusion_layers: int = 2
    fusion_heads: int = 4
    dropout: float = 0.0
    # Actions are squashed by tanh and scaled to [-action_bound, action_bound]; None = unbounded.
    action_bound: Optional[float] = 1.0
    # RECAP advantage-indicator input ({none, positive, negative} embedding); off for plain BC.
    use_indicator: bool = True
    # Distributional value network over value_bins bins of normalised return in [value_min, value_max];
    # 0 = no value network.
    value_bins: int = 0
    # Vision tower of the value network; None = the policy's. The value network is a separate model
    # (as in the paper), and a SigLIP tower ranked returns better than the ResNet one from the
    # same few hundred updates (test_core_recap_value.py).
    value_vision: Optional[VisionConfig] = None
    value_min: float = -1.0
    value_max: float = 0.0
    # Frozen sentence encoder; embeddings are cached per instruction.
    text_embedding_dim: int = 384  # all-MiniLM-L6-v2
    # Random shift (pixels, at image_size resolution) applied to training images only.
    train_shift_pixels: int = 4

    def __post_init__(self) -> None:
        for name in ("vision", "value_vision"):  # from_dict path
            if isinstance(getattr(self, name), Mapping):
                object.__setattr__(self, name, VisionConfig(**getattr(self, name)))
        _positive(
            self,
            (
                "state_dim",
                "action_dim",
                "chunk_size",
                "hidden_size",
                "fusion_layers",
                "fusion_heads",
                "text_embedding_dim",
            ),
        )
        if self.hidden_size % self.fusion_heads:
            raise ConfigError("hidden_size must be divisible by fusion_heads")
        if self.value_bins < 0 or self.value_bins == 1:
            raise ConfigError(f"value_bins must be 0 (no value network) or >= 2, got {self.value_bins}")
        if self.value_vision is not None and self.value_vision.image_size != self.vision.image_size:
            raise ConfigError("value_vision.image_size must equal vision.image_size (both towers read the same pixels)")
        if not self.value_min < self.value_max:
            raise ConfigError("value_min must be < value_max")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("dropout must be in [0, 1)")
        if self.action_bound is not None and self.action_bound <= 0:
            raise ConfigError("action_bound must be positive or None")
        if self.train_shift_pixels < 0:
            raise ConfigError("train_shift_pixels must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VLAConfig:
        if not isinstance(data, Mapping):
            raise ConfigError(f"model config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown model config field(s): {sorted(unknown)}")
        towers = {"vision": data.get("vision", {}), "value_vision": data.get("value_vision")}
        vknown = {f.name for f in dataclasses.fields(VisionConfig)}
        for name, tower in towers.items():
            if isinstance(tower, Mapping):
                if set(tower) - vknown:
                    raise ConfigError(f"unknown {name} config field(s): {sorted(set(tower) - vknown)}")
                towers[name] = VisionConfig(**tower)
        return cls(**{**data, **towers})

    @property
    def value_tower(self) -> VisionConfig:
        """The value network's vision tower."""
        return self.value_vision or self.vision

    def replace(self, **changes: Any) -> VLAConfig:
        return dataclasses.replace(self, **changes)


def _positive(cfg: object, names: tuple[str, ...]) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{type(cfg).__name__}.{name} must be a positive int, got {value!r}")


# Named presets. `tiny` trains on 2 CPU cores (64x64 frames, a small ResNet policy tower, ~0.9M trainable
# parameters; its RECAP value network keeps the small SigLIP tower). `tiny_siglip` is the same with a
# SigLIP ViT policy tower (it learned push/pick-place far more slowly from a few dozen demos:
# docs/RESULTS.md, "Base policy"). `base` is a SigLIP-B/16-sized tower at 224x224 for a GPU learner
# (a pretrained SigLIP can be loaded into it from a local path).
PRESETS: dict[str, VLAConfig] = {
    "tiny": VLAConfig(vision=VisionConfig(architecture="resnet"), value_vision=VisionConfig()),
    "tiny_siglip": VLAConfig(),
    "base": VLAConfig(
        vision=VisionConfig(
            image_size=224,
            patch_size=16,
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
        ),
        chunk_size=10,
        hidden_size=512,
        fusion_layers=4,
        fusion_heads=8,
        dropout=0.1,
        train_shift_pixels=8,
    ),
}


def preset(name: str, **overrides: Any) -> VLAConfig:
    """The named preset, with field overrides (e.g. value_bins=51 for RECAP)."""
    if name not in PRESETS:
        hint = difflib.get_close_matches(name, PRESETS, n=1)
        raise ConfigError(
            f"unknown model preset {name!r}"
            + (f"; did you mean {hint[0]!r}?" if hint else f"; known: {sorted(PRESETS)}")
        )
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]
