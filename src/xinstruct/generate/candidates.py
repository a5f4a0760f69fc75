"""Stage I, generation: the generator writes English instructions for cleaned target-language documents.

Output per language (under <run>/candidates/): <lang>.candidates.jsonl and <lang>.rejects.jsonl, committed in
batches through a Journal, so a killed run started again skips finished documents and repeats nothing.
Documents whose model call failed are recorded as `generate:backend_error` and tried again on the next run.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

from xinstruct.config import GenerateConfig
from xinstruct.corpus.langid import LanguageIdentifier
from xinstruct.generate.checks import check_instruction
from xinstruct.models.base import Backend, SamplingParams
from xinstruct.pipeline.journal import Journal, batches, read_jsonl
from xinstruct.prompts import generation_prompt


def doc_key(doc: dict) -> str:
    return f"{doc.get('source', '')}::{doc['id']}"


def sampling_params(cfg: GenerateConfig) -> SamplingParams:
    return SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                          n=cfg.n_per_doc, stop=tuple(cfg.stop), seed=cfg.seed)


def finished_keys(journal: Journal) -> set[str]:
    done = {r["doc_key"] for r in journal.records("candidates")}
    done |= {r["doc_key"] for r in journal.records("rejects") if r["reason"] != "generate:backend_error"}
    return done


def generate_candidates(docs: Iterable[dict], lang: str, backend: Backend, cfg: GenerateConfig,
                        folder: Path, on_progress: Callable[[int], None] | None = None) -> dict:
    """Generate for every document not yet finished; returns this run's counts for `lang`."""
    params = sampling_params(cfg)
    lid = LanguageIdentifier()
    stats: Counter = Counter()
    started = time.perf_counter()
    with Journal(folder, lang, ("candidates", "rejects")) as journal:
        done = finished_keys(journal)
        stats["skipped_done"] = 0

        def todo():
            for d in docs:
                if doc_key(d) in done:
                    stats["skipped_done"] += 1
                else:
                    yield d

        for batch in batches(todo(), cfg.batch_docs):
            results = backend.generate([generation_prompt(d["text"]) for d in batch], params)
            kept, rejected = [], []
            for doc, result in zip(batch, results):
                base = {"doc_key": doc_key(doc), "doc_id": doc["id"], "source": doc.get("source", ""),
                        "lang": lang}
                if result.error:
                    rejected.append({**base, "stage": "generate", "reason": "generate:backend_error",
                                     "error": result.error})
                    continue
                seen: set[str] = set()
                for k, completion in enumerate(result.completions):
                    stats["tokens"] += completion.n_tokens
                    instruction, reason = check_instruction(
                        completion, doc["text"], lid, min_chars=cfg.min_instruction_chars,
                        max_chars=cfg.max_instruction_chars, max_echo=cfg.max_echo_overlap, seen=seen)
                    if reason:
                        rejected.append({**base, "stage": "generate", "reason": f"generate:{reason}",
                                         "candidate_index": k, "raw": completion.text})
                    else:
                        kept.append({"id": f"{doc['id']}#c{k}", **base, "candidate_index": k,
                                     "instruction": instruction, "output": doc["text"],
                                     "generator": backend.model_id, "sampling": asdict(params)})
            journal.commit({"candidates": kept, "rejects": rejected})
            stats["documents"] += len(batch)
            stats["candidates"] += len(kept)
            stats.update(r["reason"] for r in rejected)
            if on_progress:
                on_progress(len(batch))
    stats["seconds"] = round(time.perf_counter() - started, 2)
    return dict(stats)


def summarize_candidates(folder: Path) -> dict:
    """Totals per language over everything committed so far (all runs)."""
    summary = {}
    for path in sorted(folder.glob("*.candidates.jsonl")):
        lang = path.name.split(".")[0]
        rejects = Counter(r["reason"] for r in read_jsonl(folder / f"{lang}.rejects.jsonl"))
        kept = sum(1 for _ in read_jsonl(path))
        summary[lang] = {"candidates": kept, "rejected": dict(rejects)}
    return summary
