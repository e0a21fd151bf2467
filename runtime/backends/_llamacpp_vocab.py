"""What the llama.cpp backend reads from a GGUF's own tokenizer: token bytes and chat template.

- :func:`token_bytes` turns llama.cpp's stored token texts back into raw bytes (byte-level BPE
  as in GPT-2/Qwen/SmolLM, or SentencePiece with ``<0xNN>`` byte tokens), which both
  detokenising a stream and constrained decoding need.
- :func:`render_chat` applies the model's Jinja chat template (``tokenizer.chat_template`` in
  the GGUF metadata) the way Hugging Face ``apply_chat_template`` does.

This module does not load models; it is handed a cyllama vocab or template string.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ragloom.runtime.engine.vocab import byte_decoder
from ragloom.runtime.llm import Message

__all__ = ["render_chat", "special_ids", "token_bytes"]

_ATTR_CONTROL = 8  # llama_token_attr bits (llama.h)
_ATTR_USER_DEFINED = 16
_ATTR_BYTE = 32
_VOCAB_SPM = 1


def _bpe_bytes(text: str) -> bytes:
    table = byte_decoder()
    try:
        return bytes(table[ch] for ch in text)
    except KeyError:  # an added token stored as plain text
        return text.encode("utf-8")


def _spm_bytes(text: str, attr: int) -> bytes:
    if attr & _ATTR_BYTE and text.startswith("<0x") and text.endswith(">"):
        return bytes([int(text[3:-1], 16)])
    return text.replace("\u2581", " ").encode("utf-8")


def special_ids(vocab: Any) -> tuple[int, ...]:
    """Ids of control tokens (``<|im_start|>``, ``</s>`` ...) in a cyllama vocab."""
    return tuple(
        i for i in range(vocab.n_vocab) if vocab.get_attr(i) & (_ATTR_CONTROL | _ATTR_USER_DEFINED)
    )


def token_bytes(vocab: Any) -> list[bytes]:
    """The raw bytes of every token of a cyllama ``LlamaVocab`` (control tokens as text).

    >>> _bpe_bytes("Ġthe"), _spm_bytes("<0x0A>", _ATTR_BYTE)
    (b' the', b'\\n')
    """
    spm = vocab.vocab_type == _VOCAB_SPM
    out = []
    for i in range(vocab.n_vocab):
        text, attr = vocab.get_text(i), vocab.get_attr(i)
        if attr & (_ATTR_CONTROL | _ATTR_USER_DEFINED):
            out.append(text.encode("utf-8"))
        else:
            out.append(_spm_bytes(text, attr) if spm else _bpe_bytes(text))
    return out


def render_chat(template: str, messages: Sequence[Message], *, bos: str, eos: str) -> str:
    """Render chat messages with a model's Jinja template, ending with the assistant's turn.

    >>> render_chat("{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}",
    ...             [{"role": "user", "content": "hi"}], bos="", eos="")
    '[user]hi'
    """
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str) -> str:
        raise ValueError(f"chat template: {message}")

    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=[dict(m) for m in messages],
        add_generation_prompt=True,
        bos_token=bos,
        eos_token=eos,
    )
