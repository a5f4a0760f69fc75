"""Every path of a run folder, in one place: stages ask the layout, they never build paths themselves.

<run>/
  config.json  manifest.json
  stages/<stage>.json            what each stage was made from (fingerprint) and what it wrote
  summaries/<stage>.json         each stage's counts
  corpus/   clean/<lang>/*.jsonl  rejects/  filtered/  logs/  summary.json  fingerprint
  seed/     pairs.jsonl  rejects.jsonl
  generator/  adapter/  generator-lora.gguf  train_summary.json
  candidates/ <lang>.candidates.jsonl  <lang>.rejects.jsonl  cache/ (journals of model work)
  refine/   cache/  iter-<t>/  final/<lang>.jsonl  final/<lang>.dropped.jsonl
    iter-<t>/  labels/<lang>.{labels,errors}.jsonl  kept/<lang>.jsonl  dropped/<lang>.jsonl  summary.json
               evaluator/ (a trained grader)  generator/ candidates/ cache/ (a round that regenerated)
  diversify/ <lang>.{pool,selected,dropped}.jsonl  work/  embeddings/<lang>/  cache/  summary.json
  dataset/  jsonl/<split>.jsonl  parquet/<split>.parquet  hf/  README.md   (split: a language, or all)
  report/   index.html
  tune/     (xinstruct tune: TuneLayout)   evaluate/ (xinstruct evaluate: EvaluateLayout)
  compare/  tune-seed/ tune-xinstruct/ (TuneLayout)  evaluate/ (EvaluateLayout)

Functions that work inside one stage folder they are handed (a refinement round's candidates, a test's folder)
name its files with the static methods (`candidates_in(folder, lang)`, `task_cache(folder, name)`...); the
stages use the properties of their run's layout.
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

    @property
    def stamps(self) -> Path:
        return self.root / "stages"

    def stamp(self, stage: str) -> Path:
        return self.stamps / f"{stage}.json"

    def summary(self, stage: str) -> Path:
        return self.root / "summaries" / f"{stage}.json"

    # a stage folder's task journals (io/cache.py), beside its outputs
    @staticmethod
    def cache(folder: Path) -> Path:
        """Where a stage keeps the journals of its model work, beside its outputs."""
        return Path(folder) / "cache"

    @staticmethod
    def task_cache(folder: Path, name: str) -> Path:
        """One task's journal (name: the task's, or `ratings` for the rating set's evidence)."""
        return RunLayout.cache(folder) / f"{name}.sqlite"

    @staticmethod
    def summary_in(folder: Path) -> Path:
        """A stage's (or a refinement round's) own summary.json, in its folder."""
        return Path(folder) / "summary.json"

    # corpus
    @property
    def corpus(self) -> Path:
        return self.root / "corpus"

    @staticmethod
    def clean_in(folder: Path) -> Path:
        return Path(folder) / "clean"

    @staticmethod
    def rejects_in(folder: Path) -> Path:
        return Path(folder) / "rejects"

    @staticmethod
    def filtered_in(folder: Path) -> Path:
        return Path(folder) / "filtered"

    @property
    def clean(self) -> Path:
        return self.clean_in(self.corpus)

    @property
    def corpus_rejects(self) -> Path:
        return self.rejects_in(self.corpus)

    @property
    def corpus_stamp(self) -> Path:
        """The corpus work fingerprint: datatrove's completion markers hold only for the same settings."""
        return self.corpus / "fingerprint"

    def clean_dir(self, lang: str) -> Path:
        return self.clean / lang

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

    @property
    def generator_peft(self) -> Path:
        """The PEFT adapter the GGUF adapter is exported from."""
        return self.generator / "adapter"

    # candidates
    @property
    def candidates(self) -> Path:
        return self.root / "candidates"

    @staticmethod
    def candidates_in(folder: Path, lang: str) -> Path:
        return Path(folder) / f"{lang}.candidates.jsonl"

    @staticmethod
    def candidate_rejects_in(folder: Path, lang: str) -> Path:
        return Path(folder) / f"{lang}.rejects.jsonl"

    def candidates_file(self, lang: str, folder: Path | None = None) -> Path:
        return self.candidates_in(folder or self.candidates, lang)

    def candidate_rejects_file(self, lang: str, folder: Path | None = None) -> Path:
        return self.candidate_rejects_in(folder or self.candidates, lang)

    # refine
    @property
    def refine(self) -> Path:
        return self.root / "refine"

    def round_dir(self, t: int) -> Path:
        return self.refine / f"iter-{t}"

    def round_summaries(self) -> list[Path]:
        """The summary.json of every refinement round on disk, in round order."""
        return sorted(self.refine.glob("iter-*/summary.json"), key=lambda p: int(p.parent.name.split("-")[1]))

    def round_layout(self, t: int) -> RunLayout:
        """A round that retrains the generator lays out its generator and candidates as a run does."""
        return RunLayout(self.round_dir(t))

    def regenerated(self, t: int) -> Path:
        """Written when round t's regenerated candidates and their evidence are complete."""
        return self.round_layout(t).candidates / "done.json"

    def round_evaluator(self, t: int) -> Path:
        """The grader trained in round t (refine.evaluator.kind: trained)."""
        return self.round_dir(t) / "evaluator"

    def round_kept(self, t: int) -> Path:
        return self.round_dir(t) / "kept"

    @staticmethod
    def kept_in(folder: Path, lang: str) -> Path:
        """A language's kept pairs in a round's kept/ folder (or in final/, which holds the last kept round's)."""
        return Path(folder) / f"{lang}.jsonl"

    def kept_file(self, t: int, lang: str) -> Path:
        return self.kept_in(self.round_kept(t), lang)

    def round_dropped_file(self, t: int, lang: str) -> Path:
        return self.round_dir(t) / "dropped" / f"{lang}.jsonl"

    def labels_file(self, t: int, lang: str) -> Path:
        return self.round_dir(t) / "labels" / f"{lang}.labels.jsonl"

    def label_errors_file(self, t: int, lang: str) -> Path:
        return self.round_dir(t) / "labels" / f"{lang}.errors.jsonl"

    @property
    def refined(self) -> Path:
        """The pairs of the last kept round, for Stage III."""
        return self.refine / "final"

    def refined_file(self, lang: str) -> Path:
        return self.refined / f"{lang}.jsonl"

    def refined_dropped_file(self, lang: str) -> Path:
        return self.refined / f"{lang}.dropped.jsonl"

    # diversify, export
    @property
    def diversify(self) -> Path:
        return self.root / "diversify"

    @staticmethod
    def pool_in(folder: Path, lang: str) -> Path:
        return Path(folder) / f"{lang}.pool.jsonl"

    @staticmethod
    def selected_in(folder: Path, lang: str) -> Path:
        return Path(folder) / f"{lang}.selected.jsonl"

    @staticmethod
    def dropped_in(folder: Path, lang: str) -> Path:
        return Path(folder) / f"{lang}.dropped.jsonl"

    @staticmethod
    def embeddings_in(folder: Path, lang: str) -> Path:
        return Path(folder) / "embeddings" / lang

    @staticmethod
    def pool_work_in(folder: Path, lang: str) -> Path:
        """The pool the embedding tasks read, until the language is finished."""
        return Path(folder) / "work" / f"{lang}.pool.jsonl"

    def pool_file(self, lang: str) -> Path:
        return self.pool_in(self.diversify, lang)

    def selected_file(self, lang: str) -> Path:
        return self.selected_in(self.diversify, lang)

    def embeddings(self, lang: str) -> Path:
        return self.embeddings_in(self.diversify, lang)

    @property
    def diversify_summary(self) -> Path:
        return self.summary_in(self.diversify)

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @staticmethod
    def dataset_card_in(folder: Path) -> Path:
        return Path(folder) / "README.md"

    @property
    def dataset_card(self) -> Path:
        return self.dataset_card_in(self.dataset)

    @staticmethod
    def dataset_format_in(folder: Path, fmt: str) -> Path:
        """An exported dataset folder's files of one format: jsonl/, parquet/, hf/."""
        return Path(folder) / fmt

    @staticmethod
    def dataset_split_in(folder: Path, fmt: str, split: str) -> Path:
        """One split (a language, or `all`) of an exported dataset folder, as JSONL or Parquet."""
        return RunLayout.dataset_format_in(folder, fmt) / f"{split}.{fmt}"

    @property
    def dataset_all(self) -> Path:
        """The exported JSONL of every language (what `xinstruct tune RUN` trains on)."""
        return self.dataset_split_in(self.dataset, "jsonl", "all")

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def report_page(self) -> Path:
        return self.report / "index.html"

    # using the data: `xinstruct tune`, `xinstruct evaluate`, `xinstruct compare` (their folders by default)
    @property
    def tune(self) -> Path:
        return self.root / "tune"

    @property
    def evaluate(self) -> Path:
        return self.root / "evaluate"

    @property
    def compare(self) -> CompareLayout:
        return CompareLayout(self.root / "compare")


