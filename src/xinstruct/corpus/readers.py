"""The corpus stage's datatrove readers: input units (files, hf: sources) grouped into tasks, and the filtered
files of one language for the dedup task.

Parsing is io.read's (one reader for every stage); here documents become datatrove Documents and every record
that is not one is written to rejects/<lang>/read.<rank>.jsonl (rejects/_unknown/ where no language is known).
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep

from xinstruct.io.files import dumps, read_jsonl
from xinstruct.io.read import MAX_BYTES, Unit, iter_documents
from xinstruct.io.records import Reject

UNKNOWN_LANG = "_unknown"  # the rejects folder for records whose language is not known


def plan_tasks(units: list[Unit], max_tasks: int) -> list[list[Unit]]:
    """Consecutive units in at most `max_tasks` groups of about equal bytes, input order kept.

    Each datatrove task pays a fixed cost (logs, stats, a language-ID model), so a thousand small files as a
    thousand tasks cost far more than the reading; grouping by bytes keeps tasks even when file sizes are not.
    A unit goes to the group in which its middle byte falls; an hf: source, whose size is unknown, weighs as
    much as one task's share of the files.
    """
    if not units:
        return []
    n = max(1, min(max_tasks, len(units)))
    file_bytes = sum(max(1, u.size) for u in units if u.format != "hf")
    n_hf = sum(1 for u in units if u.format == "hf")
    hf_weight = file_bytes / max(1, n - n_hf) if file_bytes else 1
    weights = [hf_weight if u.format == "hf" else max(1, u.size) for u in units]
    total = sum(weights)
    groups: dict[int, list[Unit]] = {}
    done = 0.0
    for unit, weight in zip(units, weights):
        groups.setdefault(min(n - 1, int((done + weight / 2) * n / total)), []).append(unit)
        done += weight
    return [groups[g] for g in sorted(groups)]


class CorpusReader(PipelineStep):
    """Reads the units of task `rank`; records that are not documents of the run's languages go to rejects."""

    name = "📖 xinstruct reader"
    type = "📖 - READER"

    def __init__(self, groups: list[list[Unit]], rejects_dir: str, languages: list[str],
                 max_bytes: int = MAX_BYTES):
        super().__init__()
        self.groups, self.rejects_dir, self.languages, self.max_bytes = groups, rejects_dir, languages, max_bytes

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if data:
            yield from data
        with ExitStack() as stack:
            files: dict = {}  # one rejects file per language, opened at its first reject

            def reject_file(lang: str):
                if lang not in files:
                    os.makedirs(os.path.join(self.rejects_dir, lang), exist_ok=True)
                    path = os.path.join(self.rejects_dir, lang, f"read.{rank:05d}.jsonl")
                    files[lang] = stack.enter_context(open(path, "w", encoding="utf-8"))
                return files[lang]

            for unit in self.groups[rank] if rank < len(self.groups) else []:
                for item in iter_documents(unit, self.languages, self.max_bytes):
                    if isinstance(item, Reject):
                        self.stat_update(f"dropped_{item.reason}")
                        reject_file(item.lang or UNKNOWN_LANG).write(dumps(item.as_dict()))
                        continue
                    self.stat_update("documents")
                    yield Document(text=item.text, id=item.id,
                                   metadata={"lang": item.lang, "source": item.source, "where": item.where})


class LanguageShardReader(PipelineStep):
    """Task `rank` reads every filtered file of `languages[rank]`: one task sees a whole language."""

    name = "📖 language shard"
    type = "📖 - READER"

    def __init__(self, folder: str, languages: list[str]):
        super().__init__()
        self.folder, self.languages = folder, languages

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        for path in sorted(Path(self.folder, self.languages[rank]).glob("*.jsonl")):
            for record in read_jsonl(path):
                text, doc_id = record.pop("text"), record.pop("id")
                self.stat_update("documents")
                yield Document(text=text, id=doc_id, metadata=record)
