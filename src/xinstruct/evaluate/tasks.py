"""Answering and judging as sharded tasks (core/tasks.py), run in this process or on the `executor` section's
datatrove executor, like the model stages of `xinstruct run`.

- answers: one task per (system, language, turn, shard of a stable hash of the question's set and id); turn t is
  asked once every turn before it is answered, with the conversation so far;
- pairwise judgements: one per (focus vs other system, language, turn, shard of the question and the order);
- single-answer grades: one per (system, language, turn, shard of the question).

Each task keeps what the model said in its own cache (<out>/answers/cache/<task>.sqlite,
<out>/judgements/cache/<task>.sqlite, <out>/grades/cache/<task>.sqlite), keyed by a hash of the model, the prompt and
the sampling settings (`call_key`), committed a batch at a time: a killed task resumes alone, a rerun asks only what
no cache holds (a cache written under another number of shards included), and an answer that failed with a server
error is asked again. A judge output that does not parse is kept as a failure (the judge runs at temperature 0).
The first turn's tasks keep the names and keys they had when the harness asked one turn, so earlier caches count.

The answers and judgements of this evaluation are then read back from the caches in question order, so the
summary and the report do not depend on how the work was split.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from xinstruct.answer.systems import answer_params, resolve_system
from xinstruct.config import EvaluateConfig, SystemConfig
from xinstruct.core.layout import EvaluateLayout
from xinstruct.core.tasks import FileProgress, ModelSlot, ShardCaches, Task, open_task_cache, write_progress
from xinstruct.core.work import MapCounts, journaled_map, retry_note, workers_for
from xinstruct.evaluate.fastchat import answers_from_file
from xinstruct.evaluate.judge import JudgeParseError, parse_rating, parse_scores
from xinstruct.evaluate.questions import Asked, Question, asked_in
from xinstruct.io.cache import DONE, FAILED, one_row_entry
from xinstruct.languages import get_language
from xinstruct.models.base import SamplingParams, load_backend
from xinstruct.models.identity import model_fingerprint
from xinstruct.prompts import GRADE_GRAMMAR, JUDGE_GRAMMAR, pairwise_judge_prompt, single_grade_prompt

ORDERS = ("focus_first", "focus_second")


def call_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, default=str).encode()).hexdigest()[:24]


def file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def question_key(q: Question) -> str:
    return f"{q.set}:{q.id}"


def turn_tag(turn: int) -> str:
    """What a turn adds to a task's name: nothing on the first, so caches of single-turn evaluations are read."""
    return "" if turn == 1 else f"-turn{turn}"


def judge_params(cfg: EvaluateConfig, grammar: str = JUDGE_GRAMMAR) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=cfg.judge_max_tokens, stop=("\n\n",), seed=0,
                          grammar=grammar if cfg.judge_grammar else None)


Answers = dict[tuple, dict]  # {(lang, set, question id, turn): answer record} of one system


def answer_turns(answers: Answers, lang: str, q: Question, upto: int) -> list[str] | None:
    """A system's answers to turns 1..upto of `q`, or None when one of them is missing or failed."""
    out = []
    for t in range(1, upto + 1):
        record = answers.get((lang, q.set, q.id, t))
        if not record or "answer" not in record:
            return None
        out.append(record["answer"])
    return out


