"""The shape of a decoder-only transformer, read from a GGUF file's metadata.

Holds no weights and imports nothing heavy.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["ModelConfig"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelConfig:
    """Hyper-parameters of a llama-family model.

    Attributes:
        architecture: ``"llama"``, ``"qwen2"`` or ``"gemma3"``.
        vocab_size: tokens in the vocabulary.
        hidden_size: width of the residual stream.
        intermediate_size: width of the MLP.
        num_layers: decoder layers.
        num_heads: query heads.
        num_kv_heads: key/value heads.
        head_dim: size of one head.
        rope_theta: rotary frequency base.
        rms_norm_eps: RMSNorm epsilon.
        context_length: the longest sequence the model was trained for.
        tie_word_embeddings: the LM head reuses the embedding matrix.
        attention_bias: q/k/v projections carry a bias (qwen2).
        sliding_window: keys a query of a local-attention layer sees, itself included (0: every
            layer attends to the whole context).
        sliding_window_pattern: every this-many-th layer attends globally, the others within
            ``sliding_window`` (gemma3: 6; 0: none does).
        rope_local_theta: the rotary base of the local layers (gemma3: 10,000).
        attention_scale: the factor on query-key products (0: ``head_dim ** -0.5``).
    """

    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float
    rms_norm_eps: float
    context_length: int
    tie_word_embeddings: bool
    attention_bias: bool
    sliding_window: int = 0
    sliding_window_pattern: int = 0
    rope_local_theta: float = 0.0
    attention_scale: float = 0.0

    def is_local(self, layer: int) -> bool:
        """Whether ``layer`` attends within ``sliding_window`` instead of globally."""
        pattern = self.sliding_window_pattern
        return self.sliding_window > 0 and (pattern == 0 or (layer + 1) % pattern != 0)

    @property
    def scale(self) -> float:
        """The factor on query-key products."""
        return self.attention_scale or self.head_dim**-0.5

    def save(self, path: Path) -> None:
        """Write the config as JSON."""
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> ModelConfig:
        """Read a config written by :meth:`save`."""
        return cls(**json.loads(path.read_text()))
