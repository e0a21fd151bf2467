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
        architecture: ``"llama"`` or ``"qwen2"``.
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

    def save(self, path: Path) -> None:
        """Write the config as JSON."""
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> ModelConfig:
        """Read a config written by :meth:`save`."""
        return cls(**json.loads(path.read_text()))