@dataclass
class Plan:
    """What every task of one evaluation needs; plain data, so a worker on another machine rebuilds it."""

    cfg: EvaluateConfig
    langs: list[str]
    questions: list[Question]  # the question sets, English or written in a target language
    folder: Path
    shards: int
    focus: str

    @property
    def layout(self) -> EvaluateLayout:
        return EvaluateLayout(self.folder)

    @property
    def others(self) -> list[str]:
        return [s.name for s in self.cfg.systems if s.name != self.focus]

    def system(self, name: str) -> SystemConfig:
        return next(s for s in self.cfg.systems if s.name == name)

    def asked(self, lang: str) -> list[Asked]:
        return asked_in(lang, self.questions, self.cfg.native_questions, self.cfg.turns)

    def judged(self, lang: str) -> list[Asked]:
        return [a for a in self.asked(lang) if a.judged]

    @cached_property
    def max_turns(self) -> int:
        return max((len(a.question.turns) for lang in self.langs for a in self.asked(lang)), default=1)

    # -- answers ---------------------------------------------------------------------------------------------

    def answer_params(self) -> SamplingParams:
        a = self.cfg.answer
        return answer_params(a.temperature, a.top_p, a.max_tokens, a.seed)

    def answer_task(self, system: str, lang: str, turn: int = 1, shard: int = 0) -> Task:
        return Task(lang, shard, self.shards, f"answers-{file_name(system)}{turn_tag(turn)}")

    def answer_jobs(self, system: SystemConfig, lang: str, turn: int, earlier: Answers) -> Iterator[tuple[Asked, dict]]:
        """(question, job) for every question with a turn `turn`: a job carries `key` and `prompt`, or, when an
        earlier turn has no answer, the `error` that keeps it from being asked."""
        params, resolved = self.answer_params(), resolve_system(system, lang)
        for a in self.asked(lang):
            q = a.question
            if len(q.turns) < turn:
                continue
            base = {"system": system.name, "lang": lang, "set": q.set, "question_id": q.id, "turn": turn,
                    "category": q.category, "group": a.group, "question": q.turns[turn - 1]}
            history = answer_turns(earlier, lang, q, turn - 1)
            if history is None:
                yield a, {**base, "error": f"not asked: no answer to turn {turn - 1}"}
                continue
            prompt = resolved.turn_prompt(list(q.turns[:turn]), history, lang, a.suffix)
            yield a, {**base, "key": call_key(resolved.fingerprint(), prompt, params), "prompt": prompt}

    def answers(self, system: str, lang: str, upto: int | None = None) -> Answers:
        """{(lang, set, question id, turn): record} of one system in one language, turns 1..upto (all), from the
        caches (or the system's answers file); a record that failed (or that no finished task holds) carries
        `error`."""
        config = self.system(system)
        if config.answers:
            return answers_from_file(config, lang, self.asked(lang), upto or self.max_turns)
        out: Answers = {}
        for turn in range(1, (upto or self.max_turns) + 1):
            with ShardCaches(lambda s, t=turn: self.layout.answer_cache(self.answer_task(system, lang, t, s).name),
                             self.shards) as caches:
                for a, job in self.answer_jobs(config, lang, turn, out):
                    q = a.question
                    rows = caches.of(question_key(q)).get(job["key"])[1] if "key" in job else []
                    out[(lang, q.set, q.id, turn)] = ({**rows[0], "turn": turn, "group": a.group} if rows else
                                                      {**job, "error": job.get("error", "not answered: a task did "
                                                                                        "not finish")})
        order = {(a.question.set, a.question.id): i for i, a in enumerate(self.asked(lang))}
        return dict(sorted(out.items(), key=lambda item: (order[item[0][1:3]], item[0][3])))  # question, then turn

    def lang_answers(self, lang: str) -> dict[str, Answers]:
        return {name: self.answers(name, lang) for name in (self.focus, *self.others)}

    # -- pairwise judgements ---------------------------------------------------------------------------------

    def judge_task(self, other: str, lang: str, turn: int = 1, shard: int = 0) -> Task:
        return Task(lang, shard, self.shards, f"judge-{file_name(self.focus)}-vs-{file_name(other)}{turn_tag(turn)}")

    def judge_jobs(self, other: str, lang: str, turn: int, answers: dict[str, Answers]
                   ) -> Iterator[tuple[str, dict, dict | None]]:
        """(shard key, record base, job or None) per (question, order) of one turn; None when an answer is
        missing. The judge sees the turns so far and each system's answers to them."""
        params, judge_id = judge_params(self.cfg), model_fingerprint(self.cfg.judge)
        language = get_language(lang).name
        for a in self.judged(lang):
            q = a.question
            if len(q.turns) < turn:
                continue
            mine, theirs = answer_turns(answers[self.focus], lang, q, turn), answer_turns(answers[other], lang, q, turn)
            missing = [n for n, got in ((self.focus, mine), (other, theirs)) if got is None]
            for order in ORDERS:
                base = {"focus": self.focus, "other": other, "lang": lang, "set": q.set, "question_id": q.id,
                        "turn": turn, "category": q.category, "group": a.group, "order": order}
                shard_key = f"{question_key(q)}:{order}" + ("" if turn == 1 else f":turn{turn}")
                if missing:
                    yield shard_key, {**base, "failure": f"no answer from {', '.join(missing)}"}, None
                    continue
                first, second = (mine, theirs) if order == "focus_first" else (theirs, mine)
                turns = list(q.turns[:turn])
                prompt = (pairwise_judge_prompt(turns[0], first[0], second[0], language, a.suffix) if turn == 1
                          else pairwise_judge_prompt(turns, first, second, language, a.suffix))
                yield shard_key, base, {**base, "key": call_key(judge_id, prompt, params), "prompt": prompt}

    def judgements(self, other: str, lang: str, turn: int, answers: dict[str, Answers]) -> list[dict]:
        """One record per (question, order) of one turn, from the caches; a missing answer or a judge error is a
        failure. Each record carries the judge's prompt and raw output."""
        return self._read(self.layout.judge_cache, lambda s: self.judge_task(other, lang, turn, s),
                          self.judge_jobs(other, lang, turn, answers), "scores")

    # -- single-answer grades --------------------------------------------------------------------------------

    def grade_task(self, system: str, lang: str, turn: int = 1, shard: int = 0) -> Task:
        return Task(lang, shard, self.shards, f"grade-{file_name(system)}{turn_tag(turn)}")

    def grade_jobs(self, system: str, lang: str, turn: int, answers: Answers) -> Iterator[tuple[str, dict, dict | None]]:
        """(shard key, record base, job or None) per question of one turn: the judge grades the system's answer to
        that turn, after the conversation so far, against the question's reference answers where it has them."""
        params, judge_id = judge_params(self.cfg, GRADE_GRAMMAR), model_fingerprint(self.cfg.judge)
        language = get_language(lang).name
        for a in self.judged(lang):
            q = a.question
            if len(q.turns) < turn:
                continue
            base = {"system": system, "lang": lang, "set": q.set, "question_id": q.id, "turn": turn,
                    "category": q.category, "group": a.group, "reference": bool(q.reference[:turn])}
            shard_key = f"{question_key(q)}:turn{turn}"
            got = answer_turns(answers, lang, q, turn)
            if got is None:
                yield shard_key, {**base, "failure": f"no answer from {system}"}, None
                continue
            prompt = single_grade_prompt(list(q.turns[:turn]), got, language, a.suffix, q.reference)
            yield shard_key, base, {**base, "key": call_key(judge_id, prompt, params), "prompt": prompt}

    def grades(self, system: str, lang: str, turn: int, answers: Answers) -> list[dict]:
        """One record per question of one turn, from the caches: the grade, or the failure (never a guess)."""
        return self._read(self.layout.grade_cache, lambda s: self.grade_task(system, lang, turn, s),
                          self.grade_jobs(system, lang, turn, answers), "rating")

    def _read(self, cache_of, task_of, jobs, value: str) -> list[dict]:
        records = []
        with ShardCaches(lambda s: cache_of(task_of(s).name), self.shards) as caches:
            for key, base, job in jobs:
                if job is None:
                    records.append({**base, value: None})
                    continue
                status, rows = caches.of(key).get(job["key"])
                prompt = {"prompt": job["prompt"]}
                if status == DONE:
                    records.append({**rows[0], **base, **prompt})
                elif status == FAILED:
                    records.append({**rows[0], **base, **prompt, value: None,
                                    "failure": f"judge error: {rows[0].get('error')}"})
                else:
                    records.append({**base, **prompt, value: None, "failure": "not judged: a task did not finish"})
        return records


