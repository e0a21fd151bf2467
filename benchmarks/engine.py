"""Benchmark of the embedded torch engine, all on one model in one run.

(a) time to first token of a planner-like prompt (~1,000-token shared system prefix with tool
    descriptions and few-shot plans, ~30-token question): cold (prefix cache emptied) versus a
    new question behind the cached prefix. Target: at least 5x.
(b) single-stream decode tokens/s (decode only: the time of n tokens minus the time of 1) of
    the engine (its default ``quantization="auto"``: the GGUF file's own weights through
    ragloom's kernel, float32 arithmetic on exactly the float32 model's weights) and of the
    engine with float32 weights (``"none"``), against HF transformers ``generate`` on the same
    weights in float32, target 2x; against llama.cpp (ragloom's cyllama backend on the same
    GGUF, the CPU ceiling); of the engine with the same GGUF weights and int8 activations
    (``"gguf-q8"``, llama.cpp's arithmetic: ``gguf_q8_*``, with its batch speed-up as in (c)
    and, without ``--quick``, its time to first token as in (a));
    and, without ``--quick``, of the engine with int8 weight-only re-quantisation and with
    torch.ao dynamic int8. Quality against float32 is the share of the
    float32 engine's greedy tokens an engine reproduces before the first difference, and the
    change in log-probability per token it gives the float32 engine's answers.
(c) total throughput of 8 concurrent requests (``agenerate`` from 8 tasks) against running them
    one after another on the same engine (best of two turns each, alternating; one with
    ``--quick``). Target: at least 3x. Beside it, the most it could be
    on this CPU: ``batch_speedup_ceiling``, the sequential time over the time the concurrent
    run's own multiply-adds (the rows the engine counted through every linear layer, attention
    left out) would take at ``gemm_gflops``, torch's best float32 GEMM rate measured in the same
    run; ``concurrent_share_of_gemm`` is the share of that rate the concurrent run reached.
(d) resident memory: ``engine_rss_mb`` (peak) and ``engine_rss_now_mb`` after (a), the default
    engine alone with its weights and KV cache touched; ``peak_rss_mb`` at the end (HF
    reference, float32 and int8 engines and llama.cpp too). Both are the process's
    ``ru_maxrss``, which counts a mapped file's resident pages once per mapping: the
    converted-weights cache, mapped by each engine, counts once per engine (the 1.5B model read
    26.5 GB on a 24 GB machine while at most 14.8 GB was in use).

``greedy_match`` says whether the engine's first 32 greedy tokens equal the HF reference's
(``float32_greedy_match`` the same for the float32 engine). Every backend uses the same number
of threads (``--threads``; default: idle cores). The CPU may be shared, so timings are medians
of a few repeats, the backends take turns, and ratios are measured in the same run.

Measured here (Qwen2.5-Coder-0.5B, ``--threads 1`` on 2 shared cores, three full runs on
2026-11-29, a slow day on the shared host; the four runs of 2026-11-28 in brackets): TTFT
13.9-14.3 s cold -> 0.75-0.91 s cached, 15.4-18.4x (16.6-19.2x); greedy_match true, agreement
with float32 1.0 (log-prob change 0.0); decode 11.9-15.7 tok/s vs HF 6.6-7.1, 1.80-2.22x
(2.06-2.51x); float32 layers 1.26-1.33x; gguf-q8 13.9-16.3 tok/s, 2.08-2.46x HF with agreement
1.0; llama.cpp 18.5-22.2 tok/s (engine 0.54-0.77x, gguf-q8 0.73-0.75x); 8 concurrent requests
2.07-2.47x sequential (gguf-q8 1.65-1.86x); RSS of the engine alone 1.70-1.85 GB after loading
(3.7 GB peak while loading; 3.5 GB before the embedding ran on codes and the float32 file was
unmapped), peak 12.2-12.4 GB with everything loaded. With both cores (default threads, two
runs): decode 2.04-2.25x HF (gguf-q8 2.46x), batch 2.51-2.86x, TTFT 9.7-10.6x.
Before (float32 layers, three runs): TTFT 19-22x, decode 1.18-1.27x HF, batch 2.66-3.05x, RSS
5.7-6.2 GB. Later on 2026-11-29 (5-7-row batches in one kernel pass; the GGUF weights checked
against the float32 ones once per cache instead of at every load), two runs at ``--threads 1``:
TTFT 15.9-16.7x, decode 13.3-16.2 tok/s, 2.11-2.32x HF (gguf-q8 2.26-2.44x), llama.cpp
20.9-21.5 tok/s (engine 0.64-0.75x), batch 2.18-2.34x (gguf-q8 1.82-1.90x), engine RSS peak
1.61-1.69 GB and 1.58-1.60 GB after (a) (the first load of a model on a machine, which converts
and checks, peaks at 4.5 GB). After the compiled layer kernels (decode attention read from the
cache slots, RMSNorm with its residual add, rotary), three runs at each thread count on a host
whose speed varied by a third: ``--threads 1`` TTFT 17.1-19.4x, decode 15.6-19.9 tok/s,
2.53-2.76x HF (gguf-q8 2.66-3.48x), llama.cpp 0.71-0.82x, batch 1.96-2.08x; ``--threads 2``
TTFT 10.9-20.2x, decode 17.4-23.1 tok/s, 2.57-3.52x HF (gguf-q8 2.62-3.76x), llama.cpp
0.48-0.59x, batch 1.99-2.56x (gguf-q8 2.33-2.44x); engine RSS peak 1.57-1.61 GB.

The evening of 2026-11-29 (the kernel at every row count on layers of short rows; the batch
ceiling), ``--threads 2`` twice: TTFT 20.5-21.0x, decode 4.06-4.43x HF, llama.cpp 0.64-0.66x
(39.8-40.4 tok/s), batch 2.04-2.51x against a ceiling of 4.06-4.64x (the concurrent run at
50-54% of a 152-163 GFLOP/s GEMM); ``--threads 1``: TTFT 22.6x, decode 2.86x HF, llama.cpp
0.89x, batch 2.33x (ceiling 4.04x, 58%); engine RSS peak 1.48-1.55 GB.

Late on 2026-11-29 (the kernel's weights in panels of 8 rows, at every row count; the batch run
best of two turns), one run at each thread count: ``--threads 2`` TTFT 20.3x, decode 29.3 tok/s,
4.18x HF, llama.cpp 0.74x, batch 2.53x against a ceiling of 3.77x (67% of a 172 GFLOP/s GEMM);
``--threads 1`` TTFT 23.8x, decode 2.45x HF, llama.cpp 0.85x, batch 2.34x (ceiling 3.55x, 66%);
engine RSS peak 1.55-1.57 GB. Then with float32 blocks from 32 rows: ``--threads 2`` TTFT 23.9x
(cold 6.64 s), decode 4.46x HF, llama.cpp 0.67x, batch 2.63x (ceiling 4.24x, 62%);
``--threads 1`` TTFT 20.2x (cold 10.5 s), decode 2.55x, llama.cpp 0.80x, batch 2.45x (ceiling
3.28x, 75%); engine RSS peak 1.54-1.55 GB.

Then (each group's scale taken out of its sum; gguf-q8's codes in panels, four inputs at a
time), two runs at ``--threads 2``: TTFT 25.1-25.9x, decode 4.63-4.75x HF, llama.cpp
0.71-0.90x, batch 2.40-2.50x (ceiling 3.45-3.56x, 70%); gguf-q8 decode 0.72-1.05x llama.cpp,
batch 3.25-3.62x, cold TTFT 4.23 s against the exact mode's 5.77 s. ``--threads 1``: TTFT
28.3x, decode 3.26x HF, llama.cpp 0.99x, batch 2.32x (ceiling 3.14x); gguf-q8 1.07x llama.cpp,
batch 2.80x. Engine RSS peak 1.51-1.52 GB.

On 2026-11-30 (codes of 0..15 held two to a byte), ``--threads 2`` twice on a fast day: TTFT
22.9-24.7x, decode 4.85-5.03x HF, llama.cpp 0.85-0.88x (gguf-q8 0.90-1.08x), batch 2.53-2.56x
(gguf-q8 2.93-3.21x). ``--quick --model qwen2.5-coder-1.5b-instruct``: greedy_match true, TTFT
31.0x, decode 4.91x HF, llama.cpp 0.55x (gguf-q8 0.72x), batch 1.76x; that run peaked at 26.5 GB
(the HF model, the float32 engine and the engine side by side), before the HF reference stopped
copying its weights (14.1 -> 6.4 GB for that model alone): mind the machine's memory for models
of 1.5B and up.

Usage: ``python benchmarks/engine.py [--quick] [--model NAME] [--threads N]``; the last line is
one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import torch

from ragloom.runtime.llm import SamplingParams
from ragloom.runtime.model_files import resolve_model
from ragloom.runtime.models.gguf_loader import load_gguf
from ragloom.runtime.models.reference import hf_greedy, hf_reference
from ragloom.runtime.threads import default_num_threads
from ragloom.runtime.torch_llm import TorchLLM

TOOLS = """Tools:
1. search(query: str) -> str: searches a search engine for the query and returns the top
   snippets. Use it for facts about people, places, events and things you do not know.
