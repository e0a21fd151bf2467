"""The embedded engine on SmolLM2-135M: prefix caching, batching, chunked prefill, preemption,
sampling, streaming, async, cancellation, scoring and the constrained-decoding hook."""

from __future__ import annotations

import asyncio
import re
import time

import numpy as np
import pytest
from _engine_models import PROMPTS, alone, chat_ids, fresh_engine, smol_llm

from ragloom.runtime.llm import Grammar, SamplingParams

pytestmark = pytest.mark.model
GREEDY = SamplingParams(max_tokens=12)
MIXED = [q * (1 + i % 3) for i, q in enumerate(PROMPTS * 2)]  # 8 prompts, 4+ distinct lengths


def test_prefix_cached_run_gives_the_cold_tokens():
    llm = smol_llm()
    system = "You are a planner. Tools: search(query), math(expr), join(). " * 8
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": "Plan: 2+2?"}]
    llm.reset_prefix_cache()
    cold = llm.generate([msgs], GREEDY)[0]
    warm = llm.generate([msgs], GREEDY)[0]
    assert cold.cached_tokens == 0 and warm.cached_tokens >= cold.prompt_tokens - 16
    assert warm.text == cold.text and warm.completion_tokens == cold.completion_tokens
    other = [{"role": "system", "content": system}, {"role": "user", "content": "Plan: 3*7?"}]
    shared = llm.generate([other], GREEDY)[0]  # same system prompt, new question
    assert shared.cached_tokens > 0.8 * shared.prompt_tokens


def test_stats_count_the_rows_each_request_ran():
    engine = fresh_engine()
    assert engine.stats.steps == engine.stats.tokens_computed == 0
    prompt = chat_ids(PROMPTS[1])
    cold = engine.generate([prompt], GREEDY)[0]
    warm = engine.generate([prompt], GREEDY)[0]  # its full blocks come from the prefix cache
    assert cold.num_cached_tokens == 0 and warm.num_cached_tokens >= 16
    decoded = [s.num_completion_tokens - 1 for s in (cold, warm)]  # the last token never runs
    generated = cold.num_completion_tokens + warm.num_completion_tokens
    stats = engine.stats
    assert stats.tokens_computed == 2 * len(prompt) - warm.num_cached_tokens + sum(decoded)
    assert stats.logit_rows == stats.tokens_generated == generated
    assert stats.steps == 2 + sum(decoded)  # one prefill step each, then the decodes
    rows = stats.logit_rows
    scored = engine.add_request([*prompt, 10, 11, 12], GREEDY, score_from=len(prompt))
    while not scored.is_finished:
        engine.step()
    assert stats.logit_rows - rows == 3  # log p of each of the 3 scored tokens


def test_batch_of_eight_mixed_lengths_matches_each_alone():
    prompts = [chat_ids(q) for q in MIXED]
    assert len({len(p) for p in prompts}) >= 4
    engine = fresh_engine()
    engine.scheduler.block_manager.evict_cached()
    together = [s.completion_token_ids for s in engine.generate(prompts, GREEDY)]
    assert together == [alone(tuple(p), GREEDY.max_tokens) for p in prompts]


def test_compiled_decode_attention_gives_the_torch_path_tokens():
    prompts = [chat_ids(q) for q in MIXED[:4]]
    compiled, plain = fresh_engine(), fresh_engine(layer_kernels=False)
    layers = compiled.runner.model.attention_layers()
    assert all(a.decode_kernel is not None for a in layers)  # the default, where it builds
    assert all(a.decode_kernel is None for a in plain.runner.model.attention_layers())
    for engine in (compiled, plain):
        engine.scheduler.block_manager.evict_cached()
    want = [s.completion_token_ids for s in plain.generate(prompts, GREEDY)]
    assert [s.completion_token_ids for s in compiled.generate(prompts, GREEDY)] == want


def test_chunked_prefill_keeps_decodes_running_and_changes_no_token():
    engine = fresh_engine(max_num_batched_tokens=32, kv_cache_tokens=4096)
    short, long = chat_ids(PROMPTS[0]), chat_ids(PROMPTS[3] * 12)
    assert len(long) > 4 * 32
    reference = [alone(tuple(short), GREEDY.max_tokens), alone(tuple(long), GREEDY.max_tokens)]
    first = engine.add_request(short, GREEDY)
    while first.num_completion_tokens < 2:
        engine.step()
    second = engine.add_request(long, GREEDY)
    steps_in_prefill = 0
    while second.num_completion_tokens == 0:
        before = first.num_completion_tokens
        engine.step()
        steps_in_prefill += 1
        assert first.is_finished or first.num_completion_tokens == before + 1  # never stalled
    assert steps_in_prefill >= 4  # the long prompt really was cut into chunks
    while not (first.is_finished and second.is_finished):
        engine.step()
    assert [first.completion_token_ids, second.completion_token_ids] == reference