def _job_key(job: dict) -> str:
    return job["key"]


def _work_keys(jobs) -> Iterator[str]:
    """What a judging pass's fingerprint hashes: each job's call key, or the reason it cannot be asked."""
    return (f"{key}:{base.get('failure')}" if job is None else job["key"] for key, base, job in jobs)


class _Tasks:
    """What core.tasks.run_tasks drives: the tasks, one model slot per process, a task's work, and what a
    worker needs to rebuild this (the plan)."""

    name = ""
    start_method = "spawn"  # in-process models run OpenMP code, which hangs after fork (core/executors.py)

    def __init__(self, plan: Plan, turn: int = 1):
        self.plan, self.turn = plan, turn

    @property
    def task_folder(self) -> Path:
        return self.plan.folder

    def worker_state(self) -> tuple[Plan, int]:
        return self.plan, self.turn

    @classmethod
    def from_worker_state(cls, state: tuple[Plan, int]):
        return cls(*state)

    def open_backend(self) -> ModelSlot:
        return ModelSlot(load_backend)

    @cached_property
    def fingerprint(self) -> str:
        """The work itself (every call key): datatrove keeps completion markers per fingerprint, so a task is
        skipped only when its exact work was done."""
        return call_key(type(self).__name__, self.plan.shards, list(self.keys()))[:16]

    def _run(self, task: Task, jobs: list[dict], cache_path: Path, call, progress, model) -> dict:
        """Ask `call(batch) -> [(status, record)]` for the jobs no cache holds, committed as they complete
        (core/work.py); `model()` is the backend `call` uses (loaded only if a job is left)."""
        total = len(jobs)
        advance = FileProgress(self.task_folder, task, total, progress and progress(f"{self.name} {task.name}",
                                                                                   total))
        counts = MapCounts()
        failed = 0
        with open_task_cache(cache_path, task) as (cache, others):
            for group in journaled_map(jobs, _job_key, cache, call, one_row_entry(_job_key),
                                       self.plan.cfg.batch_size, lambda: workers_for(model()), reuse=others,
                                       advance=advance, note=lambda: retry_note(model()), counts=counts):
                failed += sum(status == FAILED for _, (status, _) in group)
        stats = {"records": total, "cached": counts.cached, "copied": counts.copied, "asked": counts.asked,
                 "failed": failed}
        write_progress(self.task_folder, task, done=total, total=total, state="done", stats=stats,
                       retry=stats["failed"])
        return stats

    def _judge(self, task: Task, slot: ModelSlot, jobs: list[dict], cache_path: Path, progress, parse, value: str,
               grammar: str) -> dict:
        """Ask the judge the jobs no cache holds: the raw output kept, the parsed `value` or the parse failure
        beside it."""
        params = judge_params(self.plan.cfg, grammar)

        def judge_model():
            return slot.get("judge", self.plan.cfg.judge)

        def call(batch):
            judge = judge_model()
            out = []
            for job, result in zip(batch, judge.generate([j["prompt"] for j in batch], params), strict=True):
                record = {k: v for k, v in job.items() if k != "prompt"} | {"judge": judge.model_id}
                if result.error:
                    out.append((FAILED, {**record, "error": result.error}))
                    continue
                output = result.completions[0].text
                try:
                    parsed = parse(output)
                    out.append((DONE, {**record, "output": output, value: list(parsed) if isinstance(parsed, tuple)
                                       else parsed, "failure": None}))
                except JudgeParseError as e:
                    out.append((DONE, {**record, "output": output, value: None, "failure": str(e)}))
            return out

        return self._run(task, jobs, cache_path, call, progress, judge_model)


