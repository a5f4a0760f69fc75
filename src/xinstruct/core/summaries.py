"""The stage summaries as typed records: what the report, the card and the pipeline read of a stage's summary
(`summaries/<stage>.json`, and the `summary.json` of diversify/ and of each refinement round), by attribute
instead of by string key. RunLayout (core/layout.py) says where a run's files are; these records say what its
summaries hold.

A stage still writes its summary as the plain dict it returns in its StageResult; its readers read it back with
`<Record>.from_dict(d)` (or `<Record>.read(path)`). A record is a dataclass whose field types say what nests: a
field typed as a record (or a record or None), a list of records, or a dict of records is read as such; any other
field keeps the JSON value as it is (free-form counts by reason, grade or rule stay dicts).

A record is tolerant of a summary an older version wrote: a key it lacks reads as the field's default; a key the
record does not declare is kept as it is. And `to_dict()` gives back the dict it was read from, key for key and in
the same order (a key the summary lacked stays out), so reading through a record never changes what is written.

Per-language entries sit in a field `languages` (a dict of records): under a "languages" key, or, where the record
sets LANGUAGES_AT_TOP, at the top level beside the named keys (`{"sw": {...}, "rejected": 0}`). `language(code)`
gives a language's record, or an empty one (every field at its default) where the summary has none.

The records live here, below the stages, not in the stages' packages: a stage's code digest covers its whole
package folder and keys its caches of model work (generate's candidates), so a file added there would make every
existing run redo that work. Only the keys read outside the writing stage are declared; the rest ride along.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Self

from xinstruct.io.files import read_json


@dataclass
class SummaryRecord:
    LANGUAGES_AT_TOP: ClassVar[bool] = False  # language entries beside the named keys, not under "languages"

    def __post_init__(self) -> None:
        self._keys: tuple[str, ...] | None = None  # the keys of the dict it was read from, in order
        self._extra: dict = {}  # the keys it does not declare, as they were

    @classmethod
    def from_dict(cls, d: Mapping | None) -> Self:
        """The record of a summary dict (None or {}: every field at its default)."""
        d = d or {}
        kinds = _kinds(cls)
        values: dict = {}
        languages: dict = {}
        extra: dict = {}
        for key, value in d.items():
            if cls._named(key, kinds):
                values[key] = _read(kinds[key], value)
            elif cls.LANGUAGES_AT_TOP and isinstance(value, Mapping):
                languages[key] = kinds["languages"][1].from_dict(value)
            else:
                extra[key] = value
        if cls.LANGUAGES_AT_TOP:
            values["languages"] = languages
        record = cls(**values)
        record._keys = tuple(d)
        record._extra = extra
        return record

    @classmethod
    def read(cls, path: Path) -> Self:
        """The record of the summary in `path`; every field at its default where there is no such file."""
        return cls.from_dict(read_json(path, {}))

    @classmethod
    def _named(cls, key: str, kinds: Mapping) -> bool:
        """A key read into the field of its name (at the top level, every other key that holds a dict is a
        language)."""
        return key in kinds and not (cls.LANGUAGES_AT_TOP and key == "languages")

    def to_dict(self) -> dict:
        """The summary dict: the one it was read from, key for key in the same order; for a record made in code,
        its fields in the order they are declared."""
        kinds = _kinds(type(self))
        keys = self._keys if self._keys is not None else self._default_keys()
        out = {}
        for key in keys:
            if key in self._extra:
                out[key] = self._extra[key]
            elif self._named(key, kinds):
                out[key] = _plain(getattr(self, key))
            else:
                out[key] = self.languages[key].to_dict()
        return out

    def _default_keys(self) -> tuple[str, ...]:
        keys: list[str] = []
        for f in fields(self):
            keys += list(self.languages) if f.name == "languages" and self.LANGUAGES_AT_TOP else [f.name]
        return (*keys, *self._extra)

    def language(self, lang: str) -> Any:
        """This language's record; an empty one (every field at its default) where the summary has none."""
        found = self.languages.get(lang)
        return found if found is not None else _kinds(type(self))["languages"][1]()