def test_exhausted_kv_blocks_preempt_and_every_request_finishes():
    engine = fresh_engine(kv_cache_tokens=160, block_size=16, max_num_seqs=8)
    prompts = [chat_ids(q) for q in MIXED]
    seqs = engine.generate(prompts, GREEDY)  # 8 x ~50 tokens do not fit in 160 slots
    assert engine.scheduler.num_preemptions > 0
    assert [s.completion_token_ids for s in seqs] == [alone(tuple(p), 12) for p in prompts]
    assert all(s.finish_reason in ("stop", "length") for s in seqs)
    bm = engine.scheduler.block_manager
    assert bm.num_free_blocks == engine.config.num_kv_blocks  # nothing leaked


def test_sampling_seed_temperature_top_p_stop_and_max_tokens():
    llm = smol_llm()
    msgs = [{"role": "user", "content": "Tell me a story about a dragon."}]
    hot = [SamplingParams(max_tokens=8, temperature=1.5, seed=s) for s in (7, 7, 1, 2, 3)]
    draws = [c.text for c in llm.generate([msgs], hot[0]) + llm.generate([msgs] * 1, hot[1])]
    assert draws[0] == draws[1]  # same seed, same tokens
    others = {llm.generate([msgs], p)[0].text for p in hot[2:]}
    assert len(others | {draws[0]}) > 1
    greedy = llm.generate([msgs], SamplingParams(max_tokens=8))[0]
    narrow = SamplingParams(max_tokens=8, temperature=1.0, top_p=1e-6, seed=3)
    assert llm.generate([msgs], narrow)[0].text == greedy.text  # top-p keeps only the argmax
    assert greedy.completion_tokens == 8 and greedy.finish_reason == "length"
    word = greedy.text.split()[3]
    stopped = llm.generate([msgs], SamplingParams(max_tokens=8, stop=(word,)))[0]
    assert stopped.finish_reason == "stop" and word not in stopped.text
    assert greedy.text.startswith(stopped.text)
    assert stopped.completion_tokens < 8


def test_stream_and_async_give_the_generate_text():
    llm = smol_llm()
    msgs = [{"role": "user", "content": PROMPTS[2]}]
    text = llm.generate([msgs], GREEDY)[0].text
    pieces = list(llm.stream(msgs, GREEDY))
    assert len(pieces) > 3 and "".join(pieces) == text

    async def both():
        outs = await llm.agenerate([msgs, msgs], GREEDY)
        streamed = [p async for p in llm.astream(msgs, GREEDY)]
        return outs, streamed

    outs, streamed = asyncio.run(both())
    assert [o.text for o in outs] == [text, text] and "".join(streamed) == text


def test_cancellation_frees_the_blocks():
    llm = smol_llm()
    bm = llm.engine.scheduler.block_manager
    stream = llm.stream(
        [{"role": "user", "content": "Count to one hundred."}], SamplingParams(max_tokens=200)
    )
    next(stream)
    assert bm.num_free_blocks < llm.engine.config.num_kv_blocks
    stream.close()  # the consumer walks away

    async def cancel_agenerate():
        task = asyncio.create_task(
            llm.agenerate(
                [[{"role": "user", "content": "Count."}]] * 3, SamplingParams(max_tokens=200)
            )
        )
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_agenerate())
    deadline = time.monotonic() + 120  # the aborts land at the next step (slow on a busy CPU)
    while llm.engine.has_work() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not llm.engine.has_work()
    assert sum(b.ref_count for b in bm.blocks) == 0  # every block released


def test_score_prefers_the_likely_continuation_and_matches_generation():
    llm = smol_llm()
    prompt = "The capital of France is"
    paris, london = llm.score([prompt], [" Paris", " London"])[0]
    assert paris > london and paris < 0
    again = llm.score([prompt, prompt], [" Paris", " London"])  # now served from the prefix cache
    assert again == [pytest.approx([paris, london], abs=1e-4)] * 2
    greedy = llm.generate([prompt], SamplingParams(max_tokens=3))[0].text
    (score,) = llm.score([prompt], [greedy])[0]
    assert score > llm.score([prompt], [" banana split"])[0][0]


class AllowDigits:
    """A constraint of our own: digits only, finished after three tokens."""

    def __init__(self, vocab_size: int, allowed: np.ndarray):
        self.mask, self.seen = allowed, 0

    def allowed_mask(self) -> np.ndarray:
        return self.mask

    def advance(self, token_id: int) -> None:
        assert self.mask[token_id]
        self.seen += 1

    def is_finished(self) -> bool:
        return self.seen >= 3


