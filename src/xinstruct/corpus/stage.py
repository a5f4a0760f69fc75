"""The corpus stage (I.a) in the run: raw inputs → cleaned documents per language, every drop with a reason."""

from __future__ import annotations

import glob
import shutil
from pathlib import Path

from xinstruct.core.executors import executor_session
from xinstruct.core.fingerprint import digest
from xinstruct.core.stage import Stage, StageResult
from xinstruct.io.read import InputError, check_spec


def input_identity(path: str) -> object:
    """Size and mtime of an input file (or of every file of a folder or glob): cheap for big corpora, and any
    edit changes it. hf: datasets are named, not hashed."""
    if path.startswith(("hf:", "bundled:")):
        return path
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [Path(f) for f in sorted(glob.glob(path))]
    return [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files] or f"missing: {path}"


def spec_problems(specs) -> list[str]:
    """The first mistake of each input spec (missing file, text without a language, unknown language)."""
    problems = []
    for spec in specs:
        try:
            check_spec(spec)
        except InputError as e:
            problems.append(str(e))
    return problems


def missing(path: str) -> str | None:
    """`path` (a file, folder or glob) if nothing is there; hf: datasets are only checked when read."""
    if path.startswith(("hf:", "bundled:")):
        return None
    if any(ch in path for ch in "*?[") and glob.glob(path):
        return None
    return None if Path(path).exists() else path


class CorpusStage(Stage):
    name = "corpus"
    title = "read, NFC-normalise, filter (length, repetition, script, language ID) and near-dedup raw text"
    config = ("languages", "corpus")
    code = ("corpus", "languages.py", "io")
    uses_limit = True

    def inputs(self) -> dict:
        return {"files": digest([input_identity(spec.path) for spec in self.cfg.corpus.inputs])}

    def outputs(self) -> list[Path]:
        return [self.layout.clean]

    def check(self) -> list[str]:
        if not self.cfg.corpus.inputs:
            return ["corpus.inputs is empty: name at least one file, folder or hf: dataset"]
        return [f"corpus input: {p}" for p in spec_problems(self.cfg.corpus.inputs)]

    def clear(self) -> None:
        shutil.rmtree(self.layout.corpus, ignore_errors=True)

    def run(self) -> StageResult:
        from xinstruct.corpus.pipeline import run_corpus

        folder = self.layout.corpus
        stamp = self.layout.corpus_stamp
        # datatrove skips tasks it finished before a kill; that is only right for the same settings
        if folder.exists() and (not stamp.exists() or stamp.read_text() != self.work_fingerprint):
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        stamp.write_text(self.work_fingerprint)
        cfg = self.cfg.corpus
        if self.ctx.limit:  # a trial run: at most N records from each input
            cfg = cfg.model_copy(update={"inputs": [s.model_copy(update={"limit": min(s.limit or self.ctx.limit,
                                                                                      self.ctx.limit)})
                                                    for s in cfg.inputs]})
        with executor_session(self.cfg.executor):
            summary = run_corpus(cfg, folder, self.cfg.languages, self.cfg.executor)
        for lang in self.cfg.languages:  # a language whose every document was dropped still has a (empty) folder
            self.layout.clean_dir(lang).mkdir(parents=True, exist_ok=True)
        return StageResult(summary)
