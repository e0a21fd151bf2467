"""Constrained decoding: a grammar compiled into a per-sequence mask over the vocabulary.

A :class:`~ragloom.runtime.llm.Grammar` (regex, JSON schema, Lark or GBNF) is compiled with
`llguidance <https://github.com/guidance-ai/llguidance>`_ against a tokenizer given as its token
byte strings (:class:`TokenizerInfo`). Each sequence being decoded gets its own
:class:`ConstraintState`; a sampler asks it for the allowed tokens before each step and tells it
the token it picked::

    constraint = compile_grammar(Grammar(kind="regex", source="[0-9]+"), tok)
    state = constraint.new_state()
    while not state.is_finished():
        logits[~state.allowed_mask()] = -inf
        token = sample(logits)
        state.advance(token)

Ready-made grammars: :func:`plan_grammar` (the LLMCompiler plan format, numbered tasks that
only reference earlier tasks, ending with ``join()`` and ``<END_OF_PLAN>``) and
:func:`json_grammar`.

This module does not sample or run a model, and it imports llguidance only when compiling.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ragloom._lazy import require
from ragloom.errors import ConfigError
from ragloom.runtime.llm import Grammar

__all__ = [
    "Constraint",
    "ConstraintState",
    "TokenizerInfo",
    "compile_grammar",
    "json_grammar",
    "plan_grammar",
]

_LLG_FORMAT = {"regex": "regex", "json_schema": "json_schema", "lark": "lark", "gbnf": "gbnf"}


@dataclass(frozen=True, eq=False, kw_only=True)
class TokenizerInfo:
    """What constrained decoding needs of a tokenizer.

    Attributes:
        vocab: the bytes of every token, indexed by token id (special tokens as their text).
        eos_token_id: the token that ends a sequence; allowed once the grammar accepts.
        special_token_ids: control tokens the grammar never emits (BOS, chat markers, ...).
        encode: text bytes -> token ids with the real tokenizer; a greedy longest-match over
            ``vocab`` is used when None (llguidance needs it only for forced spans).
    """

    vocab: Sequence[bytes]
    eos_token_id: int
    special_token_ids: tuple[int, ...] = ()
    encode: Callable[[bytes], list[int]] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not 0 <= self.eos_token_id < len(self.vocab):
            raise ConfigError(
                f"eos_token_id {self.eos_token_id} is outside the vocabulary of {len(self.vocab)}"
            )

    @cached_property
    def lltokenizer(self) -> Any:
        """The llguidance tokenizer, built once per TokenizerInfo (it costs ~1 s at 150k)."""
        llg = require("llguidance", "runtime")
        return llg.LLTokenizer(llg.TokenizerWrapper(_Wrapped(self)))


class _Wrapped:
    """The duck-typed tokenizer that ``llguidance.TokenizerWrapper`` expects."""

    def __init__(self, tok: TokenizerInfo):
        special = set(tok.special_token_ids)
        # subtle: llguidance marks special tokens with a 0xff prefix so that text never matches
        self.tokens = [b"\xff" + t if i in special else t for i, t in enumerate(tok.vocab)]
        self.eos_token_id = tok.eos_token_id
        self.bos_token_id = None
        self.special_token_ids = list(tok.special_token_ids)
        self._encode = tok.encode or _greedy_encoder(tok.vocab, special)

    def __call__(self, text: bytes) -> list[int]:
        return self._encode(text)


def _greedy_encoder(vocab: Sequence[bytes], special: set[int]) -> Callable[[bytes], list[int]]:
    index = {t: i for i, t in enumerate(vocab) if t and i not in special}
    longest = max((len(t) for t in index), default=1)

    def encode(text: bytes) -> list[int]:
        out, pos = [], 0
        while pos < len(text):
            for size in range(min(longest, len(text) - pos), 0, -1):
                token = index.get(text[pos : pos + size])
                if token is not None:
                    out.append(token)
                    pos += size
                    break
            else:
                pos += 1  # a byte no token covers is dropped
        return out

    return encode


@dataclass(frozen=True, slots=True)
class Constraint:
    """A grammar compiled for one tokenizer; cheap to start many sequences from."""

    grammar: Grammar
    tokenizer: TokenizerInfo
    _compiled: str = field(repr=False)

    def new_state(self) -> ConstraintState:
        """A fresh matcher at the start of the grammar, for one sequence."""
        llg = require("llguidance", "runtime")
        matcher = llg.LLMatcher(self.tokenizer.lltokenizer, self._compiled, log_level=0)
        if matcher.is_error():
            raise ConfigError(f"{self.grammar.kind} grammar rejected: {matcher.get_error()}")
        return ConstraintState(matcher, len(self.tokenizer.vocab))


class ConstraintState:
    """Where one sequence stands in the grammar."""

    def __init__(self, matcher: Any, vocab_size: int):
        self._matcher = matcher
        self._vocab_size = vocab_size

    def allowed_mask(self) -> np.ndarray:
        """A bool array ``[vocab_size]``: True where the token may come next."""
        bits = np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8)
        return np.unpackbits(bits, bitorder="little")[: self._vocab_size].astype(bool)

    def mask_logits(self, logits: np.ndarray) -> np.ndarray:
        """A copy of ``logits`` (``[n >= vocab_size]``) with disallowed tokens at ``-inf``."""
        out = np.array(logits, dtype=np.float32, copy=True)
        allowed = np.zeros(out.shape[-1], dtype=bool)
        allowed[: self._vocab_size] = self.allowed_mask()
        out[..., ~allowed] = -np.inf
        return out

    def advance(self, token_id: int) -> None:
        """Consume one generated token.

        Raises:
            ConfigError: the token is not allowed here (the caller did not apply the mask).
        """
        if not self._matcher.consume_token(int(token_id)):
            raise ConfigError(
                f"token {token_id} is not allowed by the grammar here: {self._matcher.get_error()}"
            )

    def is_accepting(self) -> bool:
        """Whether the text so far is a complete sentence of the grammar."""
        return bool(self._matcher.is_accepting())

    def is_finished(self) -> bool:
        """Whether nothing but end-of-sequence can follow (or it was consumed)."""
        return bool(self._matcher.is_stopped())

    def forced_tokens(self) -> list[int]:
        """Tokens the grammar forces next (may be empty); a sampler can skip ahead with them."""
        return list(self._matcher.compute_ff_tokens())


def compile_grammar(grammar: Grammar, tok: TokenizerInfo) -> Constraint:
    """Compile ``grammar`` for the tokenizer ``tok``.

    Raises:
        ConfigError: the grammar does not compile; the message quotes llguidance's error.

    >>> tok = TokenizerInfo(vocab=[b"<eos>", b"a", b"b"], eos_token_id=0, special_token_ids=(0,))
    >>> state = compile_grammar(Grammar(kind="regex", source="ab"), tok).new_state()
    >>> state.allowed_mask().tolist()
    [False, True, False]
    """
    llg = require("llguidance", "runtime")
    try:
        compiled = llg.grammar_from(_LLG_FORMAT[grammar.kind], grammar.source)
    except Exception as exc:  # llguidance raises ValueError and its own parse errors
        raise ConfigError(f"{grammar.kind} grammar does not compile: {exc}") from exc
    is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(compiled, tok.lltokenizer)
    if is_error:
        raise ConfigError(f"{grammar.kind} grammar does not compile: {'; '.join(messages)}")
    return Constraint(grammar, tok, compiled)


def json_grammar(schema: dict[str, Any] | str) -> Grammar:
    """A grammar for JSON text that validates against ``schema`` (a dict or JSON text).

    >>> json_grammar({"type": "integer"}).kind
    'json_schema'
    """
    source = schema if isinstance(schema, str) else json.dumps(schema)
    try:
        json.loads(source)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"JSON schema is not valid JSON: {exc}") from exc
    return Grammar(kind="json_schema", source=source)


def plan_grammar(
    tool_names: Sequence[str], *, max_tasks: int = 12, max_args: int = 4, max_chars: int = 120
) -> Grammar:
    """A Lark grammar for an LLMCompiler plan that calls only ``tool_names``.

    The plan is numbered tasks ``N. tool(args)`` from 1 with no gap, each optionally after one
    ``Thought: ...`` line, ending with ``N. join()`` and ``<END_OF_PLAN>``. Arguments are
    double-quoted strings, numbers, ``$K`` or short lists of those, positional then
    ``name=value``; a ``$K`` (alone or inside a string) may only name an earlier task. Every
    length is bounded, so sampling always terminates. Strings and thoughts never contain ``<``,
    so ``<END_OF_PLAN>`` (a stop string) cannot appear before the end.

    Args:
        tool_names: the tools the planner may call (``join`` is added by the grammar).
        max_tasks: the most tool calls before ``join()``.
        max_args: the most arguments per call.
        max_chars: the longest string argument or thought.

    >>> g = plan_grammar(["search", "math"])
    >>> g.kind, 'task1: "1. " TOOL' in g.source
    ('lark', True)
    """
    names = sorted({n for n in tool_names if n != "join"})
    if not names or any(not n.isidentifier() for n in names):
        raise ConfigError(f"plan_grammar needs tool names that are identifiers, got {names!r}")
    if max_tasks < 1 or max_args < 0 or max_chars < 1:
        raise ConfigError("max_tasks and max_chars must be >= 1 and max_args >= 0")
    rules = [
        "start: step1",
        f"THOUGHT: /Thought: [^\\n<]{{0,{max_chars}}}\\n/",
        "NUMBER: /-?(0|[1-9][0-9]{0,8})(\\.[0-9]{1,6})?/",
        "NAME: /[a-z_][a-z0-9_]{0,19}/",
        "TOOL: " + " | ".join(json.dumps(n) for n in names),
    ]
    for k in range(1, max_tasks + 2):
        rules += _step_rules(k, last=k > max_tasks, max_args=max_args, max_chars=max_chars)
    return Grammar(kind="lark", source="\n".join(rules) + "\n")


def _step_rules(k: int, *, last: bool, max_args: int, max_chars: int) -> list[str]:
    join = f'THOUGHT? "{k}. join()" "\\n"? "<END_OF_PLAN>"'
    if last:
        return [f"step{k}: {join}"]
    plain = r'[^"\\\n$<]'
    content = f"{plain}{{0,{max_chars}}}"
    scalar = f"STR{k} | NUMBER"
    if k > 1:  # `$K` names an earlier task and is never followed by a digit (no lookahead)
        ref = r"\$(" + "|".join(map(str, range(1, k))) + ")"
        content = rf'({plain}|{ref}[^"\\\n$<0-9]){{0,{max_chars}}}({ref})?'
        scalar += f" | /{ref}/"
    more = max(max_args - 1, 0)
    return [
        f"step{k}: {join} | THOUGHT? task{k} step{k + 1}",
        f'task{k}: "{k}. " TOOL "(" args{k} ")" "\\n"',
        f'STR{k}: /"{content}"/',
        f"scalar{k}: {scalar}",
        f'value{k}: scalar{k} | "[" (scalar{k} (", " scalar{k}){{0,7}})? "]"',
        f'kwarg{k}: NAME "=" value{k}',
        f'args{k}: (value{k} (", " value{k}){{0,{more}}} (", " kwarg{k}){{0,{more}}})?'
        f' | kwarg{k} (", " kwarg{k}){{0,{more}}}',
    ]
