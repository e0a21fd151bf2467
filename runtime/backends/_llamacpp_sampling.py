"""The llama.cpp backend's model loading and token choice (native sampler, or numpy on masks).

This module does not prefill, cache or detokenise (``llamacpp.py`` does).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from ragloom._lazy import require
from ragloom.errors import ModelError
from ragloom.runtime.llm import SamplingParams

__all__ = ["load_model", "native_sampler", "pick"]


def load_model(path: Path) -> Any:
    """Load a GGUF file with llama.cpp; any failure is a ModelError naming the file."""
    cy = require("cyllama.llama.llama_cpp", "runtime")

    class _Model(cy.LlamaModel):  # type: ignore[misc, name-defined]
        # subtle: cyllama 0.2.18's get_logits reads model.n_vocab, which it never defines
        @property
        def n_vocab(self) -> int:
            return int(self.get_vocab().n_vocab)

    cy.disable_logging()
    cy.ggml_backend_load_all()
    try:
        return _Model(str(path), cy.LlamaModelParams())
    except (ValueError, RuntimeError) as exc:
        raise ModelError(f"llama.cpp cannot load model file {str(path)!r}: {exc}") from exc


def native_sampler(cy: Any, vocab: Any, params: SamplingParams) -> Any:
    """llama.cpp's own sampler chain: optional GBNF grammar, then greedy or top-p/temp/dist."""
    sampler = cy.LlamaSampler(cy.LlamaSamplerChainParams())
    if params.grammar is not None:  # gbnf only, pre-checked by llguidance (see native_gbnf)
        sampler.add_grammar(vocab, params.grammar.source, "root")
    if params.temperature == 0:
        sampler.add_greedy()
        return sampler
    sampler.add_top_p(params.top_p, 1)
    sampler.add_temp(params.temperature)
    seed = params.seed if params.seed is not None else random.getrandbits(31)
    sampler.add_dist(seed)
    return sampler


def pick(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    """Greedy, or temperature + top-p sampling, over already-masked logits."""
    if params.temperature == 0:
        return int(np.argmax(logits))
    z = (logits - logits.max()) / params.temperature
    probs = np.exp(z)
    probs /= probs.sum()
    order = np.argsort(-probs)
    keep = np.cumsum(probs[order]) - probs[order] < params.top_p
    kept = order[keep]
    return int(rng.choice(kept, p=probs[kept] / probs[kept].sum()))