def test_constraint_hook_masks_every_sampled_token():
    engine = fresh_engine()
    tok = smol_llm().tokenizer
    vocab = engine.runner.vocab_size
    allowed = np.array([tok.decode([i]).isdigit() for i in range(vocab)])
    seq = engine.add_request(chat_ids("Say hello."), SamplingParams(max_tokens=10))
    seq.constraint = AllowDigits(vocab, allowed)
    while not seq.is_finished:
        engine.step()
    assert seq.num_completion_tokens == 3 and all(allowed[t] for t in seq.completion_token_ids)


def test_regex_grammar_through_runtime_constrained():
    llm = smol_llm()
    grammar = Grammar(kind="regex", source=r"[0-9]{3}-[a-z]{2}")
    out = llm.generate(
        [[{"role": "user", "content": "Give me a code."}]],
        SamplingParams(max_tokens=12, grammar=grammar),
    )[0]
    assert re.fullmatch(r"[0-9]{3}-[a-z]{2}", out.text), out.text


def test_render_uses_the_model_chat_template():
    text = smol_llm().render([{"role": "user", "content": "hi"}])
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")


def test_concurrent_requests_behind_one_long_prefix_compute_it_once():
    engine = fresh_engine()
    engine.scheduler.block_manager.evict_cached()
    system = "You are a planner. Tools: search(query), math(expr), join(). " * 6
    asks = ["Plan: 2+2?", "Plan: capital of Peru?", "Plan: 7*6?", "Plan: tallest tree?"]
    prompts = [
        smol_llm().encode([{"role": "system", "content": system}, {"role": "user", "content": a}])
        for a in asks
    ]
    params = SamplingParams(max_tokens=4)
    seqs = [engine.add_request(p, params) for p in prompts]
    before = engine.stats.tokens_computed
    engine.step()  # one step prefills all four: the followers read the prefix it computes
    assert all(s.num_computed_tokens == len(p) for s, p in zip(seqs, prompts, strict=True))
    shared = min(len(p) for p in prompts) // 2
    assert seqs[0].num_cached_tokens == 0
    assert all(s.num_cached_tokens >= shared for s in seqs[1:])  # followers reused the prefix
    rows = sum(len(p) - s.num_cached_tokens for s, p in zip(seqs, prompts, strict=True))
    assert engine.stats.tokens_computed - before == rows  # the shared blocks ran once
    while not all(s.is_finished for s in seqs):
        engine.step()
    assert [s.completion_token_ids for s in seqs] == [alone(tuple(p), 4) for p in prompts]


def test_int8_weight_only_engine_still_answers():
    engine = fresh_engine(quantization="int8")
    seq = engine.generate([chat_ids(PROMPTS[0])], SamplingParams(max_tokens=8))[0]
    assert "Paris" in smol_llm().tokenizer.decode(seq.completion_token_ids)


def test_idle_engine_thread_ends_and_restarts():
    llm = smol_llm()
    background = llm._background
    llm.generate(["Hi"], SamplingParams(max_tokens=1))
    deadline = time.monotonic() + 60
    while background._thread is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert background._thread is None  # nothing keeps a dropped model alive
    assert llm.generate(["Hi"], SamplingParams(max_tokens=1))[0].completion_tokens == 1


def test_closing_stops_the_thread_after_its_step():
    """What interpreter exit does (``atexit``): the stepping thread ends after the step it is
    in, leaving a long request unfinished, and takes no more requests."""
    from ragloom.runtime.engine.background import BackgroundEngine

    background = BackgroundEngine(fresh_engine(max_num_seqs=3))  # (an engine of its own)
    prompt, params = chat_ids("Count to a thousand."), SamplingParams(max_tokens=500)
    seq = background.submit(prompt, params, lambda s, error: None)
    deadline = time.monotonic() + 60
    while seq.num_completion_tokens < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    background.close()
    assert background._thread is None and not seq.is_finished
    assert seq.num_completion_tokens < 500
    with pytest.raises(RuntimeError, match="closed"):
        background.submit([1, 2, 3], SamplingParams(max_tokens=1), lambda s, error: None)


def test_render_without_a_chat_template_falls_back_to_role_markers():
    llm = smol_llm()
    saved = llm.tokenizer.chat_template
    try:
        llm.tokenizer.chat_template = None  # as in a base model's GGUF
        assert llm.render([{"role": "user", "content": "hi"}]) == "<|user|>\nhi\n<|assistant|>\n"
    finally:
        llm.tokenizer.chat_template = saved
