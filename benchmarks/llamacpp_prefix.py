"""Time to first token of a planner prompt on llama.cpp: cold vs with its prefix state restored.

The prompt is an LLMCompiler planner prompt (system text, ten tool descriptions, three
worked examples: ~1,000 tokens) followed by a ~30-token question. Measured in one run on the
same model and settings:

- ``ttft_cold_s``: prefix cache and live context cleared, prompt prefilled from scratch;
- ``ttft_cached_s``: the same system prefix with a different question, after an unrelated
  prompt has replaced the live context, so the prefix comes back from a saved KV state
  (``cached_tokens`` of them) and only the tail is prefilled;
- ``decode_tok_s``: greedy decode speed after the prompt;
- ``greedy_match``: whether the cached run's greedy tokens equal the cold run's.

``ttft_speedup`` divides the better of two cold baselines (ragloom's grid prefill, and plain
llama.cpp prefill in batches of 512 with no prefix cache) by the cached time. Medians over
``--reps`` repetitions. Usage: ``python benchmarks/llamacpp_prefix.py [--quick]``;
the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from ragloom.runtime.backends.llamacpp import LlamaCppLLM
from ragloom.runtime.llm import SamplingParams

TOOLS = [
    ("search", "query: str", "Web search; returns the top passages for the query."),
    ("wiki", "title: str", "The lead section of the Wikipedia article with this title."),
    ("math", "problem: str", "Solves a math problem stated in words or symbols; may use $N."),
    ("retrieve", "query: str, k: int", "Top-k chunks from the user's indexed documents."),
    ("lookup", "entity: str, field: str", "A field (height, population...) of an entity."),
    ("weather", "city: str, date: str", "The forecast for a city on a date (YYYY-MM-DD)."),
    ("convert", "value: float, unit_from: str, unit_to: str", "Unit conversion."),
    ("calendar", "query: str", "Finds events in the user's calendar matching the query."),
    ("email", "query: str", "Searches the user's e-mail; returns subjects and senders."),
    ("translate", "text: str, target: str", "Translates text into the target language."),
]
EXAMPLES = [
    "Question: Which is taller, the Eiffel Tower or the Statue of Liberty, and by how much?\n"
    '1. lookup("Eiffel Tower", "height")\n2. lookup("Statue of Liberty", "height")\n'
    '3. math("$1 - $2")\n4. join()<END_OF_PLAN>',
    "Question: What is the combined population of France and Germany in millions?\n"
    '1. lookup("France", "population")\n2. lookup("Germany", "population")\n'
    '3. math("($1 + $2) / 1000000")\n4. join()<END_OF_PLAN>',
    "Question: Will it rain in Paris tomorrow, and what is 20 Celsius in Fahrenheit?\n"
    '1. weather("Paris", "tomorrow")\n2. convert(20, "celsius", "fahrenheit")\n'
    "3. join()<END_OF_PLAN>",
]
QUESTIONS = [
    "How much older is the Great Pyramid of Giza than the Colosseum in Rome, in years?",
    "What is the distance between Tokyo and Osaka in miles, and how long does a train take?",
    "Which river is longer, the Nile or the Amazon, and what is the difference in kilometres?",
    "Who designed the Sydney Opera House, and in which year did construction of it begin?",
]


SYSTEM = """You write a plan of tool calls that answers the user's question.
Tools:
{tools}
- join(): collects the results of the tasks above and answers. Always the last task.

Write one task per line, numbered from 1: the number, a dot, then the call.
Rules:
- Arguments are Python literals (strings in double quotes, numbers, lists) or "$N", the output
  of earlier task N (only tasks written earlier).
- Maximise parallelism: tasks that do not need each other's output must not depend on each other.
- End with the join() task, then <END_OF_PLAN>. Optionally a `Thought: ...` line before a task.
{notes}

Examples:
{examples}"""


def planner_prompt(question: str, pad: int) -> list:
    """An LLMCompiler-style planner prompt (self-contained, so that prompt edits elsewhere do
    not move this benchmark's numbers)."""
    tools = "\n".join(f"- {name}({sig}): {desc}" for name, sig, desc in TOOLS)
    notes = "\n".join(
        f"- Note {i}: prefer lookups of single facts, and compute with math afterwards."
        for i in range(pad)
    )
    system = SYSTEM.format(tools=tools, notes=notes, examples="\n\n".join(EXAMPLES))
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": f"Question: {question}"},
    ]


