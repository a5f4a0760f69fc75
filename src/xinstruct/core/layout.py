"""Every path of a run folder, in one place: stages ask the layout, they never build paths themselves.

<run>/
  config.json  manifest.json
  stages/<stage>.json            what each stage was made from (fingerprint) and what it wrote
  summaries/<stage>.json         each stage's counts
  corpus/   clean/<lang>/*.jsonl  rejects/  filtered/  logs/
  seed/     pairs.jsonl  rejects.jsonl
  generator/  adapter/  generator-lora.gguf  train_summary.json
  candidates/ <lang>.candidates.jsonl  <lang>.rejects.jsonl  cache/ (journals of model work)
  refine/   iter-<t>/  final/<lang>.jsonl
  diversify/ <lang>.{pool,selected,dropped}.jsonl  embeddings/  summary.json
  dataset/  jsonl/ parquet/ hf/ README.md
  report/   index.html
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    # run-level
    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    def stamp(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.json"

    def summary(self, stage: str) -> Path:
        return self.root / "summaries" / f"{stage}.json"

    # corpus
    @property
    def corpus(self) -> Path:
        return self.root / "corpus"

    def clean_dir(self, lang: str) -> Path:
        return self.corpus / "clean" / lang

    def clean_files(self, lang: str) -> list[Path]:
        return sorted(self.clean_dir(lang).glob("*.jsonl"))

    # seed
    @property
    def seed(self) -> Path:
        return self.root / "seed"

    @property
    def seed_pairs(self) -> Path:
        return self.seed / "pairs.jsonl"

    @property
    def seed_rejects(self) -> Path:
        return self.seed / "rejects.jsonl"

    # generator
    @property
    def generator(self) -> Path:
        return self.root / "generator"

    @property
    def generator_adapter(self) -> Path:
        return self.generator / "generator-lora.gguf"

    # candidates
    @property
    def candidates(self) -> Path:
        return self.root / "candidates"

    def candidates_file(self, lang: str, folder: Path | None = None) -> Path:
        return (folder or self.candidates) / f"{lang}.candidates.jsonl"

    def candidate_rejects_file(self, lang: str, folder: Path | None = None) -> Path:
        return (folder or self.candidates) / f"{lang}.rejects.jsonl"

    # refine
    @property
    def refine(self) -> Path:
        return self.root / "refine"

    def round_dir(self, t: int) -> Path:
        return self.refine / f"iter-{t}"

    def refined_file(self, lang: str) -> Path:
        return self.refine / "final" / f"{lang}.jsonl"

    # diversify, export
    @property
    def diversify(self) -> Path:
        return self.root / "diversify"

    def pool_file(self, lang: str) -> Path:
        return self.diversify / f"{lang}.pool.jsonl"

    def selected_file(self, lang: str) -> Path:
        return self.diversify / f"{lang}.selected.jsonl"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @staticmethod
    def cache(folder: Path) -> Path:
        """Where a stage keeps the journals of its model work, beside its outputs."""
        return folder / "cache"
