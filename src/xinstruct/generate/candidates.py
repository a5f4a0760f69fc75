"""Stage I, generation: the generator writes English instructions for cleaned target-language documents.

The work is split into tasks (language, shard; core/tasks.py). A task keeps what the model wrote for each of
its documents in its own cache (<folder>/cache/<task>.sqlite, io/cache.py), committed a batch at a time: a
killed task started again skips finished documents and repeats nothing. The cache carries the fingerprint of
the generator and its settings, so candidates of another model or sampling setting are never reused, and each
document is keyed by its id and a hash of its text, so a document whose text changed is generated again.
A document whose model call failed (`generate:backend_error`) is tried again on the next run.

The stage's output, <folder>/<lang>.candidates.jsonl and <lang>.rejects.jsonl, is then written by streaming
the language's documents in corpus order and looking each one up in its shard's cache: a document that left
the corpus leaves nothing behind, a resolved server error is no longer counted, and the files are the same
however many tasks wrote them.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

from xinstruct.config import GenerateConfig
from xinstruct.core.layout import RunLayout
from xinstruct.core.tasks import ShardCaches, Task, open_task_cache
from xinstruct.core.work import MapCounts, journaled_map, retry_note, workers_for
from xinstruct.corpus.langid import LanguageIdentifier
from xinstruct.generate.checks import check_instruction
from xinstruct.io.cache import DONE, FAILED
from xinstruct.io.files import dumps
from xinstruct.models.base import Backend, SamplingParams, Sources
from xinstruct.prompts import generation_prompt

RETRYABLE = "generate:backend_error"


def doc_key(doc: dict) -> str:
    """A document's identity for the cache: where it came from, its id, and its text."""
    text_hash = hashlib.sha256(doc["text"].encode("utf-8")).hexdigest()[:16]
    return f"{doc.get('source', '')}::{doc['id']}#{text_hash}"


def sampling_params(cfg: GenerateConfig) -> SamplingParams:
    return SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                          n=cfg.n_per_doc, stop=tuple(cfg.stop), seed=cfg.seed)


def candidate_sources(cfg: GenerateConfig) -> Sources:
    """The config's candidate sources; the guided ones compare each token with the prompt of an empty text."""
    return Sources(sampling_params(cfg), greedy=cfg.greedy, guided=tuple(cfg.guided),
                   plausibility=cfg.plausibility, unconditional=generation_prompt(""))


def outcome(doc: dict, result, lang: str, cfg: GenerateConfig, lid, model_id: str,
            sources: Sources) -> tuple[str, list[dict]]:
    """(status, rows) for one document: its candidates and per-candidate rejects, or the server error. Each row
    says which source wrote it (sample, greedy, guided:<α>)."""
    base = {"doc_key": doc_key(doc), "doc_id": doc["id"], "source": doc.get("source", ""), "lang": lang}
    if result.error:
        return FAILED, [{**base, "stream": "rejects", "stage": "generate", "reason": RETRYABLE,
                         "error": result.error}]
    rows, seen = [], set()
    for k, (completion, origin) in enumerate(zip(result.completions, sources.labels(), strict=True)):
        instruction, reason = check_instruction(
            completion, doc["text"], lid, min_chars=cfg.min_instruction_chars, max_chars=cfg.max_instruction_chars,
            max_echo=cfg.max_echo_overlap, seen=seen, require_support=cfg.require_support)
        if reason:
            rows.append({**base, "stream": "rejects", "stage": "generate", "reason": f"generate:{reason}",
                         "candidate_index": k, "decoding": origin, "raw": completion.text})
        else:
            rows.append({"id": f"{doc['id']}#c{k}", **base, "stream": "candidates", "candidate_index": k,
                         "decoding": origin, "instruction": instruction, "output": doc["text"],
                         "generator": model_id, "sampling": asdict(sources.sampled)})
    return DONE, rows