2. math(problem: str, context: list[str] | None) -> float: solves a math problem written in
   plain words or as an expression; pass earlier results ($1, $2) as context when needed.
3. join() -> None: collects the results and ends the plan; it is always the last task.
Rules: each task has an id, calls exactly one tool, and may use the output of an earlier task
through $id. Independent tasks run in parallel, so do not make a task depend on another unless
it needs its output. Never repeat a task. Keep arguments short and specific.
"""
EXAMPLES = [
    (
        "How much taller is the Eiffel Tower than the Statue of Liberty?",
        '1. search("Eiffel Tower height")\n2. search("Statue of Liberty height")\n'
        '3. math("$1 - $2")\n4. join()<END_OF_PLAN>',
    ),
    (
        "What is the combined population of Paris and Berlin?",
        '1. search("population of Paris")\n2. search("population of Berlin")\n'
        '3. math("$1 + $2")\n4. join()<END_OF_PLAN>',
    ),
    (
        "How many years passed between the first Moon landing and the fall of the Berlin Wall?",
        '1. search("year of the first Moon landing")\n2. search("year the Berlin Wall fell")\n'
        '3. math("$2 - $1")\n4. join()<END_OF_PLAN>',
    ),
]
QUESTIONS = [
    "Which is longer, the Nile or the Amazon river, and by how many kilometres is it longer?",
    "What is the sum of the heights of Mount Everest and K2 in metres, rounded to hundreds?",
    "How many more people live in Tokyo than in New York City according to recent estimates?",
    "What is the average of the boiling points of water and ethanol in degrees Celsius?",
]
STORY = "Write a long, detailed story about a lighthouse keeper who finds a map."


def planner_messages(tokenizer: Any, question: str, target: int = 1000) -> list[dict[str, str]]:
    """A system prompt of about ``target`` tokens, then the question."""
    system = "You are a planner that writes plans of tool calls to answer questions.\n" + TOOLS
    i = 0
    while len(tokenizer.encode(system)) < target:
        q, plan = EXAMPLES[i % len(EXAMPLES)]
        system += f"\nExample {i + 1}\nQuestion: {q}\nPlan:\n{plan}\n"
        i += 1
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


def rss_now_mb() -> float:
    """Resident memory now (``engine_rss_mb`` is the peak so far, load included)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_ttft(llm: TorchLLM, repeats: int) -> dict[str, Any]:
    one = SamplingParams(max_tokens=1)
    cold, warm = [], []
    for r in range(repeats):
        llm.reset_prefix_cache()
        first = planner_messages(llm.tokenizer, QUESTIONS[2 * r % 4])
        t_cold, out = timed(partial(llm.generate, [first], one))
        second = planner_messages(llm.tokenizer, QUESTIONS[(2 * r + 1) % 4])
        t_warm, hit = timed(partial(llm.generate, [second], one))
        cold.append(t_cold)
        warm.append(t_warm)
    return {
        "prompt_tokens": out[0].prompt_tokens,
        "cached_tokens": hit[0].cached_tokens,
        "ttft_cold_s": statistics.median(cold),
        "ttft_cached_s": statistics.median(warm),
        "ttft_speedup": statistics.median(cold) / statistics.median(warm),
    }


