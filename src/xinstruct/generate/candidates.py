"""Stage I, generation: the generator writes English instructions for cleaned target-language documents.

Model work goes to a Journal in <folder>/cache/ (committed in batches, so a killed run started again skips
finished documents and repeats nothing). The journal carries the fingerprint of the generator and its settings,
so candidates of another model or sampling setting are never reused, and every record names the document's
content hash, so a document whose text changed is generated again.

The stage's output, <folder>/<lang>.candidates.jsonl and <lang>.rejects.jsonl, is then written from the journal
for the documents the corpus holds now: a document that left the corpus leaves no candidates behind, and a
server error that a later run resolved is no longer counted. Documents whose model call failed
(`generate:backend_error`) are tried again on the next run.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

from xinstruct.config import GenerateConfig
from xinstruct.corpus.langid import LanguageIdentifier
from xinstruct.generate.checks import check_instruction
from xinstruct.io.files import write_jsonl
from xinstruct.io.journal import Journal, batches
from xinstruct.models.base import Backend, SamplingParams
from xinstruct.prompts import generation_prompt

RETRYABLE = "generate:backend_error"


def doc_key(doc: dict) -> str:
    return f"{doc.get('source', '')}::{doc['id']}"


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def sampling_params(cfg: GenerateConfig) -> SamplingParams:
    return SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                          n=cfg.n_per_doc, stop=tuple(cfg.stop), seed=cfg.seed)


def finished_keys(journal: Journal) -> set[tuple[str, str]]:
    """(document key, text hash) of every document with a final outcome: candidates or a lasting reject."""
    done = {(r["doc_key"], r["doc_hash"]) for r in journal.records("candidates")}
    done |= {(r["doc_key"], r["doc_hash"]) for r in journal.records("rejects") if r["reason"] != RETRYABLE}
    return done


def generate_candidates(docs: Iterable[dict], lang: str, backend: Backend, cfg: GenerateConfig,
                        folder: Path, on_progress: Callable[[int], None] | None = None,
                        fingerprint: str | None = None) -> dict:
    """Generate for every document not yet finished, then write the outputs for exactly `docs`.

    Returns {"this_run": counts of this call's work, **materialize()'s totals}. `fingerprint` identifies the
    generator and settings; the cache is emptied when it changes.
    """
    params = sampling_params(cfg)
    lid = LanguageIdentifier()
    stats: Counter = Counter()
    current: set[tuple[str, str]] = set()
    started = time.perf_counter()
    cache = Path(folder) / "cache"
    with Journal(cache, lang, ("candidates", "rejects"), fingerprint) as journal:
        if journal.reset:
            stats["cache_reset"] = 1
        done = finished_keys(journal)
        stats["skipped_done"] = 0

        def todo():
            for d in docs:
                key = (doc_key(d), text_hash(d["text"]))
                current.add(key)
                if key in done:
                    stats["skipped_done"] += 1
                    if on_progress:
                        on_progress(1)
                else:
                    yield d

        for batch in batches(todo(), cfg.batch_docs):
            results = backend.generate([generation_prompt(d["text"]) for d in batch], params)
            kept, rejected = [], []
            for doc, result in zip(batch, results):
                base = {"doc_key": doc_key(doc), "doc_hash": text_hash(doc["text"]), "doc_id": doc["id"],
                        "source": doc.get("source", ""), "lang": lang}
                if result.error:
                    rejected.append({**base, "stage": "generate", "reason": RETRYABLE, "error": result.error})
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
    return {"this_run": dict(stats), **materialize(cache, lang, current, Path(folder))}


def materialize(cache: Path, lang: str, current: set[tuple[str, str]], folder: Path) -> dict:
    """Write <lang>.candidates.jsonl / .rejects.jsonl from the journal for the `current` documents only.

    A document's server errors are dropped once it has a final outcome, and at most its last one is kept
    while it has none; so the counts are the current state, not the history of retries.
    """
    journal = Journal(cache, lang, ("candidates", "rejects"))
    journal.close()  # read-only use: opening it truncates a batch cut off mid-write, nothing more
    final = finished_keys(journal)
    pending = {}
    for r in journal.records("rejects"):
        key = (r["doc_key"], r["doc_hash"])
        if r["reason"] == RETRYABLE and key in current and key not in final:
            pending[key] = r
    rejects: Counter = Counter()

    def candidates():
        for r in journal.records("candidates"):
            if (r["doc_key"], r["doc_hash"]) in current:
                yield r

    def lasting_rejects():
        for r in journal.records("rejects"):
            if r["reason"] != RETRYABLE and (r["doc_key"], r["doc_hash"]) in current:
                rejects[r["reason"]] += 1
                yield r
        for r in pending.values():
            rejects[r["reason"]] += 1
            yield r

    n = write_jsonl(folder / f"{lang}.candidates.jsonl", candidates())
    write_jsonl(folder / f"{lang}.rejects.jsonl", lasting_rejects())
    return {"documents": len(current), "candidates": n, "rejected": dict(rejects),
            "unresolved": {RETRYABLE: len(pending)} if pending else {}}