def generate_task(docs: Iterable[dict], lang: str, task: Task, backend: Backend, cfg: GenerateConfig,
                  folder: Path, fingerprint: str | None = None,
                  on_progress: Callable[[int], None] | None = None,
                  prompt: Callable[[str], str] = generation_prompt) -> dict:
    """Generate for every document of `task` not yet done (or that failed before); returns this run's counts.
    `prompt` makes a document's prompt from its text (the paper's, or a few-shot one: generate/fewshot.py)."""
    sources = candidate_sources(cfg)
    lid = LanguageIdentifier()
    stats: Counter = Counter()
    started = time.perf_counter()
    with open_task_cache(RunLayout.task_cache(folder, task.name), task, fingerprint) as (cache, others):
        stats["cache_reset"] = int(cache.reset)

        def call(batch):
            results = backend.generate_candidates([prompt(d["text"]) for d in batch], sources)
            return [(r, outcome(d, r, lang, cfg, lid, backend.model_id, sources))
                    for d, r in zip(batch, results, strict=True)]

        counts = MapCounts()
        owned = (d for d in docs if task.owns(doc_key(d)))
        for group in journaled_map(owned, doc_key, cache, call, lambda d, o: (doc_key(d), *o[1]), cfg.batch_docs,
                                   workers_for(backend), reuse=others, advance=on_progress,
                                   note=lambda: retry_note(backend), counts=counts):
            stats["documents"] += len(group)
            stats["tokens"] += sum(c.n_tokens for _, (r, _) in group if not r.error for c in r.completions)
            for _, (_, (_, rows)) in group:
                stats.update("candidates" if r["stream"] == "candidates" else r["reason"] for r in rows)
        stats.update({k: n for k, n in (("skipped_done", counts.cached), ("copied", counts.copied)) if n})
    stats["seconds"] = round(time.perf_counter() - started, 2)
    return dict(stats)


def write_outputs(docs: Iterable[dict], lang: str, shards: int, folder: Path) -> dict:
    """<lang>.candidates.jsonl and .rejects.jsonl for exactly `docs`, in their order, from the task caches.

    Returns the counts of the current state: documents, candidates, rejects by reason, records left to retry
    (server errors), and documents no task has done yet (`missing`: a task that did not finish)."""
    caches = ShardCaches(lambda s: RunLayout.task_cache(folder, Task(lang, s, shards).name), shards)
    counts: Counter = Counter()
    rejected: Counter = Counter()
    paths = {"candidates": RunLayout.candidates_in(folder, lang), "rejects": RunLayout.candidate_rejects_in(folder, lang)}
    tmp = {k: p.with_name(p.name + ".tmp") for k, p in paths.items()}
    files = {k: open(p, "w", encoding="utf-8") for k, p in tmp.items()}  # noqa: SIM115 - closed below
    try:
        for doc in docs:
            key = doc_key(doc)
            status, rows = caches.of(key).get(key)
            counts["documents"] += 1
            if status is None:
                counts["missing"] += 1
            for r in rows:
                stream = r.pop("stream")
                files[stream].write(dumps(r))
                if stream == "candidates":
                    counts["candidates"] += 1
                else:
                    rejected[r["reason"]] += 1
    finally:
        for f in files.values():
            f.close()
        caches.close()
    for k, path in paths.items():
        tmp[k].replace(path)
    unresolved = {k: v for k, v in (("generate:backend_error", rejected.get(RETRYABLE, 0)),
                                    ("generate:not_done", counts["missing"])) if v}
    return {"documents": counts["documents"], "candidates": counts["candidates"], "rejected": dict(rejected),
            "unresolved": unresolved}


def generate_candidates(docs: list[dict], lang: str, backend: Backend, cfg: GenerateConfig, folder: Path,
                        on_progress: Callable[[int], None] | None = None, fingerprint: str | None = None) -> dict:
    """One language in one task, then its outputs: {"this_run": counts, **write_outputs()}."""
    docs = list(docs)
    this_run = generate_task(docs, lang, Task(lang), backend, cfg, folder, fingerprint, on_progress)
    return {"this_run": this_run, **write_outputs(docs, lang, 1, folder)}