class Answering(_Tasks):
    """The answers to one turn (`turn`) of every question, each after the system's own answers to the turns
    before it."""

    name = "answer"

    def systems(self) -> list[SystemConfig]:
        return [s for s in self.plan.cfg.systems if not s.answers]  # a system with an answers file is not asked

    def tasks(self) -> list[Task]:
        p = self.plan
        return [p.answer_task(s.name, lang, self.turn, shard) for s in self.systems() for lang in p.langs
                for shard in range(p.shards)]

    def jobs(self, system: SystemConfig, lang: str) -> Iterator[tuple[Asked, dict]]:
        earlier = self.plan.answers(system.name, lang, self.turn - 1) if self.turn > 1 else {}
        return ((a, job) for a, job in self.plan.answer_jobs(system, lang, self.turn, earlier) if "key" in job)

    def keys(self) -> Iterator[str]:
        for s in self.systems():
            for lang in self.plan.langs:
                yield from (job["key"] for _, job in self.jobs(s, lang))

    def run_task(self, task: Task, slot: ModelSlot, progress) -> dict:
        p = self.plan
        system = next(s for s in self.systems() if p.answer_task(s.name, task.lang, self.turn).group == task.group)
        jobs = [job for a, job in self.jobs(system, task.lang) if task.owns(question_key(a.question))]
        params = p.answer_params()

        def backend():
            model = resolve_system(system, task.lang).model
            return slot.get(model_fingerprint(model), model)

        def call(batch):
            out = []
            for job, result in zip(batch, backend().generate([j["prompt"] for j in batch], params), strict=True):
                record = {**job, "model": backend().model_id}
                if result.error:
                    out.append((FAILED, {**record, "error": result.error}))
                else:
                    c = result.completions[0]
                    out.append((DONE, {**record, "answer": c.text.strip(), "finish_reason": c.finish_reason,
                                       "n_tokens": c.n_tokens}))
            return out

        return self._run(task, jobs, p.layout.answer_cache(task.name), call, progress, backend)