def decode_rates(
    backends: dict[str, Callable[[int], int]], n: int, repeats: int
) -> dict[str, float]:
    """Decode tokens/s of each backend: (n - 1) tokens in the time of n minus the time of one.

    A first untimed call puts the prompt in the backend's prefix cache (where it has one), so
    that both timed calls find it there and the difference is decoding alone. The backends take
    turns within each repeat, so a change in the machine's load hits them alike.
    """
    rates: dict[str, list[float]] = {name: [] for name in backends}
    for generate_n in backends.values():
        generate_n(1)
    for _ in range(repeats):
        for name, generate_n in backends.items():
            t1, _ = timed(partial(generate_n, 1))
            tn, made = timed(partial(generate_n, n))
            rates[name].append((made - 1) / max(tn - t1, 1e-9))
    return {name: statistics.median(r) for name, r in rates.items()}


def decode_rate(generate_n: Callable[[int], int], n: int, repeats: int) -> float:
    """:func:`decode_rates` of one backend."""
    return decode_rates({"one": generate_n}, n, repeats)["one"]


def streamed_weight_gb(model: torch.nn.Module) -> float:
    """Bytes of the weights one decode step reads: all but an untied embedding table (a decode
    step reads one row of it)."""
    tables = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    params = {id(p): p for p in model.parameters()}
    used = {
        id(p)
        for m in model.modules()
        if not isinstance(m, torch.nn.Embedding)
        for p in m.parameters(recurse=False)
    }
    return (
        sum(p.numel() * p.element_size() for i, p in params.items() if i not in tables or i in used)
        / 1e9
    )


