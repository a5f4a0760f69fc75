"""The corpus stage: raw text → cleaned documents per language, every drop written down with its reason.

Two datatrove pipelines: (1) filter, input files grouped into tasks of about equal bytes: read → NFC → length →
quality → language ID; (2) dedup, one task per language, so near-duplicates are found across all files of a
language. Records of languages outside the run's `languages` are set aside at reading, counted.
Output (under <run>/corpus/): filtered/, clean/<lang>/<rank>.jsonl, rejects/<lang>/<step>.<rank>.jsonl (step:
read, length, quality, langid, dedup; rejects/_unknown/ for records of no known language), summary.json.
Tasks finished before a kill are skipped on the rerun; an unfinished task is redone and overwrites its own
files, so nothing is duplicated.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from datatrove.pipeline.writers.jsonl import JsonlWriter

from xinstruct.config import CorpusConfig, ExecutorConfig
from xinstruct.core.executors import make_executor
from xinstruct.core.layout import RunLayout
from xinstruct.corpus.dedup import MinHashDedupFilter
from xinstruct.corpus.filters import LanguageFilter, LengthFilter, Normalize, QualityFilter
from xinstruct.corpus.readers import UNKNOWN_LANG, CorpusReader, LanguageShardReader, plan_tasks
from xinstruct.io.files import read_jsonl
from xinstruct.io.read import InputError, check_spec
from xinstruct.io.records import Reject


def _rejects(folder: Path, step: str) -> JsonlWriter:
    return JsonlWriter(str(RunLayout.rejects_in(folder)), output_filename=f"${{lang}}/{step}.${{rank}}.jsonl", compression=None,
                       adapter=_reject_adapter)


def _reject_adapter(self, doc) -> dict:
    reason = doc.metadata.get("filter_reason", "unknown")
    meta = doc.metadata
    return Reject(stage=reason.split(":", 1)[0], reason=reason, lang=meta["lang"], source=meta.get("source", ""),
                  where=meta.get("where", ""), id=doc.id, detail=meta.get("detail"), text=doc.text).as_dict()


def _clean_adapter(self, doc) -> dict:
    return {"id": doc.id, "text": doc.text, **doc.metadata}


def filter_pipeline(cfg: CorpusConfig, folder: Path, groups: list, languages: list[str]) -> list:
    return [
        CorpusReader(groups, str(RunLayout.rejects_in(folder)), languages, cfg.max_line_bytes),
        Normalize(),
        LengthFilter(cfg.min_chars, cfg.max_chars, exclusion_writer=_rejects(folder, "length")),
        QualityFilter(cfg.min_script_share, cfg.max_dup_line_share, cfg.min_compression_ratio,
                      cfg.max_symbol_share, exclusion_writer=_rejects(folder, "quality")),
        LanguageFilter(cfg.min_langid_prob, exclusion_writer=_rejects(folder, "langid")),
        JsonlWriter(str(RunLayout.filtered_in(folder)), output_filename="${lang}/${rank}.jsonl", compression=None,
                    adapter=_clean_adapter),
    ]


def dedup_pipeline(cfg: CorpusConfig, folder: Path, languages: list[str]) -> list:
    return [
        LanguageShardReader(str(RunLayout.filtered_in(folder)), languages),
        MinHashDedupFilter(cfg.dedup_threshold, cfg.dedup_num_perm, cfg.dedup_ngram,
                           exclusion_writer=_rejects(folder, "dedup")),
        JsonlWriter(str(RunLayout.clean_in(folder)), output_filename="${lang}/${rank}.jsonl", compression=None,
                    adapter=_clean_adapter),
    ]


DEFAULT_TASKS_PER_WORKER = 4  # enough to even out uneven files; few enough that the per-task cost stays small


def run_corpus(cfg: CorpusConfig, folder: Path, languages: list[str],
               executor: ExecutorConfig | None = None) -> dict:
    if not cfg.inputs:
        raise InputError("corpus.inputs is empty: name at least one file, folder or hf: dataset")
    executor = executor or ExecutorConfig()
    units = [unit for spec in cfg.inputs for unit in check_spec(spec)]  # a wrong path fails here, in one line
    groups = plan_tasks(units, executor.tasks or DEFAULT_TASKS_PER_WORKER * max(1, executor.workers))
    first = make_executor(filter_pipeline(cfg, folder, groups, languages), folder / "logs" / "filter", executor,
                          len(groups))
    first.run()
    make_executor(dedup_pipeline(cfg, folder, languages), folder / "logs" / "dedup", executor, len(languages),
                  depends=first).run()
    summary = summarize(folder)
    RunLayout.summary_in(folder).write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    return summary


def summarize(folder: Path) -> dict:
    """Counts per language (also languages outside the run, and _unknown): kept, and dropped per reason, read
    back from the files themselves."""
    kept: Counter = Counter()
    for path in RunLayout.clean_in(folder).glob("*/*.jsonl"):
        kept[path.parent.name] += sum(1 for _ in read_jsonl(path))
    dropped: dict[str, Counter] = {}
    for path in RunLayout.rejects_in(folder).glob("*/*.jsonl"):
        for r in read_jsonl(path):
            dropped.setdefault(r.get("lang") or UNKNOWN_LANG, Counter())[r["reason"]] += 1
    langs = sorted(set(kept) | set(dropped))
    return {lang: {"kept": kept[lang], "dropped": dict(dropped.get(lang, Counter())),
                   "read": kept[lang] + sum(dropped.get(lang, Counter()).values())} for lang in langs}
