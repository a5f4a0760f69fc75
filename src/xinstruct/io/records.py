"""The records that flow between stages, one field name per meaning: `output` is the target-language text,
`instruction` the English instruction, `lang` the ISO 639-1 code, `text` a document's text, `id` the record id.

Plain dataclasses rather than TypedDicts: a reader yields records and rejects in one stream, and `isinstance`
tells them apart; a missing or misspelt field fails where the record is made, not three stages later; and
`as_dict()` gives the JSONL row, so stages that still pass dicts adopt them one at a time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


class _Row:
    __slots__ = ()

    def as_dict(self) -> dict:
        """The JSONL row; optional fields (default None) left at None are not written, required ones always are."""
        optional = {f.name for f in fields(self) if f.default is None}
        return {k: v for k, v in asdict(self).items() if v is not None or k not in optional}


@dataclass(slots=True)
class Document(_Row):
    """A target-language document: the corpus stage's unit, and later the `output` of its pairs."""

    id: str
    lang: str
    text: str
    source: str  # the file (or hf: source) it was read from
    where: str = ""  # its place there: "line 12", "row 3", "item 4", "file"


@dataclass(slots=True)
class SeedPair(_Row):
    """A human (English instruction, target-language output) pair that trains the generator and the evaluator."""

    id: str
    lang: str
    instruction: str
    output: str
    source: str
    split: str = "train"  # "train" | "heldout"


@dataclass(slots=True)
class Candidate(_Row):
    """Stage I: an English instruction the generator wrote for a document (the document is its `output`)."""

    id: str
    lang: str
    instruction: str
    output: str
    doc_id: str
    source: str
    generator: str
    candidate_index: int = 0
    sampling: dict | None = None


@dataclass(slots=True)
class Grade(_Row):
    """Stage II: an evaluator's grade for a candidate (`id` is the candidate's)."""

    id: str
    lang: str
    grade: str  # "best" | "flawed" | "worst"
    evaluator: str
    iteration: int = 0
    probs: dict[str, float] | None = None  # None where the backend gives no log-probabilities
    rationale: str | None = None  # a judge's stated reason (not a reject `reason`)


@dataclass(slots=True)
class DatasetRow(_Row):
    """One row of the exported dataset."""

    id: str
    lang: str
    language: str  # the English name, as in "Answer in Swahili."
    instruction: str  # with the "Answer in {Language}." suffix
    output: str
    english_instruction: str
    source: str | None = None
    source_doc_id: str | None = None
    grade: str | None = None
    p_best: float | None = None
    iteration: int | None = None
    cluster: int | None = None
    draw_rank: int | None = None
    generator: str | None = None
    evaluator: str | None = None
    messages: list[dict] | None = None  # the AI-assistant variant


@dataclass(slots=True)
class Reject(_Row):
    """A record set aside, with why. `reason` is "<stage>:<what>"; the numbers behind it go in `detail`."""

    stage: str
    reason: str
    lang: str | None  # the declared language where the spec, the folder or the record names one
    source: str
    where: str
    id: str | None = None
    detail: dict | None = None  # e.g. {"score": 0.12, "threshold": 0.25}
    raw: str | None = None  # what could not be parsed (truncated), for records that never became one
    text: str | None = None  # a document set aside after it was read: its text
