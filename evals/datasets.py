"""Loaders that read the shared QA data sets, as they are on disk, into one schema.

Each loader returns an :class:`~ragloom.evals.EvalSet` (examples + corpus) from the original
files under :func:`ragloom._config.data_dir` (see each folder's ``SOURCE.txt``):

=================  =========================================  ==============================
name               corpus                                     gold
=================  =========================================  ==============================
``covid_qa``       98 full articles (``document_id``)         answer spans (offsets repaired)
``pubmedqa``       1,000 abstracts (sections joined), by PMID  the question's own abstract
``squad2``         411 distinct paragraphs (``p0``, ``p1``..)  the paragraph; 258 unanswerable
``hotpotqa``       994 paragraphs keyed by title               supporting titles
``musique``        1,890 paragraphs (``m0``, ``m1``, ...)       supporting paragraphs
=================  =========================================  ==============================

This module does not chunk, embed or download anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ragloom._config import data_dir
from ragloom.errors import EvalError
from ragloom.evals._types import EvalSet, Example, GoldSpan, Passage

__all__ = [
    "DATASETS",
    "load_covid_qa",
    "load_dataset",
    "load_hotpotqa",
    "load_musique",
    "load_pubmedqa",
    "load_squad2",
]


def _read_json(folder: str, name: str, root: Path | None) -> Any:
    path = (root or data_dir()) / folder / name
    if not path.is_file():
        raise EvalError(f"data set file {path} not found; set RAGLOOM_DATA_DIR to the folder "
                        f"that holds {folder}/")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise EvalError(f"{path} is not valid JSON: {exc}") from exc


def _repair_span(context: str, text: str, start: int) -> tuple[int, int] | None:
    """Find ``text`` in ``context`` near ``start``; COVID-QA offsets are often off by one.

    >>> _repair_span("ab cd", " cd", 3)
    (3, 5)
    """
    needle = text.strip()
    if not needle:
        return None
    if context[start : start + len(needle)] == needle:
        return start, start + len(needle)
    hits = []
    at = context.find(needle)
    while at >= 0:
        hits.append(at)
        at = context.find(needle, at + 1)
    if not hits:
        return None
    best = min(hits, key=lambda h: abs(h - start))
    return best, best + len(needle)


def load_covid_qa(limit: int | None = None, root: Path | None = None) -> EvalSet:
    """COVID-QA (deepset, 2020-04-23 export): extractive questions over full articles.

    Answer offsets are checked against the article; spans whose offset is off (a leading
    space in the annotation) are moved to the nearest exact occurrence of the answer text.
    """
    raw = _read_json("covid_qa_deepset", "200423_covidQA.json", root)
    corpus, examples = [], []
    for article in raw["data"]:
        for para in article["paragraphs"]:
            doc_id, context = str(para["document_id"]), para["context"]
            corpus.append(Passage(id=doc_id, text=context))
            for qa in para["qas"]:
                spans = [_repair_span(context, a["text"], a["answer_start"]) for a in qa["answers"]]
                examples.append(Example(
                    id=str(qa["id"]), question=qa["question"].strip(),
                    answers=tuple(a["text"].strip() for a in qa["answers"]),
                    gold_ids=(doc_id,),
                    gold_spans=tuple(GoldSpan(doc_id=doc_id, start=s, end=e)
                                     for s, e in (sp for sp in spans if sp)),
                    answerable=not qa.get("is_impossible", False), dataset="covid_qa"))
    return EvalSet("covid_qa", tuple(examples[:limit]), tuple(corpus))


def load_pubmedqa(limit: int | None = None, root: Path | None = None) -> EvalSet:
    """PubMedQA PQA-L: the 1,000 abstracts pooled as the corpus, LONG_ANSWER as reference.

    The yes/no/maybe decision is kept as a second accepted answer.
    """
    raw = _read_json("pubmedqa_pqal", "ori_pqal.json", root)
    corpus, examples = [], []
    for pmid, item in raw.items():
        corpus.append(Passage(id=pmid, text="\n".join(item["CONTEXTS"])))
        examples.append(Example(
            id=pmid, question=item["QUESTION"],
            answers=(item["LONG_ANSWER"], item["final_decision"]),
            gold_ids=(pmid,), dataset="pubmedqa"))
    return EvalSet("pubmedqa", tuple(examples[:limit]), tuple(corpus))


def load_squad2(limit: int | None = None, root: Path | None = None) -> EvalSet:
    """SQuAD 2.0 dev sample (500 questions); unanswerable ones have no answers and no gold."""
    queries = _read_json("squad2_dev_sample500", "queries.json", root)["queries"]
    truth = _read_json("squad2_dev_sample500", "ground_truth.json", root)
    ids: dict[str, str] = {}
    examples = []
    for q in queries:
        pid = ids.setdefault(q["context"], f"p{len(ids)}")
        gold = truth.get(q["id"])
        if gold is None:
            raise EvalError(f"squad2 question {q['id']} has no entry in ground_truth.json")
        answerable = not gold["is_impossible"]
        examples.append(Example(
            id=q["id"], question=q["question"],
            answers=tuple(dict.fromkeys(a.strip() for a in gold["answers"])) if answerable else (),
            gold_ids=(pid,) if answerable else (), answerable=answerable, dataset="squad2"))
    corpus = tuple(Passage(id=pid, text=text) for text, pid in ids.items())
    return EvalSet("squad2", tuple(examples[:limit]), corpus)


def load_hotpotqa(limit: int | None = None, root: Path | None = None) -> EvalSet:
    """HotpotQA (train, 100 questions): gold ids are the supporting paragraphs' titles."""
    folder = "hipporag_hotpotqa_musique_train100"
    raw = _read_json(folder, "hotpotqa_train.json", root)
    corpus_raw = _read_json(folder, "hotpotqa_train_corpus.json", root)
    corpus = tuple(Passage(id=t, title=t, text="".join(s)) for t, s in corpus_raw.items())
    examples = tuple(Example(
        id=item["_id"], question=item["question"], answers=(item["answer"],),
        gold_ids=tuple(dict.fromkeys(title for title, _ in item["supporting_facts"])),
        dataset="hotpotqa") for item in raw)
    return EvalSet("hotpotqa", examples[:limit], corpus)