def engine_tokens(llm: TorchLLM, ids: list[int], n: int) -> list[int]:
    saved, llm.engine.eos_token_ids = llm.engine.eos_token_ids, frozenset()
    try:  # no end-of-sequence: fixed lengths for timing and comparison
        return llm.generate_tokens([ids], SamplingParams(max_tokens=n))[0]
    finally:
        llm.engine.eos_token_ids = saved


def fp32_answers(llm: TorchLLM, n: int, count: int) -> list[tuple[Any, list[int], float]]:
    """The float32 engine's greedy tokens for ``count`` questions and their log-probability."""
    out = []
    for q in QUESTIONS[:count]:
        msgs = [{"role": "user", "content": q}]
        tokens = engine_tokens(llm, llm.encode(msgs), n)
        out.append((msgs, tokens, llm.score([msgs], [llm.tokenizer.decode(tokens)])[0][0]))
    return out


def agreement(llm: TorchLLM, reference: list, n: int) -> tuple[float, float]:
    """Share of the float32 engine's greedy tokens ``llm`` reproduces before the first
    difference, and the change in log-probability per token it gives float32's answers."""
    prefix, delta = [], []
    for msgs, want, logprob in reference:
        got = engine_tokens(llm, llm.encode(msgs), n)
        same = next((i for i, (a, b) in enumerate(zip(want, got, strict=True)) if a != b), n)
        prefix.append(same / n)
        delta.append((llm.score([msgs], [llm.tokenizer.decode(want)])[0][0] - logprob) / n)
    return statistics.mean(prefix), statistics.mean(delta)