@functools.cache
def _kinds(cls: type[SummaryRecord]) -> dict[str, tuple[str, type | None]]:
    """Per field: ("one" | "list" | "dict", the record it holds), or ("plain", None), from the field's type."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in fields(cls):
        hint = hints[f.name]
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):  # X | None
            hint = next((a for a in args if a is not type(None)), hint)
            origin, args = typing.get_origin(hint), typing.get_args(hint)
        if _is_record(hint):
            out[f.name] = ("one", hint)
        elif origin is list and args and _is_record(args[0]):
            out[f.name] = ("list", args[0])
        elif origin is dict and len(args) == 2 and _is_record(args[1]):
            out[f.name] = ("dict", args[1])
        else:
            out[f.name] = ("plain", None)
    return out


def _is_record(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, SummaryRecord)


def _read(kind: tuple[str, type | None], value: Any) -> Any:
    how, record = kind
    if value is None or record is None:
        return value
    if how == "one":
        return record.from_dict(value)
    if how == "list":
        return [record.from_dict(v) for v in value]
    return {k: record.from_dict(v) for k, v in value.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, SummaryRecord):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# -- corpus: summaries/corpus.json, per language (also languages outside the run, and _unknown) ------------------------

@dataclass
class CorpusLanguage(SummaryRecord):
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # reason (`length:too_short`) → documents: free-form
    read: int = 0

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())


@dataclass
class CorpusSummary(SummaryRecord):
    LANGUAGES_AT_TOP = True
    languages: dict[str, CorpusLanguage] = field(default_factory=dict)


# -- seed: summaries/seed.json, seed pairs per language and the records rejected ---------------------------------------

@dataclass
class SeedLanguage(SummaryRecord):
    train: int = 0
    heldout: int = 0

    @property
    def pairs(self) -> int:
        return self.train + self.heldout


@dataclass
class SeedSummary(SummaryRecord):
    LANGUAGES_AT_TOP = True
    languages: dict[str, SeedLanguage] = field(default_factory=dict)
    rejected: int = 0


# -- generate: summaries/generate.json, per language, and how the generator learned the task ---------------------------

@dataclass
class GenerateLanguage(SummaryRecord):
    documents: int = 0
    candidates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)  # reason → candidates: free-form
    unresolved: dict[str, int] = field(default_factory=dict)  # reason → records to retry
    this_run: dict = field(default_factory=dict)  # this run's own counts and seconds: free-form

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())


@dataclass
class GenerateSummary(SummaryRecord):
    LANGUAGES_AT_TOP = True
    languages: dict[str, GenerateLanguage] = field(default_factory=dict)
    generator_setup: str | None = None  # in words: tuned on the seeds, the bundled adapter, few-shot


# -- refine: summaries/refine.json (the rounds in brief) and refine/iter-<t>/summary.json (a round) --------------------

# Left as dicts: the held-out figures (per language and "mean": AUCs, accuracy, calibration, confusion), read
# outside refine only through RoundSummary.heldout_aucs() and refine.loop.weak_languages; and the counts by grade,
# error, reason and rule.

@dataclass
class KeepDerivation(SummaryRecord):
    """How a fitted grader's keep threshold was derived on its rating set (loaded graders: where from)."""
    min_best_prob: float | None = None
    drop_target: float | None = None  # the share of mismatched seed pairs it drops
    out_of_fold: bool = False
    folds: int | None = None
    mismatched: int | None = None
    mismatched_dropped: float | None = None
    true_kept: float | None = None
    loaded_from: str | None = None


@dataclass
class KeepThreshold(SummaryRecord):
    """A round's keep rule: P(best) at least `min_best_prob`, from `source` (derived | grader | fallback |
    refine.min_best_prob); per-language overrides in `languages`."""
    min_best_prob: float | None = None
    source: str | None = None
    derivation: KeepDerivation = field(default_factory=KeepDerivation)
    languages: dict[str, float] = field(default_factory=dict)