def load_musique(limit: int | None = None, root: Path | None = None) -> EvalSet:
    """MuSiQue-Ans (train, 100 questions); passages are matched to the corpus by title+text."""
    folder = "hipporag_hotpotqa_musique_train100"
    raw = _read_json(folder, "musique_train.json", root)
    corpus_raw = _read_json(folder, "musique_train_corpus.json", root)
    corpus = tuple(Passage(id=f"m{i}", title=p["title"], text=p["text"])
                   for i, p in enumerate(corpus_raw))
    by_content = {(p.title, p.text): p.id for p in corpus}
    examples = []
    for item in raw:
        support = [p for p in item["paragraphs"] if p["is_supporting"]]
        keys = [(p["title"], p["paragraph_text"]) for p in support]
        missing = [title for title, text in keys if (title, text) not in by_content]
        if missing:
            raise EvalError(f"musique {item['id']}: supporting paragraphs {missing} not in corpus")
        examples.append(Example(
            id=item["id"], question=item["question"],
            answers=(item["answer"], *item.get("answer_aliases", [])),
            gold_ids=tuple(by_content[key] for key in keys),
            dataset="musique"))
    return EvalSet("musique", tuple(examples[:limit]), corpus)


DATASETS: dict[str, Callable[..., EvalSet]] = {
    "covid_qa": load_covid_qa,
    "hotpotqa": load_hotpotqa,
    "musique": load_musique,
    "pubmedqa": load_pubmedqa,
    "squad2": load_squad2,
}


def load_dataset(name: str, limit: int | None = None, root: Path | None = None) -> EvalSet:
    """Load a data set by name (one of :data:`DATASETS`).

    >>> load_dataset("squad2", limit=2).examples[0].dataset  # doctest: +SKIP
    'squad2'
    """
    if name not in DATASETS:
        raise EvalError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name](limit=limit, root=root)
