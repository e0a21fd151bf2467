"""The tokenizer's vocabulary as raw bytes, for constrained decoding.

GGUF tokenizers of the llama/qwen2 family are byte-level BPE: each token string spells its bytes
with GPT-2's printable stand-in characters. This module maps them back to bytes and hands them,
with the control tokens, to :class:`ragloom.runtime.constrained.TokenizerInfo`. It does not
compile grammars.
"""

from __future__ import annotations

from functools import cache
from typing import Any

__all__ = ["byte_decoder", "tokenizer_info"]


@cache
def byte_decoder() -> dict[str, int]:
    """GPT-2's stand-in character -> byte table (from transformers' tokenizer converter).

    >>> byte_decoder()["Ġ"], byte_decoder()["a"]
    (32, 97)
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


def tokenizer_info(tokenizer: Any, eos_token_id: int, vocab_size: int) -> Any:
    """Describe ``tokenizer`` (a transformers fast tokenizer) as a ``TokenizerInfo``."""
    from ragloom.runtime.constrained import TokenizerInfo

    table = byte_decoder()
    special = {i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special}
    special.update(tokenizer.all_special_ids)
    vocab: list[bytes] = []
    for i, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(vocab_size)))):
        if piece is None:
            vocab.append(b"")
        elif i in special or any(c not in table for c in piece):
            vocab.append(piece.encode("utf-8"))
        else:
            vocab.append(bytes(table[c] for c in piece))

    def encode(text: bytes) -> list[int]:
        return list(tokenizer.encode(text.decode("utf-8", "ignore"), add_special_tokens=False))

    return TokenizerInfo(
        vocab=vocab,
        eos_token_id=eos_token_id,
        special_token_ids=tuple(sorted(i for i in special if i < vocab_size)),
        encode=encode,
    )