def bench_quantized(
    model: str,
    mode: str,
    threads: int,
    ids: list[int],
    reference: list,
    n: int,
    repeats: int,
    batch_n: int = 0,
) -> dict[str, float]:
    """Speed of a re-quantised engine and how far it drifts from float32 on the same questions
    (and, given ``batch_n``, its batch speed-up as in (c))."""
    llm = TorchLLM(model, num_threads=threads, quantization=mode)
    prefix, delta = agreement(llm, reference, n)

    def run(k: int) -> int:
        return len(engine_tokens(llm, ids, k))

    key = mode.replace("-", "_")
    out = {
        f"{key}_tok_s": decode_rate(run, n, repeats),
        f"{key}_greedy_prefix_match": prefix,
        f"{key}_logprob_delta_per_token": delta,
    }
    if batch_n:  # (a full run: also its time to first token, cold and cached)
        turns = bench_batch(llm, batch_n, repeats=min(2, repeats))  # (as the default's)
        out |= {f"{key}_{k}": v for k, v in turns.items()}
        ttft = bench_ttft(llm, repeats)
        out |= {f"{key}_{k}": ttft[k] for k in ("ttft_cold_s", "ttft_cached_s", "ttft_speedup")}
    return out


def bench_batch(
    llm: TorchLLM, n: int, gemm_gflops: float | None = None, repeats: int = 1
) -> dict[str, Any]:
    """(c), and with ``gemm_gflops`` (this CPU's float32 GEMM rate) the most the speed-up could
    be: ``batch_speedup_ceiling`` is the sequential time over the time the concurrent run's
    own arithmetic (the engine's counted rows through every linear layer, attention left out)
    takes at that rate, and ``concurrent_share_of_gemm`` how close the concurrent run came.
    With ``repeats`` > 1 the sequential and concurrent runs take turns, and each keeps its
    fastest (a one-off slow moment of a shared host moved the ratio by a fifth)."""
    asks = ("Explain step by step.", "Answer briefly, then explain why.")
    msgs = [[{"role": "user", "content": f"{q} {a}"}] for a in asks for q in QUESTIONS]
    params = SamplingParams(max_tokens=n)

    def sequential() -> tuple[float, int]:
        llm.reset_prefix_cache()
        elapsed, tokens = 0.0, 0
        for m in msgs:
            t, out = timed(partial(llm.generate, [m], params))
            elapsed += t
            tokens += out[0].completion_tokens
        return elapsed, tokens

    async def together() -> list[Any]:
        return await asyncio.gather(*(llm.agenerate([m], params) for m in msgs))

    def concurrent() -> tuple[float, int, int, int]:
        llm.reset_prefix_cache()
        stats = llm.engine.stats
        before = stats.tokens_computed, stats.logit_rows
        t, outs = timed(lambda: asyncio.run(together()))
        rows, head_rows = stats.tokens_computed - before[0], stats.logit_rows - before[1]
        return t, sum(o[0].completion_tokens for o in outs), rows, head_rows

    seq_runs, par_runs = [], []
    for _ in range(repeats):
        seq_runs.append(sequential())
        par_runs.append(concurrent())
    t_seq, seq_tokens = min(seq_runs)
    t_par, par_tokens, rows, head_rows = min(par_runs)
    out = {
        "sequential_tok_s": seq_tokens / t_seq,
        "concurrent_tok_s": par_tokens / t_par,
        "batch_speedup": (par_tokens / t_par) / (seq_tokens / t_seq),
    }
    if gemm_gflops:
        body, head = linear_macs(llm.engine.runner.model)
        gflop = 2 * (rows * body + head_rows * head) / 1e9
        out |= {
            "concurrent_rows": rows,
            "concurrent_gflop": gflop,
            "concurrent_share_of_gemm": gflop / t_par / gemm_gflops,
            "batch_speedup_ceiling": t_seq / (gflop / gemm_gflops),
        }
    return out


def linear_macs(model: torch.nn.Module) -> tuple[int, int]:
    """Multiply-adds per token row in the linear layers: the transformer's, and the LM head's
    (which only the rows that sample or score run)."""
    body = head = 0
    for name, module in model.named_modules():
        if not (hasattr(module, "in_features") and hasattr(module, "out_features")):
            continue
        macs = int(module.in_features) * int(module.out_features)
        if name.startswith("lm_head"):
            head += macs
        else:
            body += macs
    return body, head


