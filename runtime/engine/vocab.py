"""The tokenizer's vocabulary as raw bytes, for constrained decoding.

Two kinds of GGUF tokenizer spell a token's bytes differently:

- byte-level BPE (``tokenizer.ggml.model = gpt2``: Qwen2, SmolLM2, Llama 3): each token string
  spells its bytes with GPT-2's printable stand-in characters;
- SentencePiece with byte fallback (``llama``: Gemma, Llama 2): a token is UTF-8 text with
  ``▁`` for a space, or one raw byte written ``<0xNN>``.

This module maps either back to bytes and hands them, with the control tokens, to
:class:`ragloom.runtime.constrained.TokenizerInfo`. It does not compile grammars.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

__all__ = ["byte_decoder", "is_sentencepiece", "piece_bytes", "tokenizer_info"]

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@cache
def byte_decoder() -> dict[str, int]:
    """GPT-2's stand-in character -> byte table (from transformers' tokenizer converter).

    >>> byte_decoder()["Ġ"], byte_decoder()["a"]
    (32, 97)
    """
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}


def piece_bytes(piece: str, sentencepiece: bool) -> bytes:
    """The bytes a (non-special) token string stands for.

    >>> piece_bytes("Ġthe", False), piece_bytes("▁the", True), piece_bytes("<0x0A>", True)
    (b' the', b' the', b'\\n')
    """
    if sentencepiece:
        raw = _BYTE_PIECE.fullmatch(piece)
        return bytes([int(raw.group(1), 16)]) if raw else piece.replace("▁", " ").encode("utf-8")
    table = byte_decoder()
    if any(c not in table for c in piece):
        return piece.encode("utf-8")
    return bytes(table[c] for c in piece)


def is_sentencepiece(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` spells bytes SentencePiece's way (its byte-fallback tokens)."""
    vocab = tokenizer.get_vocab()
    return "<0x0A>" in vocab and "<0x41>" in vocab


def tokenizer_info(tokenizer: Any, eos_token_id: int, vocab_size: int) -> Any:
    """Describe ``tokenizer`` (a transformers fast tokenizer) as a ``TokenizerInfo``."""
    from ragloom.runtime.constrained import TokenizerInfo

    sentencepiece = is_sentencepiece(tokenizer)
    special = {i for i, tok in tokenizer.added_tokens_decoder.items() if tok.special}
    special.update(tokenizer.all_special_ids)
    vocab: list[bytes] = []
    for i, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(vocab_size)))):
        if piece is None:
            vocab.append(b"")
        elif i in special:
            vocab.append(piece.encode("utf-8"))
        else:
            vocab.append(piece_bytes(piece, sentencepiece))

    def encode(text: bytes) -> list[int]:
        return list(tokenizer.encode(text.decode("utf-8", "ignore"), add_special_tokens=False))

    return TokenizerInfo(
        vocab=vocab,
        eos_token_id=eos_token_id,
        special_token_ids=tuple(sorted(i for i in special if i < vocab_size)),
        encode=encode,
    )
