"""The transformers twin of an engine model: the plain reference forward pass.

:func:`hf_reference` builds ``transformers``' own ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` /
``Gemma3ForCausalLM`` on exactly the weights the engine runs (its fused Q/K/V and gate/up
tensors split back, gemma3's norms less the one GGUF adds), so tests and benchmarks can compare
the paged, batched, prefix-cached engine with an unbatched, unpaged implementation that ragloom
did not write. Not used at serving time.
"""

from __future__ import annotations

from typing import Any

import torch

from ragloom.runtime.models.config import ModelConfig
from ragloom.runtime.models.gguf_loader import LoadedModel

__all__ = ["hf_greedy", "hf_reference", "hf_state_dict"]


def hf_state_dict(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The engine's tensors under transformers' names (fused projections split)."""
    q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
    out = {}
    for name, tensor in state.items():
        if "qkv_proj" in name:
            kind = name.rsplit(".", 1)[1]
            for part, t in zip("qkv", tensor.split([q, kv, kv]), strict=True):
                out[name.replace("qkv_proj." + kind, f"{part}_proj.{kind}")] = t
        elif "gate_up_proj" in name:
            gate, up = tensor.chunk(2)
            out[name.replace("gate_up_proj", "gate_proj")] = gate
            out[name.replace("gate_up_proj", "up_proj")] = up
        elif cfg.architecture == "gemma3" and name.endswith("norm.weight"):
            out[name] = tensor - 1  # (transformers' Gemma3RMSNorm adds the one GGUF holds)
        else:
            out[name.replace("lm_head.proj", "lm_head")] = tensor
    return out


def _hf_config(cfg: ModelConfig) -> Any:
    """transformers' config of the same shape."""
    import transformers

    shape = {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.head_dim,
        "rms_norm_eps": cfg.rms_norm_eps,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "max_position_embeddings": cfg.context_length,
    }
    if cfg.architecture == "gemma3":
        kinds = ("sliding" if cfg.is_local(i) else "full" for i in range(cfg.num_layers))
        return transformers.Gemma3TextConfig(
            **shape,
            sliding_window=cfg.sliding_window,
            layer_types=[f"{kind}_attention" for kind in kinds],
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": cfg.rope_local_theta},
                "full_attention": {"rope_type": "default", "rope_theta": cfg.rope_theta},
            },
            query_pre_attn_scalar=round(cfg.scale**-2),
            hidden_activation="gelu_pytorch_tanh",
        )
    name = {"llama": "Llama", "qwen2": "Qwen2"}[cfg.architecture]
    return getattr(transformers, f"{name}Config")(
        **shape, rope_theta=cfg.rope_theta, attention_bias=cfg.attention_bias
    )


def hf_reference(loaded: LoadedModel) -> Any:
    """A float32 transformers model on ``loaded``'s weights, sharing their tensors (use it
    before an engine takes the model, not after: the engine quantises it and re-lays its
    weights in place)."""
    import transformers

    cfg = loaded.config
    config = _hf_config(cfg)
    name = {"llama": "Llama", "qwen2": "Qwen2", "gemma3": "Gemma3"}[cfg.architecture]
    from transformers.initialization import no_init_weights

    with no_init_weights():  # every weight is overwritten below
        model = getattr(transformers, f"{name}ForCausalLM")(config)
    state = hf_state_dict(loaded.model.state_dict(), cfg)
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    # (assign: the model takes these tensors, views of ``loaded``'s, instead of copies; a copy
    # held a second float32 model, 6 GB for the 1.5B, while ``loaded`` was alive)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=False, assign=True)
    if cfg.tie_word_embeddings:
        model.tie_weights()
    return model.eval()


def hf_greedy(model: Any, ids: list[int], n: int) -> list[int]:
    """Exactly ``n`` greedy tokens from a transformers model after the prompt ``ids``."""
    inputs = torch.tensor([ids])
    # subtle: an explicit mask, or transformers hides the chat markers (they equal the pad id);
    # no eos, so the reference never stops before the engine does
    with torch.inference_mode():
        out = model.generate(
            inputs,
            attention_mask=torch.ones_like(inputs),
            max_new_tokens=n,
            do_sample=False,
            eos_token_id=None,
        )
    return list(out[0, len(ids) :].tolist())
