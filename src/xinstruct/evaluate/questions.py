"""Question sets: MT-Bench/FastChat JSONL (`question_id`, `category`, `turns`, optional `reference` and `lang`), from
a file or the HF hub, and the bundled questions written in each target language (the quick zero-shot check).

A question is asked in English (the paper's cross-lingual setting: every turn gets "Answer in {Language}.") unless
its record has a `lang` other than "en", or its set is declared to be written in a language (`evaluate.question_lang`,
`--question-lang`): then it is asked as written, in that language only."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from xinstruct.io.questions import question_texts, read_question_records
from xinstruct.io.read import parse_hf

ENGLISH, TARGET, NATIVE = "english", "target", "native"  # how a question is asked (see Asked)


@dataclass(frozen=True)
class Question:
    set: str  # e.g. "mt_bench_question" or "native"
    id: str
    turns: tuple[str, ...]  # the user's messages, in order (Vicuna: one, MT-Bench: two)
    category: str = ""
    lang: str = "en"  # the language the turns are written in
    reference: tuple[str, ...] = ()  # reference answers per turn, where the set has them (math, reasoning, coding)

    @property
    def text(self) -> str:
        """The first turn."""
        return self.turns[0]


@dataclass(frozen=True)
class Asked:
    """A question as one evaluation language asks it: `group` english (+ "Answer in X." on every turn), target (a
    set written in the language) or native (the bundled quick check); `judged` says whether the judge sees it."""

    question: Question
    group: str

    @property
    def suffix(self) -> bool:
        return self.group == ENGLISH

    @property
    def judged(self) -> bool:
        return self.group != NATIVE


def question_from_record(record: dict, set_name: str, index: int, lang: str | None = None) -> Question | None:
    """Every turn of the record, or None when it holds no question. `lang`: the set's language where the record
    does not name one."""
    texts = [t.strip() for t in question_texts(record)]
    if not texts or not all(texts):
        return None
    qid = next((record[k] for k in ("question_id", "prompt_id", "id") if record.get(k) is not None), index)
    reference = record.get("reference") or ()
    if isinstance(reference, str):
        reference = (reference,)
    return Question(set_name, str(qid), tuple(texts), str(record.get("category", "")),
                    str(record.get("lang") or lang or "en"), tuple(str(r) for r in reference))


def load_question_set(source: str, limit: int | None = None, lang: str | None = None) -> list[Question]:
    """Questions of a file or an hf: source (see read_question_records); a record without a question (or with an
    empty turn) is an error."""
    set_name = parse_hf(source).dataset.split("/")[-1] if source.startswith("hf:") else Path(source).stem
    questions = []
    for i, record in enumerate(read_question_records(source)):
        q = question_from_record(record, set_name, i, lang)
        if q is None:
            raise ValueError(f"{source}: record {i + 1} has no question (expected `turns` or `question`, "
                             "every turn non-empty)")
        questions.append(q)
    return spread(questions, limit)


def spread(items: list, limit: int | None) -> list:
    """`limit` items spaced evenly over the list: Vicuna and MT-Bench are ordered by category, so the first N
    would all be of one or two categories."""
    if not limit or limit >= len(items):
        return items
    return [items[i * len(items) // limit] for i in range(limit)]


def native_questions(lang: str) -> list[Question]:
    """The bundled hand-written questions in `lang` (8 per language for the paper's 10 languages)."""
    path = resources.files(__package__).joinpath("data", "native_questions.jsonl")
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        record = json.loads(line)
        if record["lang"] == lang:
            out.append(question_from_record(record, "native", i))
    return out


def asked_in(lang: str, questions: list[Question], bundled: bool, max_turns: int | None = None) -> list[Asked]:
    """What one evaluation language asks: the English questions, then the sets written in `lang`, then (`bundled`)
    the bundled native questions; each cut to `max_turns` turns. Sets written in another language are not asked."""
    def cut(q: Question) -> Question:
        if not max_turns or len(q.turns) <= max_turns:
            return q
        return Question(q.set, q.id, q.turns[:max_turns], q.category, q.lang, q.reference[:max_turns])

    out = [Asked(cut(q), ENGLISH) for q in questions if q.lang == "en"]
    out += [Asked(cut(q), TARGET) for q in questions if q.lang == lang and lang != "en"]
    out += [Asked(cut(q), NATIVE) for q in (native_questions(lang) if bundled else [])]
    return out
