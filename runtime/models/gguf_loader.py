"""Load a GGUF file into a torch model, its tokenizer and chat template, offline.

The first load reads the file with the ``gguf`` package, dequantises every tensor to float32
(the exact values llama.cpp computes with), maps llama.cpp's tensor names onto the models in
this folder (fusing Q/K/V and gate/up, un-permuting llama's Q/K rows) and builds the tokenizer
and chat template from the file's own metadata through ``transformers``. The converted weights,
the file's quantised weights as the engine's kernel runs them (:mod:`gguf_quant`, from the same
reader), config and tokenizer are then cached as safetensors in ``cache_dir("weights", <sha256
of the file>)``, so later loads skip the dequantisation (seconds instead of a minute for 0.5B).

This module does not locate packaged models (:mod:`ragloom.runtime.model_files` does) and does
not run them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ragloom._config import cache_dir
from ragloom.errors import ModelError
from ragloom.runtime.models.config import ModelConfig
from ragloom.runtime.models.gemma3 import Gemma3ForCausalLM
from ragloom.runtime.models.llama import LlamaForCausalLM
from ragloom.runtime.models.qwen2 import Qwen2ForCausalLM

__all__ = ["ARCHITECTURES", "LoadedModel", "file_sha256", "load_gguf", "weights_cached"]

ARCHITECTURES: dict[str, type[LlamaForCausalLM]] = {
    "llama": LlamaForCausalLM,
    "qwen2": Qwen2ForCausalLM,
    "gemma3": Gemma3ForCausalLM,
}
_END_TOKENS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")


@dataclass(frozen=True, slots=True)
class LoadedModel:
    """A model ready to run.

    Attributes:
        model: the torch module (eval mode).
        config: its shape.
        tokenizer: a ``transformers`` fast tokenizer carrying the chat template.
        eos_token_ids: tokens that end a generation (the file's own end-of-sequence first).
        path: the GGUF file it came from.
        weights_dir: the cache folder of its converted weights (None for a model built
            another way).
    """

    model: LlamaForCausalLM
    config: ModelConfig
    tokenizer: Any
    eos_token_ids: tuple[int, ...]
    path: Path
    weights_dir: Path | None = None

    def gguf_linears(self) -> dict[str, Any]:
        """The file's quantised linear weights as ``{layer name: (codes, scale, offset)}``
        (see :mod:`ragloom.runtime.models.gguf_quant`), read once and cached.

        The first time the cache is used they are checked against this model's float32
        weights, bit for bit, and the cache records it: later loads may swap them in without
        reading the float32 linear weights (``use_gguf_weights(..., check=False)``).

        Raises:
            ModelError: the model was not loaded from a GGUF file by :func:`load_gguf`.
            ConfigError: they decode to other values than this model's float32 weights (or
                the model is no longer float32), on that first check.
        """
        from ragloom.runtime.layers.gguf_linear import check_gguf_weights
        from ragloom.runtime.models.gguf_quant import (
            linears_checked,
            load_gguf_linears,
            mark_linears_checked,
        )

        if self.weights_dir is None:
            raise ModelError("this model was not loaded by load_gguf: it has no GGUF weights")
        permute_qk = ARCHITECTURES[self.config.architecture].permute_qk
        layers = load_gguf_linears(self.path, self.weights_dir, self.config, permute_qk)
        if not linears_checked(self.weights_dir):
            check_gguf_weights(self.model, layers)
            mark_linears_checked(self.weights_dir)
        return layers


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes (remembered per path, size and modification time: checking
    that a model is ready and then loading it read the 491 MB file twice)."""
    stat = path.stat()
    return _sha256(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def weights_cached(path: str | Path) -> bool:
    """Whether the GGUF file ``path`` was converted and its quantised linear weights cached and
    checked on this machine, so that loading it converts nothing (the first load of a model
    does: a minute and ~4.5 GB for Qwen2.5-0.5B). Reads the file once to hash it."""
    from ragloom.runtime.models.gguf_quant import linears_cached

    path = Path(path).expanduser()
    if not path.is_file():
        return False
    folder = cache_dir("weights", file_sha256(path))
    return (folder / "done").exists() and linears_cached(folder)


def load_gguf(path: str | Path, *, dtype: torch.dtype = torch.float32) -> LoadedModel:
    """Load a llama, qwen2 or gemma3 GGUF file, using the converted-weights cache when it is
    warm.

    Args:
        path: the ``.gguf`` file.
        dtype: parameter dtype (float32 keeps the dequantised values exact).

    Raises:
        ModelError: the file is missing, is not a readable GGUF file (the message names it) or
            holds an architecture other than llama/qwen2/gemma3 (or settings of one that the
            engine does not run, such as rotary scaling).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelError(f"model file {str(path)!r} does not exist")
    folder = cache_dir("weights", file_sha256(path))
    if not (folder / "done").exists():
        _convert(path, folder)
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    config = ModelConfig.load(folder / "config.json")
    meta = json.loads((folder / "meta.json").read_text())
    with torch.device("meta"):
        model = ARCHITECTURES[config.architecture](config)
    state = load_file(folder / "model.safetensors")
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    tied = ["lm_head.proj.weight"] if config.tie_word_embeddings else []
    if missing != tied or unexpected:
        raise ModelError(f"cached weights of {path.name} do not fit: {missing} {unexpected}")
    if config.tie_word_embeddings:
        model.lm_head.proj.weight = model.embed_tokens().weight
    model = model.to(dtype).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    return LoadedModel(model, config, tokenizer, tuple(meta["eos_token_ids"]), path, folder)


def _convert(path: Path, folder: Path) -> None:
    """Dequantise ``path`` into ``folder`` (written to a temporary folder, then renamed)."""
    from safetensors.torch import save_file

    from ragloom.runtime.models.gguf_quant import write_gguf_linears

    reader = _open_reader(path)
    config = _read_config(reader, path)
    permute_qk = ARCHITECTURES[config.architecture].permute_qk
    try:
        state = _dequantize(reader, config, permute_qk)
    except ModelError as exc:
        raise ModelError(f"{path.name}: {exc}") from None
    tokenizer = _read_tokenizer(path)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(state, tmp / "model.safetensors")
    del state  # (the quantised weights next, from the same reader)
    write_gguf_linears(reader, path.name, tmp, config, permute_qk)
    config.save(tmp / "config.json")
    tokenizer.save_pretrained(tmp / "tokenizer")
    meta = {"eos_token_ids": _eos_token_ids(reader, tokenizer), "source": path.name}
    (tmp / "meta.json").write_text(json.dumps(meta))
    (tmp / "done").touch()
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)


def _open_reader(path: Path) -> Any:
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except Exception as exc:  # gguf raises ValueError, struct/numpy errors on bad bytes
        raise ModelError(f"{str(path)!r} is not a readable GGUF file: {exc}") from exc


def _field(reader: Any, key: str, default: Any = None) -> Any:
    item = reader.fields.get(key)
    return default if item is None else item.contents()


def _read_config(reader: Any, path: Path) -> ModelConfig:
    arch = _field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise ModelError(
            f"{path.name}: architecture {arch!r} is not supported (supported: "
            f"{', '.join(ARCHITECTURES)})"
        )
    for key in ("rope.scaling.type", "final_logit_softcapping", "attn_logit_softcapping"):
        value = _field(reader, f"{arch}.{key}")
        if value not in (None, "none"):
            raise ModelError(f"{path.name}: {arch}.{key} = {value!r} is not supported")
    names = {t.name for t in reader.tensors}
    hidden = int(_field(reader, f"{arch}.embedding_length"))
    heads = int(_field(reader, f"{arch}.attention.head_count"))
    layers = int(_field(reader, f"{arch}.block_count"))
    head_dim = int(_field(reader, f"{arch}.attention.key_length", hidden // heads))
    rope_dim = int(_field(reader, f"{arch}.rope.dimension_count", head_dim))
    if rope_dim != head_dim:
        raise ModelError(
            f"{path.name}: a rotary over {rope_dim} of {head_dim} dims is not supported"
        )
    extra: dict[str, Any] = {}
    if arch == "gemma3":  # (what llama.cpp assumes of every gemma3 file, which does not say)
        extra = {
            "sliding_window": int(_field(reader, f"{arch}.attention.sliding_window")),
            "sliding_window_pattern": 6,
            "rope_local_theta": 10000.0,
            # query_pre_attn_scalar: head_dim, except 27B's hidden / heads (62 layers)
            "attention_scale": (hidden / heads if layers == 62 else head_dim) ** -0.5,
        }
    return ModelConfig(
        architecture=arch,
        vocab_size=len(reader.fields["tokenizer.ggml.tokens"].data),
        hidden_size=hidden,
        intermediate_size=int(_field(reader, f"{arch}.feed_forward_length")),
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=int(_field(reader, f"{arch}.attention.head_count_kv", heads)),
        head_dim=head_dim,
        rope_theta=float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        rms_norm_eps=float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon")),
        context_length=int(_field(reader, f"{arch}.context_length", 2048)),
        tie_word_embeddings="output.weight" not in names,
        attention_bias="blk.0.attn_q.bias" in names,
        **extra,
    )


def _unpermute(w: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's interleaved-rope row order (``[h, d/2, 2] -> [h, 2, d/2]``)."""
    return w.reshape(num_heads, -1, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def dequantize(data: np.ndarray, qtype: Any) -> np.ndarray:
    """gguf's own dequantisation of a tensor's raw blocks (its exact values), flat float32.

    subtle: gguf decodes 16 rows of its input per numpy call; given one block per row, the
    per-call overhead took 3.5x the decoding (52 s for the 0.5B model's codes). Rows of up to
    1,024 blocks give the same values, elementwise, in a fraction of the time.
    """
    from gguf import GGML_QUANT_SIZES
    from gguf import dequantize as gguf_dequantize

    raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
    type_size = GGML_QUANT_SIZES[qtype][1]
    per_row = math.gcd(raw.size // type_size, 1024)
    out = gguf_dequantize(raw.reshape(-1, per_row * type_size), qtype)
    return np.asarray(out, dtype=np.float32).reshape(-1)


def _dequantize(reader: Any, cfg: ModelConfig, permute_qk: bool) -> dict[str, torch.Tensor]:
    raw: dict[str, np.ndarray] = {}
    with ThreadPoolExecutor(os.cpu_count()) as pool:  # (numpy works without the GIL)
        decoded = pool.map(lambda t: dequantize(t.data, t.tensor_type), reader.tensors)
        for tensor, w in zip(reader.tensors, decoded, strict=True):
            raw[tensor.name] = w.reshape([int(d) for d in reversed(tensor.shape)])
    if permute_qk:
        for i in range(cfg.num_layers):
            raw[f"blk.{i}.attn_q.weight"] = _unpermute(raw[f"blk.{i}.attn_q.weight"], cfg.num_heads)
            raw[f"blk.{i}.attn_k.weight"] = _unpermute(
                raw[f"blk.{i}.attn_k.weight"], cfg.num_kv_heads
            )
    sources = tensor_sources(cfg, set(raw))
    missing = sorted({n for names in sources.values() for n in names} - set(raw))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ModelError(
            f"the file has no tensor {missing[0]!r}{more}, which a {cfg.architecture} model "
            f"of {cfg.num_layers} layers needs"
        )
    state = {
        param: np.concatenate([raw.pop(n) for n in names]) if len(names) > 1 else raw.pop(names[0])
        for param, names in sources.items()
    }
    return {k: torch.from_numpy(_owned_float32(v)) for k, v in state.items()}


def _owned_float32(a: np.ndarray) -> np.ndarray:
    """``a`` as a writable, contiguous float32 array, copied only where it is not one already
    (a float32 tensor of the file is a read-only view of it; decoded ones are fresh: copying
    those too held a second float32 model in memory while converting)."""
    if a.dtype == np.float32 and a.flags.c_contiguous and a.flags.writeable:
        return a
    return np.array(a, dtype=np.float32)


def tensor_sources(cfg: ModelConfig, names: set[str]) -> dict[str, list[str]]:
    """Each parameter of the engine's model and the GGUF tensors it is made of, in row order
    (Q/K/V and gate/up are fused by stacking rows); ``names`` are the file's tensor names. The
    one table from llama.cpp's names to ragloom's, for the float32 and the quantised loaders.
    """
    params = {
        "model.embed_tokens.weight": ["token_embd.weight"],
        "model.norm.weight": ["output_norm.weight"],
    }
    if "output.weight" in names:  # an untied head (else it shares the embedding)
        params["lm_head.proj.weight"] = ["output.weight"]
    for i in range(cfg.num_layers):
        b, p = f"blk.{i}.", f"model.layers.{i}."
        params[p + "input_layernorm.weight"] = [b + "attn_norm.weight"]
        if cfg.architecture == "gemma3":  # (four norms a layer, and per-head Q/K norms)
            params[p + "post_attention_layernorm.weight"] = [b + "post_attention_norm.weight"]
            params[p + "pre_feedforward_layernorm.weight"] = [b + "ffn_norm.weight"]
            params[p + "post_feedforward_layernorm.weight"] = [b + "post_ffw_norm.weight"]
            params[p + "self_attn.q_norm.weight"] = [b + "attn_q_norm.weight"]
            params[p + "self_attn.k_norm.weight"] = [b + "attn_k_norm.weight"]
        else:
            params[p + "post_attention_layernorm.weight"] = [b + "ffn_norm.weight"]
        params[p + "self_attn.qkv_proj.weight"] = [b + f"attn_{x}.weight" for x in "qkv"]
        if cfg.attention_bias:
            params[p + "self_attn.qkv_proj.bias"] = [b + f"attn_{x}.bias" for x in "qkv"]
        params[p + "self_attn.o_proj.weight"] = [b + "attn_output.weight"]
        params[p + "mlp.gate_up_proj.weight"] = [b + "ffn_gate.weight", b + "ffn_up.weight"]
        params[p + "mlp.down_proj.weight"] = [b + "ffn_down.weight"]
    return params


def _read_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except Exception as exc:  # transformers raises several kinds on bad metadata
        raise ModelError(
            f"{path.name}: cannot build the tokenizer from its metadata: {exc}"
        ) from exc


def _eos_token_ids(reader: Any, tokenizer: Any) -> list[int]:
    eos = int(_field(reader, "tokenizer.ggml.eos_token_id"))
    vocab = tokenizer.get_vocab()
    return [eos, *sorted({vocab[t] for t in _END_TOKENS if t in vocab} - {eos})]