def gemm_gflops(threads: int) -> float:
    """This CPU's float32 GEMM rate: torch's best, over the shapes of a prefill chunk of 512
    rows through an MLP's two products (Qwen2.5-0.5B's: 896 x 4,864 and back)."""
    torch.set_num_threads(threads)
    best = 0.0
    for k, n in ((896, 4864), (4864, 896)):
        a, b = torch.randn(512, k), torch.randn(k, n)
        torch.mm(a, b)
        for _ in range(10):
            elapsed, _ = timed(partial(torch.mm, a, b))
            best = max(best, 2 * 512 * k * n / elapsed / 1e9)
    return best


def map_all(op: Callable[[torch.Tensor], Any], blocks: list[torch.Tensor]) -> list[Any]:
    """``op`` of every block (the memory-rate probe's pass)."""
    return [op(b) for b in blocks]


def stream_gb_s(threads: int, total_mb: int = 1024) -> float:
    """Best rate at which this CPU reads float32 weights: a sum, and a wide mat-vec, over
    ``total_mb`` of distinct memory (so nothing comes from the cache); the best of three."""
    blocks = [torch.randn(896, 16384) for _ in range(total_mb * 2**20 // (896 * 16384 * 4))]
    x = torch.randn(1, 896)
    best = 0.0
    for _ in range(3):
        for op in (torch.sum, partial(torch.matmul, x)):
            elapsed, _ = timed(partial(map_all, op, blocks))
            best = max(best, sum(b.numel() * 4 for b in blocks) / elapsed / 1e9)
    return best


def bench_decode(
    llm: TorchLLM, f32: TorchLLM, model: str, ids: list[int], n: int, repeats: int
) -> dict:
    """Greedy equality with, and decode speed against, transformers on the same weights, for
    the default engine (``llm``) and the engine with float32 linear layers (``f32``).

    Also the memory-bandwidth ceiling: a decode step streams every weight once, so no float32
    backend can decode faster than ``stream_gb_s / float32 weight bytes per token``.
    """
    ref = hf_reference(load_gguf(resolve_model(model)))
    want = hf_greedy(ref, ids, 32)

    def ours(k: int) -> int:
        return len(engine_tokens(llm, ids, k))

    def float32(k: int) -> int:
        return len(engine_tokens(f32, ids, k))

    def theirs(k: int) -> int:
        return len(hf_greedy(ref, ids, k))

    rates = decode_rates({"engine": ours, "float32": float32, "hf": theirs}, n, repeats)
    engine_tok_s, f32_tok_s, hf_tok_s = rates["engine"], rates["float32"], rates["hf"]
    weight_gb = streamed_weight_gb(f32.engine.runner.model)
    bandwidth = stream_gb_s(torch.get_num_threads())
    return {
        "engine_quantization": llm.engine.runner.quantization,
        "greedy_match": engine_tokens(llm, ids, 32) == want,
        "float32_greedy_match": engine_tokens(f32, ids, 32) == want,
        "engine_tok_s": engine_tok_s,
        "float32_tok_s": f32_tok_s,
        "hf_tok_s": hf_tok_s,
        "decode_vs_hf": engine_tok_s / hf_tok_s,
        "decode_float32_vs_hf": f32_tok_s / hf_tok_s,
        "weight_layouts": {f"{o}x{i}": v for (o, i), v in f32.engine.runner.weight_layouts.items()},
        "engine_weight_gb_per_token": streamed_weight_gb(llm.engine.runner.model),
        "weight_gb_per_token": weight_gb,
        "stream_gb_s": bandwidth,
        "decode_ceiling_tok_s": bandwidth / weight_gb,
        "float32_share_of_ceiling": f32_tok_s * weight_gb / bandwidth,
        "hf_share_of_ceiling": hf_tok_s * weight_gb / bandwidth,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer tokens and repeats")
    parser.add_argument(
        "--model", default=None, help="default: qwen2.5-coder-0.5b-instruct; with --quick smollm2"
    )
    parser.add_argument("--threads", type=int, default=0, help="0: the idle cores")
    args = parser.parse_args()
    # --quick must finish in about a minute on 2 cores: the 135M model, same measurements
    args.model = args.model or (
        "smollm2-135m-instruct" if args.quick else "qwen2.5-coder-0.5b-instruct"
    )
    threads = args.threads or default_num_threads()
    repeats, n_decode, n_batch = (1, 16, 16) if args.quick else (3, 32, 32)
    torch.set_num_threads(threads)
    report: dict[str, Any] = {"model": args.model, "threads": threads, "quick": args.quick}

    llm = TorchLLM(args.model, num_threads=threads)
    report.update(bench_ttft(llm, repeats))
    report["engine_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report["engine_rss_now_mb"] = rss_now_mb()
    print("ttft", {k: report[k] for k in ("ttft_cold_s", "ttft_cached_s", "ttft_speedup")})

    ids = llm.encode([{"role": "user", "content": STORY}])
    f32 = TorchLLM(args.model, num_threads=threads, quantization="none")
    report.update(bench_decode(llm, f32, args.model, ids, n_decode, repeats))
    keys = ("engine_quantization", "greedy_match", "engine_tok_s", "float32_tok_s", "hf_tok_s")
    print("decode", {k: report[k] for k in (*keys, "decode_ceiling_tok_s")})

    reference = fp32_answers(f32, n_decode, 2 if args.quick else 4)
    del f32
    prefix, delta = agreement(llm, reference, n_decode)
    report["engine_greedy_prefix_match"], report["engine_logprob_delta_per_token"] = prefix, delta
    batch = 0 if args.quick else n_batch  # (--quick: its speed and quality only)
    q8 = bench_quantized(args.model, "gguf-q8", threads, ids, reference, n_decode, repeats, batch)
    report.update(q8)
    report["decode_gguf_q8_vs_hf"] = report["gguf_q8_tok_s"] / report["hf_tok_s"]
    print("gguf-q8", q8)
    if not args.quick:  # (the re-quantised modes: full runs only, so --quick stays ~1 minute)
        for mode in ("int8", "int8-dynamic"):
            report.update(
                bench_quantized(args.model, mode, threads, ids, reference, n_decode, repeats)
            )
        report["decode_int8_vs_hf"] = report["int8_tok_s"] / report["hf_tok_s"]
        print("int8", {k: v for k, v in report.items() if k.startswith("int8")})

    report.update(bench_llamacpp(args.model, ids, threads, n_decode, repeats))
    report["decode_vs_llamacpp"] = report["engine_tok_s"] / report["llamacpp_tok_s"]
    if "int8_tok_s" in report:
        report["decode_int8_vs_llamacpp"] = report["int8_tok_s"] / report["llamacpp_tok_s"]
    report["decode_gguf_q8_vs_llamacpp"] = report["gguf_q8_tok_s"] / report["llamacpp_tok_s"]
    print("llama.cpp", report["llamacpp_tok_s"])

    report["gemm_gflops"] = gemm_gflops(threads)
    report.update(bench_batch(llm, n_batch, report["gemm_gflops"], repeats=1 if args.quick else 2))
    print("batch", {k: report[k] for k in ("batch_speedup", "batch_speedup_ceiling")})
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in report.items()}))


def bench_llamacpp(model: str, ids: list[int], threads: int, n: int, repeats: int) -> dict:
    from ragloom.runtime.backends.llamacpp import LlamaCppLLM

    cpp = LlamaCppLLM(model, n_threads=threads, n_ctx=2048)
    prompt = [{"role": "user", "content": STORY}]

    def run(k: int) -> int:
        return cpp.generate([prompt], SamplingParams(max_tokens=k))[0].completion_tokens

    return {"llamacpp_tok_s": decode_rate(run, n, repeats)}


if __name__ == "__main__":
    main()