class Judging(_Tasks):
    """Pairwise: the focus system against each other one, every turn, both orders."""

    name = "judge"

    def tasks(self) -> list[Task]:
        p = self.plan
        return [p.judge_task(other, lang, turn, shard) for other in p.others for lang in p.langs
                for turn in range(1, p.max_turns + 1) for shard in range(p.shards)]

    def keys(self) -> Iterator[str]:
        for lang in self.plan.langs:
            answers = self.plan.lang_answers(lang)
            for other in self.plan.others:
                for turn in range(1, self.plan.max_turns + 1):
                    yield from _work_keys(self.plan.judge_jobs(other, lang, turn, answers))

    def run_task(self, task: Task, slot: ModelSlot, progress) -> dict:
        p = self.plan
        other, turn = next((o, t) for o in p.others for t in range(1, p.max_turns + 1)
                           if p.judge_task(o, task.lang, t).group == task.group)
        answers = {name: p.answers(name, task.lang) for name in (p.focus, other)}
        jobs = [job for key, _, job in p.judge_jobs(other, task.lang, turn, answers)
                if job is not None and task.owns(key)]
        return self._judge(task, slot, jobs, p.layout.judge_cache(task.name), progress, parse_scores, "scores",
                           JUDGE_GRAMMAR)


class Grading(_Tasks):
    """Single-answer grading: every system's answer to every turn, 1-10."""

    name = "grade"

    def tasks(self) -> list[Task]:
        p = self.plan
        return [p.grade_task(s.name, lang, turn, shard) for s in p.cfg.systems for lang in p.langs
                for turn in range(1, p.max_turns + 1) for shard in range(p.shards)]

    def keys(self) -> Iterator[str]:
        for s in self.plan.cfg.systems:
            for lang in self.plan.langs:
                answers = self.plan.answers(s.name, lang)
                for turn in range(1, self.plan.max_turns + 1):
                    yield from _work_keys(self.plan.grade_jobs(s.name, lang, turn, answers))

    def run_task(self, task: Task, slot: ModelSlot, progress) -> dict:
        p = self.plan
        system, turn = next((s.name, t) for s in p.cfg.systems for t in range(1, p.max_turns + 1)
                            if p.grade_task(s.name, task.lang, t).group == task.group)
        answers = p.answers(system, task.lang)
        jobs = [job for key, _, job in p.grade_jobs(system, task.lang, turn, answers)
                if job is not None and task.owns(key)]
        return self._judge(task, slot, jobs, p.layout.grade_cache(task.name), progress, parse_rating, "rating",
                           GRADE_GRAMMAR)
