"""Answering and judging as sharded tasks (core/tasks.py), run in this process or on the `executor` section's
datatrove executor, like the model stages of `xinstruct run`.

- answers: one task per (system, language, shard of a stable hash of the question's set and id);
- judgements: one per (focus vs other system, language, shard of a stable hash of the question and the order).

Each task keeps what the model said in its own cache (<out>/answers/cache/<task>.sqlite,
<out>/judgements/cache/<task>.sqlite), keyed by a hash of the model, the prompt and the sampling settings
(`call_key`), committed a batch at a time: a killed task resumes alone, a rerun asks only what no cache holds
(a cache written under another number of shards included), and an answer that failed with a server error is
asked again. A judge output that does not parse is kept as a failure (the judge runs at temperature 0).

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

from xinstruct.answer.systems import answer_params, model_fingerprint, resolve_system
from xinstruct.config import EvaluateConfig, SystemConfig
from xinstruct.core.tasks import FileProgress, ModelSlot, Task, other_splits, shard_of, write_progress
from xinstruct.core.work import completed, retry_note, workers_for
from xinstruct.evaluate.judge import JudgeParseError, parse_scores
from xinstruct.evaluate.questions import Question, native_questions
from xinstruct.io.cache import RecordCache
from xinstruct.languages import get_language
from xinstruct.models.base import SamplingParams
from xinstruct.prompts import JUDGE_GRAMMAR, pairwise_judge_prompt

ORDERS = ("focus_first", "focus_second")
DONE, FAILED = "done", "failed"


def call_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, default=str).encode()).hexdigest()[:24]


def file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def question_key(q: Question) -> str:
    return f"{q.set}:{q.id}"


def question_sets(cfg: EvaluateConfig, lang: str, english: list[Question]) -> list[tuple[Question, bool]]:
    """(question, add the "Answer in X." suffix) for one language: the English sets, then the native ones."""
    native = native_questions(lang) if cfg.native_questions else []
    return [(q, True) for q in english] + [(q, False) for q in native]


def judge_params(cfg: EvaluateConfig) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=cfg.judge_max_tokens, stop=("\n\n",), seed=0,
                          grammar=JUDGE_GRAMMAR if cfg.judge_grammar else None)


@dataclass
class Plan:
    """What every task of one evaluation needs; plain data, so a worker on another machine rebuilds it."""

    cfg: EvaluateConfig
    langs: list[str]
    english: list[Question]
    folder: Path
    shards: int
    focus: str

    @property
    def others(self) -> list[str]:
        return [s.name for s in self.cfg.systems if s.name != self.focus]

    def system(self, name: str) -> SystemConfig:
        return next(s for s in self.cfg.systems if s.name == name)

    # -- answers ---------------------------------------------------------------------------------------------

    def answer_jobs(self, system: SystemConfig, lang: str) -> Iterator[tuple[Question, dict]]:
        params = answer_params(self.cfg.answer.temperature, self.cfg.answer.top_p, self.cfg.answer.max_tokens,
                               self.cfg.answer.seed)
        resolved = resolve_system(system, lang)
        for q, suffix in question_sets(self.cfg, lang, self.english):
            prompt = resolved.prompt(q.text, lang, suffix)
            yield q, {"key": call_key(resolved.fingerprint(), prompt, params), "system": system.name, "lang": lang,
                      "set": q.set, "question_id": q.id, "category": q.category, "question": q.text,
                      "prompt": prompt}

    def answer_task(self, system: str, lang: str, shard: int = 0) -> Task:
        return Task(lang, shard, self.shards, f"answers-{file_name(system)}")

    def answers(self, system: str, lang: str) -> dict[tuple, dict]:
        """{(lang, set, question id): record} of one system in one language, from the caches; a record that
        failed (or that no finished task holds) carries `error`."""
        caches = [RecordCache(answer_cache(self.folder, self.answer_task(system, lang, s)), readonly=True)
                  for s in range(self.shards)]
        out = {}
        try:
            for q, job in self.answer_jobs(self.system(system), lang):
                _, rows = caches[shard_of(question_key(q), self.shards)].get(job["key"])
                out[(lang, q.set, q.id)] = rows[0] if rows else {**job, "error": "not answered: a task did not finish"}
        finally:
            for c in caches:
                c.close()
        return out

    # -- judgements ------------------------------------------------------------------------------------------

    def judge_task(self, other: str, lang: str, shard: int = 0) -> Task:
        return Task(lang, shard, self.shards, f"judge-{file_name(self.focus)}-vs-{file_name(other)}")

    def judge_jobs(self, other: str, lang: str, answers: dict[str, dict[tuple, dict]]
                   ) -> Iterator[tuple[str, dict, dict | None]]:
        """(shard key, record base, job or None) per (question, order); None when an answer is missing."""
        params, judge_id = judge_params(self.cfg), model_fingerprint(self.cfg.judge)
        language = get_language(lang).name
        for q in self.english:
            mine, theirs = answers[self.focus].get((lang, q.set, q.id)), answers[other].get((lang, q.set, q.id))
            missing = [n for n, a in ((self.focus, mine), (other, theirs)) if not a or "answer" not in a]
            for order in ORDERS:
                base = {"focus": self.focus, "other": other, "lang": lang, "set": q.set, "question_id": q.id,
                        "order": order}
                if missing:
                    yield f"{question_key(q)}:{order}", {**base, "failure": f"no answer from {', '.join(missing)}"}, None
                    continue
                first, second = (mine, theirs) if order == "focus_first" else (theirs, mine)
                prompt = pairwise_judge_prompt(q.text, first["answer"], second["answer"], language)
                yield f"{question_key(q)}:{order}", base, {**base, "key": call_key(judge_id, prompt, params),
                                                           "prompt": prompt}

    def lang_answers(self, lang: str) -> dict[str, dict[tuple, dict]]:
        return {name: self.answers(name, lang) for name in (self.focus, *self.others)}

    def judgements(self, other: str, lang: str, answers: dict[str, dict[tuple, dict]]) -> list[dict]:
        """One record per (question, order), from the caches; a missing answer or a judge error is a failure."""
        caches = [RecordCache(judge_cache(self.folder, self.judge_task(other, lang, s)), readonly=True)
                  for s in range(self.shards)]
        records = []
        try:
            for key, base, job in self.judge_jobs(other, lang, answers):
                if job is None:
                    records.append({**base, "scores": None})
                    continue
                status, rows = caches[shard_of(key, self.shards)].get(job["key"])
                if status == DONE:
                    records.append({**rows[0], **base})
                elif status == FAILED:
                    records.append({**rows[0], **base, "scores": None,
                                    "failure": f"judge error: {rows[0].get('error')}"})
                else:
                    records.append({**base, "scores": None, "failure": "not judged: a task did not finish"})
        finally:
            for c in caches:
                c.close()
        return records


def answer_cache(folder: Path, task: Task) -> Path:
    return Path(folder) / "answers" / "cache" / f"{task.name}.sqlite"


def judge_cache(folder: Path, task: Task) -> Path:
    return Path(folder) / "judgements" / "cache" / f"{task.name}.sqlite"


class _Tasks:
    """What core.tasks.run_tasks drives: the tasks, one model slot per process, a task's work, and what a
    worker needs to rebuild this (the plan)."""

    name = ""
    start_method = "spawn"  # in-process models run OpenMP code, which hangs after fork (core/executors.py)

    def __init__(self, plan: Plan):
        self.plan = plan

    @property
    def task_folder(self) -> Path:
        return self.plan.folder

    def worker_state(self) -> Plan:
        return self.plan

    @classmethod
    def from_worker_state(cls, plan: Plan):
        return cls(plan)

    def open_backend(self) -> ModelSlot:
        from xinstruct.models.base import load_backend

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
        stats = {"records": total, "cached": 0, "copied": 0, "asked": 0, "failed": 0}
        with RecordCache(cache_path) as cache:
            others = [RecordCache(p, readonly=True) for p in other_splits(cache_path.parent, task)]
            todo = []
            try:
                for job in jobs:
                    if cache.status(job["key"]) == DONE:
                        stats["cached"] += 1
                    elif found := next((r for o in others if (r := o.get(job["key"]))[0] == DONE), None):
                        cache.put_many([(job["key"], DONE, found[1])])
                        stats["copied"] += 1
                    else:
                        todo.append(job)
            finally:
                for o in others:
                    o.close()
            advance(total - len(todo))
            backend = model() if todo else None
            for group in completed(todo, call, self.plan.cfg.batch_size, workers_for(backend)):
                cache.put_many((job["key"], status, [record]) for job, (status, record) in group)
                stats["asked"] += len(group)
                stats["failed"] += sum(status == FAILED for _, (status, _) in group)
                advance(len(group), **retry_note(backend))
        write_progress(self.task_folder, task, done=total, total=total, state="done", stats=stats,
                       retry=stats["failed"])
        return stats


class Answering(_Tasks):
    name = "answer"

    def tasks(self) -> list[Task]:
        p = self.plan
        return [p.answer_task(s.name, lang, shard) for s in p.cfg.systems for lang in p.langs
                for shard in range(p.shards)]

    def keys(self) -> Iterator[str]:
        for s in self.plan.cfg.systems:
            for lang in self.plan.langs:
                yield from (job["key"] for _, job in self.plan.answer_jobs(s, lang))

    def run_task(self, task: Task, slot: ModelSlot, progress) -> dict:
        p = self.plan
        system = next(s for s in p.cfg.systems if p.answer_task(s.name, task.lang).group == task.group)
        jobs = [job for q, job in p.answer_jobs(system, task.lang) if task.owns(question_key(q))]
        params = answer_params(p.cfg.answer.temperature, p.cfg.answer.top_p, p.cfg.answer.max_tokens,
                               p.cfg.answer.seed)

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

        return self._run(task, jobs, answer_cache(p.folder, task), call, progress, backend)


class Judging(_Tasks):
    name = "judge"

    def tasks(self) -> list[Task]:
        p = self.plan
        return [p.judge_task(other, lang, shard) for other in p.others for lang in p.langs
                for shard in range(p.shards)]

    def keys(self) -> Iterator[str]:
        for lang in self.plan.langs:
            answers = self.plan.lang_answers(lang)
            for other in self.plan.others:
                yield from (f"{key}:{base.get('failure')}" if job is None else job["key"]
                            for key, base, job in self.plan.judge_jobs(other, lang, answers))

    def run_task(self, task: Task, slot: ModelSlot, progress) -> dict:
        p = self.plan
        other = next(o for o in p.others if p.judge_task(o, task.lang).group == task.group)
        answers = {name: p.answers(name, task.lang) for name in (p.focus, other)}
        jobs = [job for key, _, job in p.judge_jobs(other, task.lang, answers) if job is not None and task.owns(key)]
        params = judge_params(p.cfg)

        def judge_model():
            return slot.get("judge", p.cfg.judge)

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
                    out.append((DONE, {**record, "output": output, "scores": list(parse_scores(output)),
                                       "failure": None}))
                except JudgeParseError as e:
                    out.append((DONE, {**record, "output": output, "scores": None, "failure": str(e)}))
            return out

        return self._run(task, jobs, judge_cache(p.folder, task), call, progress, judge_model)