def streamed(llm: LlamaCppLLM, prompt: list, max_tokens: int) -> tuple[float, float, str, int]:
    """(time to first token, decode tokens/s after it, text, tokens) of one streamed reply."""
    start, first, pieces = time.perf_counter(), 0.0, list[str]()
    for piece in llm.stream(prompt, SamplingParams(max_tokens=max_tokens)):
        if not pieces:
            first = time.perf_counter() - start
        pieces.append(piece)
    rest = time.perf_counter() - start - first
    return first, (len(pieces) - 1) / max(rest, 1e-9), "".join(pieces), len(pieces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repetition, short decode")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="0: llama.cpp backend default")
    args = parser.parse_args()
    reps, decode_tokens = (1, 24) if args.quick else (args.reps, 64)
    prompts = [planner_prompt(q, pad=22) for q in QUESTIONS]
    unrelated = "An unrelated prompt replaces the live context."
    load = os.getloadavg()[0]  # timings on a shared machine: say how busy it was

    # baseline: plain llama.cpp prefill in batches of 512, no prefix cache; measured inside
    # each repetition, next to the cold run, so that both see the same machine load
    plain = LlamaCppLLM(
        args.model, n_ctx=2048, n_threads=args.threads, prefix_block=512, prefix_cache_mb=0
    )
    plain.generate(["warm up"], SamplingParams(max_tokens=2))
    baseline: list[float] = []
    llm = LlamaCppLLM(args.model, n_ctx=2048, n_threads=args.threads)
    llm.generate(["warm up"], SamplingParams(max_tokens=2))
    cold, cached, decode, matches, reused = [], [], [], [], []
    for rep in range(reps):
        plain.reset_prefix_cache()
        baseline.append(streamed(plain, prompts[rep % 4], 1)[0])
        llm.reset_prefix_cache()
        ttft, speed, reference, _ = streamed(llm, prompts[rep % 4], decode_tokens)
        cold.append(ttft)
        decode.append(speed)
        llm.generate([unrelated], SamplingParams(max_tokens=1))
        [other] = llm.generate([prompts[(rep + 1) % 4]], SamplingParams(max_tokens=1))
        reused.append(other.cached_tokens)
        llm.generate([unrelated], SamplingParams(max_tokens=1))
        ttft_cached, speed, again, _ = streamed(llm, prompts[(rep + 1) % 4], 1)
        cached.append(ttft_cached)
        llm.generate([unrelated], SamplingParams(max_tokens=1))
        _, speed, again, _ = streamed(llm, prompts[rep % 4], decode_tokens)
        decode.append(speed)
        matches.append(again == reference)
        print(
            f"rep {rep}: plain {baseline[rep]:.2f}s  cold {ttft:.2f}s  cached "
            f"{ttft_cached:.2f}s ({other.cached_tokens}/{other.prompt_tokens} reused)  "
            f"same tokens: {again == reference}"
        )
    print("plan:", reference.strip().replace("\n", " | "))

    ttft_cold = min(statistics.median(cold), statistics.median(baseline))
    ttft_cached = statistics.median(cached)
    result = {
        "benchmark": "llamacpp_prefix",
        "model": llm.model_name,
        "prompt_tokens": other.prompt_tokens,
        "cached_tokens": int(statistics.median(reused)),
        "ttft_plain_llamacpp_s": round(statistics.median(baseline), 3),
        "ttft_cold_s": round(statistics.median(cold), 3),
        "ttft_cached_s": round(ttft_cached, 3),
        "ttft_speedup": round(ttft_cold / ttft_cached, 2),
        "decode_tok_s": round(statistics.median(decode), 2),
        "greedy_match": all(matches),
        "n_threads": llm._ctx.n_threads(),
        "reps": reps,
        "load_avg_1m": round((load + os.getloadavg()[0]) / 2, 1),
        "cpus": len(os.sched_getaffinity(0)),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
