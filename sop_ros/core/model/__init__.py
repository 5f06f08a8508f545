"""The VLA policy (ResNet or SigLIP vision, frozen MiniLM instruction embedding, action-chunk head, RECAP value)."""

from sop_ros.core.model.config import PRESETS, ConfigError, VisionConfig, VLAConfig, preset
from sop_ros.core.model.text_encoder import InstructionEncoder, shared_instruction_encoder
from sop_ros.core.model.vla import Indicator, VLAPolicy, default_device

__all__ = [
    "PRESETS",
    "ConfigError",
    "Indicator",
    "InstructionEncoder",
    "VLAConfig",
    "VLAPolicy",
    "VisionConfig",
    "default_device",
    "preset",
    "shared_instruction_encoder",
]
