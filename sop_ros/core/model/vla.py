"""The VLA policy: a vision tower (a small ResNet on CPU, SigLIP for pretrained or GPU configs) +
frozen MiniLM instruction embedding + proprio encoder, fused by a small transformer decoder whose
K learned queries read out an action chunk [K, A].

RECAP adds two things (sop-paper.md section 4): an advantage-indicator token
({none, positive, negative}; dropped to `none` during training so one network learns both the
conditional and the unconditional policy, which enables classifier-free guidance at inference),
and a separate distributional value network V(o, l) over bins of normalised return.
The value network is a separate tower because V must not see the indicator and, in SOP, is
trained (or frozen) independently of the policy.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import ResNetConfig, ResNetModel, SiglipVisionConfig, SiglipVisionModel

from sop_ros.core.model.config import ConfigError, VisionConfig, VLAConfig
from sop_ros.core.model.preprocess import frames_to_pixels, random_shift
from sop_ros.core.model.text_encoder import InstructionEncoder, shared_instruction_encoder

_LOG = logging.getLogger(__name__)

CONFIG_METADATA_KEY = "sop_vla_config"
# Checkpoint stores take a dict of tensors; the config travels inside it as UTF-8 JSON bytes so a
# checkpoint alone rebuilds the model (no side file, no pickle).
CONFIG_TENSOR_KEY = "__sop_vla_config__"


class Indicator(enum.IntEnum):
    """RECAP advantage indicator token."""

    NONE = 0  # unconditional (indicator dropped)
    POSITIVE = 1
    NEGATIVE = 2

    @classmethod
    def parse(cls, value: Union[None, bool, str, int, Indicator]) -> Indicator:
        if value is None:
            return cls.NONE
        if isinstance(value, bool):
            return cls.POSITIVE if value else cls.NEGATIVE
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                raise ValueError(f"indicator must be one of none/positive/negative, got {value!r}") from None
        return cls(int(value))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_vision_tower(cfg: VisionConfig) -> Union[SiglipVisionModel, ResNetModel]:
    if cfg.architecture == "resnet":
        tower = ResNetModel(
            ResNetConfig(
                num_channels=3,
                embedding_size=cfg.resnet_stem_width,
                hidden_sizes=list(cfg.resnet_widths),
                depths=list(cfg.resnet_depths),
                layer_type="basic",
                downsample_in_first_stage=False,
            )
        )
        _batch_norm_to_group_norm(tower)
        return tower
    if cfg.pretrained_path:
        tower = SiglipVisionModel.from_pretrained(cfg.pretrained_path, local_files_only=True)
        got = tower.config
        if (got.hidden_size, got.patch_size, got.image_size) != (cfg.hidden_size, cfg.patch_size, cfg.image_size):
            raise ConfigError(
                f"pretrained vision tower at {cfg.pretrained_path} has hidden/patch/image "
                f"{got.hidden_size}/{got.patch_size}/{got.image_size}, config says "
                f"{cfg.hidden_size}/{cfg.patch_size}/{cfg.image_size}"
            )
        return tower
    siglip = SiglipVisionConfig(
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        vision_use_head=False,  # we read patch tokens, not a pooled vector
    )
    siglip._attn_implementation = "sdpa"
    return SiglipVisionModel(siglip)


def _batch_norm_to_group_norm(module: nn.Module, channels_per_group: int = 4) -> None:
    """Swap every BatchNorm2d for a GroupNorm (as Diffusion Policy does for its ResNet).

    BatchNorm makes the output depend on the batch and on train/eval mode, and its running
    statistics change on every training forward pass, even of a frozen network (RECAP's value
    network when train_value is off). GroupNorm has neither problem.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            channels = child.num_features
            setattr(module, name, nn.GroupNorm(max(1, channels // channels_per_group), channels))
        else:
            _batch_norm_to_group_norm(child, channels_per_group)


class ObservationEncoder(nn.Module):
    """(pixels, state, instruction embedding) -> memory tokens [B, P + 2, D]."""

    def __init__(self, cfg: VLAConfig, vision: Optional[VisionConfig] = None):
        super().__init__()
        vision = vision or cfg.vision
        self.vision = build_vision_tower(vision)
        # SigLIP adds position embeddings itself; a ResNet's cells need them before the
        # (order-blind) cross-attention, or the decoder could not tell where things are.
        convolutional = vision.architecture == "resnet"
        self.cell_position = (
            nn.Parameter(torch.randn(vision.num_tokens, cfg.hidden_size) * 0.02) if convolutional else None
        )
        self.patch_proj = nn.Linear(vision.token_dim, cfg.hidden_size)
        self.text_proj = nn.Linear(cfg.text_embedding_dim, cfg.hidden_size)
        self.state_proj = nn.Sequential(
            nn.Linear(cfg.state_dim, cfg.hidden_size), nn.GELU(), nn.Linear(cfg.hidden_size, cfg.hidden_size)
        )

    def forward(self, pixels: torch.Tensor, states: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        features = self.vision(pixel_values=pixels).last_hidden_state
        if self.cell_position is not None:  # a ResNet's feature map [B, C, h, w] -> [B, h*w, C]
            patches = self.patch_proj(features.flatten(2).transpose(1, 2)) + self.cell_position
        else:
            patches = self.patch_proj(features)
        return torch.cat([patches, self.text_proj(text).unsqueeze(1), self.state_proj(states).unsqueeze(1)], dim=1)


class QueryDecoder(nn.Module):
    """Learned queries cross-attend to memory tokens; each query is read out by a linear head."""

    def __init__(self, cfg: VLAConfig, num_queries: int, out_dim: int):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(num_queries, cfg.hidden_size) * 0.02)
        layer = nn.TransformerDecoderLayer(
            cfg.hidden_size,
            cfg.fusion_heads,
            dim_feedforward=4 * cfg.hidden_size,
            dropout=cfg.dropout,
            batch_first=True,
            norm_first=True,
            activation="gelu",
        )
        self.decoder = nn.TransformerDecoder(layer, cfg.fusion_layers, norm=nn.LayerNorm(cfg.hidden_size))
        self.head = nn.Linear(cfg.hidden_size, out_dim)

    def forward(self, memory: torch.Tensor) -> torch.Tensor:
        q = self.queries.unsqueeze(0).expand(memory.shape[0], -1, -1)
        return self.head(self.decoder(q, memory))


class ValueNetwork(nn.Module):
    """Distributional V(o, l): logits over `value_bins` uniform bins of normalised return."""

    def __init__(self, cfg: VLAConfig):
        super().__init__()
        self.encoder = ObservationEncoder(cfg, cfg.value_tower)
        self.readout = QueryDecoder(cfg, num_queries=1, out_dim=cfg.value_bins)

    def forward(self, pixels: torch.Tensor, states: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        return self.readout(self.encoder(pixels, states, text))[:, 0]


class VLAPolicy(nn.Module):
    """The policy network plus (optionally) the RECAP value network.

    Trainable state is `tensors()`; the frozen sentence encoder is shared and never saved.
    """

    def __init__(
        self,
        config: VLAConfig,
        instruction_encoder: Optional[InstructionEncoder] = None,
        device: Union[str, torch.device, None] = None,
    ):
        super().__init__()
        self.config = config
        self.instruction_encoder = instruction_encoder or shared_instruction_encoder()
        self.encoder = ObservationEncoder(config)
        self.indicator_embedding = nn.Embedding(len(Indicator), config.hidden_size) if config.use_indicator else None
        self.action_head = QueryDecoder(config, num_queries=config.chunk_size, out_dim=config.action_dim)
        self.value_net = ValueNetwork(config) if config.value_bins else None
        self.register_buffer(
            "bin_centres",
            torch.linspace(config.value_min, config.value_max, max(config.value_bins, 2)),
            persistent=False,
        )
        self.to(device if device is not None else default_device())

    @property
    def device(self) -> torch.device:
        return self.bin_centres.device

    # ---- inputs -------------------------------------------------------------------------
    def pixels(self, images: torch.Tensor, augment: bool = False) -> torch.Tensor:
        """uint8 [B, H, W, 3] (any device) -> normalised pixels on the model device."""
        px = frames_to_pixels(images.to(self.device, non_blocking=True), self.config.vision.image_size)
        return random_shift(px, self.config.train_shift_pixels) if augment else px

    def text(self, instructions: Sequence[str]) -> torch.Tensor:
        return self.instruction_encoder.embed(instructions).to(self.device, non_blocking=True)

    # ---- networks -----------------------------------------------------------------------
    def action_chunks(
        self, pixels: torch.Tensor, states: torch.Tensor, text: torch.Tensor, indicator: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """[B, K, A] action chunks; `indicator` is a LongTensor [B] of Indicator values (None = NONE)."""
        memory = self.encoder(pixels, states, text)
        if self.indicator_embedding is not None:
            if indicator is None:
                indicator = torch.zeros(memory.shape[0], dtype=torch.long, device=memory.device)
            memory = torch.cat([memory, self.indicator_embedding(indicator.to(memory.device)).unsqueeze(1)], dim=1)
        elif indicator is not None and bool((indicator != Indicator.NONE).any()):
            raise ConfigError("this model was built with use_indicator=False but an advantage indicator was given")
        out = self.action_head(memory)
        if self.config.action_bound is not None:
            out = torch.tanh(out) * self.config.action_bound
        return out

    def value_logits(self, pixels: torch.Tensor, states: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        if self.value_net is None:
            raise ConfigError("this model has no value network (value_bins=0)")
        return self.value_net(pixels, states, text)

    def expected_value(self, logits: torch.Tensor) -> torch.Tensor:
        """E[return] under the binned distribution: sum_b p_b * centre_b."""
        return torch.softmax(logits.float(), dim=-1) @ self.bin_centres

    # ---- inference ----------------------------------------------------------------------
    @torch.no_grad()
    def act(
        self,
        observation: Mapping[str, np.ndarray],
        instruction: str,
        indicator: Union[None, bool, str, int, Indicator] = None,
        guidance: Optional[float] = None,
    ) -> np.ndarray:
        """One action chunk float32 [K, A] for a raw observation {image: uint8 HxWx3, state: float32 [S]}.

        indicator: None = unconditional; "positive" is RECAP's default at inference.
        guidance: classifier-free guidance weight beta: a = a_uncond + beta * (a_cond - a_uncond);
        None or 1.0 = the conditional chunk alone.
        """
        image, state = _checked_observation(observation, self.config.state_dim)
        ind = Indicator.parse(indicator)
        if guidance is not None and ind == Indicator.NONE:
            raise ValueError("guidance needs a conditioning indicator (e.g. indicator='positive')")
        was_training = self.training
        self.eval()
        try:
            images = torch.from_numpy(image).unsqueeze(0)
            states = torch.from_numpy(state).unsqueeze(0).to(self.device)
            use_cfg = guidance is not None and guidance != 1.0
            n = 2 if use_cfg else 1
            pixels = self.pixels(images).expand(n, -1, -1, -1)
            text = self.text([instruction]).expand(n, -1)
            inds = torch.tensor([int(ind), int(Indicator.NONE)][:n], device=self.device)
            chunks = self.action_chunks(
                pixels, states.expand(n, -1), text, inds if self.indicator_embedding is not None else None
            )
            chunk = chunks[1] + guidance * (chunks[0] - chunks[1]) if use_cfg else chunks[0]
        finally:
            self.train(was_training)
        return chunk.float().cpu().numpy()

    # ---- persistence --------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """All trainable weights (CPU, contiguous) keyed by parameter name; no frozen encoder."""
        return {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}

    def load_tensors(self, tensors: Mapping[str, torch.Tensor]) -> None:
        own = self.state_dict()
        missing = sorted(set(own) - set(tensors))
        unexpected = sorted(set(tensors) - set(own))
        mismatched = sorted(k for k in set(own) & set(tensors) if tuple(own[k].shape) != tuple(tensors[k].shape))
        if missing or unexpected or mismatched:
            raise ConfigError(
                f"checkpoint does not fit the model config: missing {missing[:5]}, unexpected {unexpected[:5]}, "
                f"shape mismatch {mismatched[:5]}"
            )
        self.load_state_dict(dict(tensors), strict=True)

    @classmethod
    def from_tensors(
        cls,
        config: Union[VLAConfig, Mapping[str, Any]],
        tensors: Mapping[str, torch.Tensor],
        device: Union[str, torch.device, None] = None,
        instruction_encoder: Optional[InstructionEncoder] = None,
    ) -> VLAPolicy:
        cfg = config if isinstance(config, VLAConfig) else VLAConfig.from_dict(config)
        policy = cls(cfg, instruction_encoder=instruction_encoder, device="cpu")
        policy.load_tensors(tensors)
        return policy.to(device if device is not None else default_device())

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        """tensors() plus the config as a uint8 tensor: what the trainer publishes."""
        out = self.tensors()
        out[CONFIG_TENSOR_KEY] = config_to_tensor(self.config)
        return out

    @classmethod
    def from_checkpoint_tensors(
        cls,
        tensors: Mapping[str, torch.Tensor],
        device: Union[str, torch.device, None] = None,
        instruction_encoder: Optional[InstructionEncoder] = None,
    ) -> VLAPolicy:
        if CONFIG_TENSOR_KEY not in tensors:
            raise ConfigError(f"checkpoint has no '{CONFIG_TENSOR_KEY}' tensor; cannot rebuild the model")
        weights = {k: v for k, v in tensors.items() if k != CONFIG_TENSOR_KEY}
        return cls.from_tensors(
            config_from_tensor(tensors[CONFIG_TENSOR_KEY]),
            weights,
            device=device,
            instruction_encoder=instruction_encoder,
        )

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write weights + config as one safetensors file atomically (temp file, fsync, rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            save_file(
                self.tensors(), tmp, metadata={CONFIG_METADATA_KEY: json.dumps(self.config.to_dict(), sort_keys=True)}
            )
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(
        cls,
        path: Union[str, os.PathLike],
        device: Union[str, torch.device, None] = None,
        instruction_encoder: Optional[InstructionEncoder] = None,
    ) -> VLAPolicy:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if CONFIG_METADATA_KEY not in meta:
                raise ConfigError(f"{path}: no '{CONFIG_METADATA_KEY}' metadata; not a VLA policy file")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        return cls.from_tensors(
            json.loads(meta[CONFIG_METADATA_KEY]), tensors, device=device, instruction_encoder=instruction_encoder
        )


def config_to_tensor(config: VLAConfig) -> torch.Tensor:
    return torch.frombuffer(bytearray(json.dumps(config.to_dict(), sort_keys=True).encode()), dtype=torch.uint8).clone()


def config_from_tensor(tensor: torch.Tensor) -> VLAConfig:
    try:
        return VLAConfig.from_dict(json.loads(bytes(tensor.cpu().numpy().tobytes()).decode()))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"checkpoint config tensor is not valid JSON: {exc}") from exc


def _checked_observation(observation: Mapping[str, np.ndarray], state_dim: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(observation, Mapping):
        raise TypeError("observation must be a mapping with 'image' and 'state'")
    for key in ("image", "state"):
        if key not in observation:
            raise ValueError(f"observation field '{key}' is missing")
    image = np.ascontiguousarray(observation["image"])
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"observation field 'image': expected uint8 [H, W, 3], got {image.dtype} {image.shape}")
    state = np.ascontiguousarray(observation["state"], dtype=np.float32)
    if state.shape != (state_dim,):
        raise ValueError(f"observation field 'state': expected shape ({state_dim},), got {state.shape}")
    if not np.isfinite(state).all():
        raise ValueError("observation field 'state': contains NaN or inf")
    return image, state
