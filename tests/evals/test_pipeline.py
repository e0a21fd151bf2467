"""One pipeline cell with reranking and corrective RAG, driven by fake models."""

from __future__ import annotations

import json

from evals_fakes import TableEmbedder

from ragloom.evals import CellConfig, Example, Passage, Workspace, run_cell
from ragloom.runtime import FakeLLM

CORPUS = [Passage(id="d1", text="Masks reduce the spread of respiratory viruses. " * 3),
          Passage(id="d2", text="Bananas are rich in potassium and taste sweet. " * 3),
          Passage(id="d3", text="The spike protein binds the ACE2 receptor on cells. " * 3)]
EXAMPLES = [Example(id="q1", question="Do masks reduce spread?", answers=("yes",),
                    gold_ids=("d1",))]


def test_rerank_reorders_the_fetched_candidates():
    llm = FakeLLM(["Yes."], scores=lambda p, c: -0.1 if ("Masks" in p) == (c == " yes") else -4)
    ws = Workspace(CORPUS, TableEmbedder({}, dim=8), llm, rerank_fetch=3)
    cell = CellConfig(retrieval="bm25", chunker="chars", chunk_size=60, chunk_overlap=0, top_k=2,
                      rerank=True)
    out = run_cell(ws, cell, EXAMPLES, generate=False)
    contexts = out.predictions[0].contexts
    assert len(contexts) == 2 and all("Masks" in c.text for c in contexts)
    assert out.predictions[0].answer == "" and out.retrieval_s[0] > 0


def test_crag_cell_keeps_the_relevant_chunks_and_answers_from_them():
    def respond(prompt):
        if prompt.startswith("Does the DOCUMENT"):
            relevant = "Masks" in prompt.split("DOCUMENT:")[1]
            return json.dumps({"relevant": relevant})
        if prompt.startswith("The search query"):
            return "masks"
        return "Yes, masks reduce spread."

    llm = FakeLLM(respond)
    ws = Workspace(CORPUS, TableEmbedder({}, dim=8), llm)
    cell = CellConfig(retrieval="bm25", chunker="chars", chunk_size=60, chunk_overlap=0, top_k=3,
                      crag=True)
    out = run_cell(ws, cell, EXAMPLES)
    pred = out.predictions[0]
    assert pred.contexts and all(c.metadata["source"] == "d1" for c in pred.contexts)
    assert pred.answer == "Yes, masks reduce spread."
    answer_prompt = llm.prompts[-1]
    assert "Bananas" not in answer_prompt and "Masks reduce" in answer_prompt