@dataclass(frozen=True)
class TuneLayout:
    """A `xinstruct tune` folder: <model>/ per tuned model (a language's, or `all`), each holding tuned.json (its
    descriptor), the adapter and, for a GGUF base, a Modelfile; rejects.jsonl: the records set aside."""

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def rejects(self) -> Path:
        return self.root / "rejects.jsonl"

    def model(self, name: str) -> Path:
        return self.root / name

    @staticmethod
    def descriptor_in(model_dir: Path) -> Path:
        return Path(model_dir) / "tuned.json"

    @staticmethod
    def modelfile_in(model_dir: Path) -> Path:
        return Path(model_dir) / "Modelfile"


@dataclass(frozen=True)
class EvaluateLayout:
    """A `xinstruct evaluate` folder:
      answers/<system>.answers.jsonl  answers/cache/<task>.sqlite
      judgements/judgements.jsonl  judgements/cache/   grades/grades.jsonl  grades/cache/
      tasks/ logs/ (the tasks' progress and executor logs)   summary.json  leaderboard.csv  report/index.html
      fastchat/<set>-<lang>/ question.jsonl  model_answer/<system>.jsonl  model_judgment/<judge>_{single,pair}.jsonl
    """

    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def answers(self) -> Path:
        return self.root / "answers"

    def answers_file(self, system_file: str) -> Path:
        return self.answers / f"{system_file}.answers.jsonl"

    def answer_cache(self, task: str) -> Path:
        return RunLayout.task_cache(self.answers, task)

    @property
    def judgements(self) -> Path:
        return self.root / "judgements"

    @property
    def judgements_file(self) -> Path:
        return self.judgements / "judgements.jsonl"

    def judge_cache(self, task: str) -> Path:
        return RunLayout.task_cache(self.judgements, task)

    @property
    def grades(self) -> Path:
        return self.root / "grades"

    @property
    def grades_file(self) -> Path:
        return self.grades / "grades.jsonl"

    def grade_cache(self, task: str) -> Path:
        return RunLayout.task_cache(self.grades, task)

    @property
    def summary(self) -> Path:
        return RunLayout.summary_in(self.root)

    @property
    def leaderboard(self) -> Path:
        return self.root / "leaderboard.csv"

    @property
    def report(self) -> Path:
        return self.root / "report"

    def bench(self, set_name: str, lang: str) -> Path:
        """A FastChat bench folder (one question set in one language)."""
        return self.root / "fastchat" / f"{set_name}-{lang}"

    @staticmethod
    def bench_questions(bench: Path) -> Path:
        return Path(bench) / "question.jsonl"

    @staticmethod
    def bench_answers(bench: Path, system: str) -> Path:
        return Path(bench) / "model_answer" / f"{system}.jsonl"

    @staticmethod
    def bench_judgments(bench: Path, judge: str, mode: str) -> Path:
        """mode: single or pair."""
        return Path(bench) / "model_judgment" / f"{judge}_{mode}.jsonl"


@dataclass(frozen=True)
class CompareLayout:
    """<run>/compare/: the baselines tuned (tune-seed/, tune-xinstruct/) and their evaluation (evaluate/)."""

    root: Path

    @property
    def tune_seed(self) -> Path:
        return self.root / "tune-seed"

    @property
    def tune_xinstruct(self) -> Path:
        return self.root / "tune-xinstruct"

    @property
    def evaluate(self) -> Path:
        return self.root / "evaluate"