@dataclass
class RoundLanguage(SummaryRecord):
    """One language in a round. The stage's summary repeats only grades, kept, errors and documents_with_kept."""
    candidates: int = 0
    documents: int = 0
    labelled: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # error → candidates
    grades: dict[str, int] = field(default_factory=dict)  # grade (best, flawed, worst) → candidates
    kept: int = 0
    documents_with_kept: int = 0
    kept_by: dict[str, int] = field(default_factory=dict)  # rule → pairs
    dropped: dict[str, int] = field(default_factory=dict)  # reason → pairs
    vs_previous: dict = field(default_factory=dict)  # agreement with the round before: free-form

    def graded(self, grade: str) -> int:
        return self.grades.get(grade, 0)


@dataclass
class RoundSummary(SummaryRecord):
    """refine/iter-<t>/summary.json."""
    iteration: int | None = None
    evaluator: str | None = None
    languages: dict[str, RoundLanguage] = field(default_factory=dict)
    heldout: dict[str, dict] = field(default_factory=dict)  # language and "mean" → the grader's figures
    keep: KeepThreshold | None = None
    accepted: bool = True
    decision: str | None = None
    seconds: float | None = None
    kept_files: str | None = None

    @property
    def keep_rule(self) -> KeepThreshold | None:
        """The keep threshold the round recorded; None where it recorded none."""
        return self.keep if self.keep is not None and self.keep.min_best_prob is not None else None

    def heldout_aucs(self) -> dict[str, float]:
        """Per language, how well the grader told a true held-out seed pair from a mismatched one (ROC-AUC)."""
        return {lang: q["auc_true_vs_mismatched"] for lang, q in self.heldout.items() if lang != "mean"}


@dataclass
class RoundDigest(SummaryRecord):
    """A round as the stage's summary lists it: its languages' entries beside the named keys."""
    LANGUAGES_AT_TOP = True
    iteration: int | None = None
    evaluator: str | None = None
    accepted: bool = True
    heldout: dict[str, dict] = field(default_factory=dict)
    keep: KeepThreshold | None = None
    decision: str | None = None
    languages: dict[str, RoundLanguage] = field(default_factory=dict)


@dataclass
class RefineSummary(SummaryRecord):
    """summaries/refine.json."""
    iterations: list[RoundDigest] = field(default_factory=list)
    final_round: int | None = None  # the round whose grades stand
    final: dict[str, int] = field(default_factory=dict)  # language → pairs kept
    unresolved: dict[str, int] = field(default_factory=dict)  # language → records to retry

    @property
    def decisions(self) -> list[str]:
        return [r.decision for r in self.iterations if r.decision]


# -- diversify: diversify/summary.json (also summaries/diversify.json) -------------------------------------------------

@dataclass
class Decontamination(SummaryRecord):
    sources: list[str] = field(default_factory=list)  # the question sets
    questions: int = 0
    ngram: int | None = None


@dataclass
class DiversityFigures(SummaryRecord):
    """The selection's cluster-coverage entropy (share of its maximum) and mean pairwise cosine distance, and
    those of `random_draws` random subsets of the same size from the same pool (mean and sd)."""
    pool: int = 0
    selected: int = 0
    clusters: int = 0
    entropy_fraction: float = 0.0
    random_entropy_fraction: float = 0.0
    random_entropy_fraction_sd: float = 0.0
    mean_cosine_distance: float = 0.0
    random_mean_cosine_distance: float = 0.0
    random_mean_cosine_distance_sd: float = 0.0
    random_draws: int = 0


@dataclass
class LanguageSelection(SummaryRecord):
    refined: int | None = None  # None: not recorded (the report falls back on refinement's kept count)
    dropped: dict[str, int] | None = None  # reason → pairs set aside before drawing; None: not recorded
    pool: int = 0
    target: int | None = None
    selected: int = 0
    clusters: int | None = None  # k; None: not recorded
    cluster_sizes: list[int] = field(default_factory=list)
    selected_per_cluster: list[int] = field(default_factory=list)
    embedded_this_run: int = 0
    diversity: DiversityFigures = field(default_factory=DiversityFigures)
    seconds: dict[str, float] = field(default_factory=dict)  # step → seconds


@dataclass
class DiversifySummary(SummaryRecord):
    embedder: str | None = None
    decontaminated_against: Decontamination | None = None
    languages: dict[str, LanguageSelection] = field(default_factory=dict)
