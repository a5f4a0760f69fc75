"""`xinstruct evaluate`: every system answers every question in every language; objective checks; the focus
system is judged pairwise against each other system, in both orders.

Answering and judging run as sharded tasks (evaluate/tasks.py) in this process or on the `executor` section's
datatrove executor (local workers, Ray, Slurm), each task with its own cache keyed by a hash of model + prompt +
settings, so a rerun (or a killed run) redoes nothing it has.

Layout: <out>/answers/<system>.answers.jsonl and <out>/judgements/judgements.jsonl (this evaluation's records,
in question order), <out>/summary.json, <out>/report/index.html; caches in answers/cache/ and
judgements/cache/, task progress in tasks/, executor logs in logs/.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from xinstruct.answer.systems import model_fingerprint
from xinstruct.config import EvaluateConfig, ExecutorConfig
from xinstruct.evaluate.checks import fidelity, length
from xinstruct.evaluate.judge import tally, verdict
from xinstruct.evaluate.questions import load_question_set
from xinstruct.evaluate.tasks import ORDERS, Answering, Judging, Plan, file_name
from xinstruct.io.files import write_jsonl

Progress = Callable[[str, int], Callable[[int], None]]  # (task name, total) → advance(n)


def no_progress(_name: str, _total: int) -> Callable[[int], None]:
    return lambda _n, note=None: None


def collect_answers(plan: Plan, progress: Progress, log, executor: ExecutorConfig) -> dict[str, dict[tuple, dict]]:
    """Every system's answers, {system: {(lang, set, question id): record}}, asked where no cache has them."""
    from xinstruct.core.tasks import run_tasks

    answering = Answering(plan)
    run_tasks(answering, answering.tasks(), progress, log, executor)
    answers: dict[str, dict[tuple, dict]] = {s.name: {} for s in plan.cfg.systems}
    for lang in plan.langs:
        for name, records in plan.lang_answers(lang).items():
            answers[name].update(records)
    log("answers: " + ", ".join(f"{n} {sum('error' not in r for r in a.values())}/{len(a)}" for n, a in answers.items()))
    for name, records in answers.items():
        write_jsonl(plan.folder / "answers" / f"{file_name(name)}.answers.jsonl", records.values())
    return answers


def collect_judgements(plan: Plan, answers: dict[str, dict[tuple, dict]], progress: Progress, log,
                       executor: ExecutorConfig) -> list[dict]:
    """One record per (other system, language, question, order), judged where no cache has it."""
    from xinstruct.core.tasks import run_tasks

    judging = Judging(plan)
    run_tasks(judging, judging.tasks(), progress, log, executor)
    judgements = [r for other in plan.others for lang in plan.langs for r in plan.judgements(other, lang, answers)]
    log(f"judgements: {sum(r.get('scores') is not None for r in judgements)} scored of {len(judgements)}")
    return judgements


def aggregate_judgements(records: list[dict], langs: list[str]) -> dict:
    """{other: {lang: tally, "overall": tally, "failures": {reason: n}}} for the focus system."""
    by_item: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in records:
        by_item[(r["other"], r["lang"], r["set"], r["question_id"])][r["order"]] = r
    verdicts: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    failures: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (other, lang, _, _), orders in by_item.items():
        scores = [tuple(orders[o]["scores"]) if orders.get(o, {}).get("scores") else None for o in ORDERS]
        verdicts[other][lang].append(verdict(*scores))
        for o in ORDERS:
            if orders.get(o, {}).get("failure"):
                failures[other][orders[o]["failure"].split(":")[0]] += 1
    out = {}
    for other, per_lang in verdicts.items():
        out[other] = {lang: tally(per_lang[lang]).as_dict() for lang in langs if lang in per_lang}
        out[other]["overall"] = tally([v for vs in per_lang.values() for v in vs]).as_dict()
        out[other]["failures"] = dict(failures[other])
    return out


def objective_checks(answers: dict[str, dict[tuple, dict]], langs: list[str]) -> dict:
    """{system: {"english"|"native": {lang: fidelity + length}}}; a failed answer counts as not in the language."""
    out: dict = {}
    for system, records in answers.items():
        for group in ("english", "native"):
            for lang in langs:
                texts = [r.get("answer", "") for (lg, s, _), r in records.items()
                         if lg == lang and (s == "native") == (group == "native")]
                if texts:
                    out.setdefault(system, {}).setdefault(group, {})[lang] = {**fidelity(texts, lang),
                                                                              **length(texts)}
    return out


def run_evaluate(cfg: EvaluateConfig, langs: list[str], out_dir: Path, progress: Progress = no_progress,
                 log=print, executor: ExecutorConfig | None = None) -> dict:
    """Answer, check and judge; `executor` says where the tasks run (default: in this process)."""
    from xinstruct.core.executors import executor_session
    from xinstruct.core.tasks import shards_per_language

    if len(cfg.systems) < 1:
        raise ValueError("evaluate: no systems configured (evaluate.systems)")
    names = [s.name for s in cfg.systems]
    if len(set(names)) != len(names):
        raise ValueError(f"evaluate: system names must be unique, got {names}")
    if len({file_name(n) for n in names}) != len(names):
        raise ValueError(f"evaluate: system names must differ in more than punctuation, got {names}")
    focus = cfg.focus or names[-1]
    if focus not in names:
        raise ValueError(f"evaluate.focus {focus!r} is not one of the systems {names}")
    english = [q for source in cfg.questions for q in load_question_set(source, cfg.limit)]
    if not english and not cfg.native_questions:
        raise ValueError("evaluate: no questions (set evaluate.questions or native_questions)")
    executor = executor or ExecutorConfig()
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = Plan(cfg, langs, english, out_dir, shards_per_language(executor), focus)

    with executor_session(executor):  # one Ray cluster for answering and judging, where none is named
        answers = collect_answers(plan, progress, log, executor)
        judgements = collect_judgements(plan, answers, progress, log, executor) if english and plan.others else []
    write_jsonl(out_dir / "judgements" / "judgements.jsonl", judgements)
    summary = {"languages": langs, "systems": names, "focus": focus, "questions": cfg.questions,
               "n_english_questions": len(english), "judge": model_fingerprint(cfg.judge),
               "judge_model": cfg.judge.model or "bundled", "checks": objective_checks(answers, langs),
               "judgements": aggregate_judgements(judgements, langs),
               "answer_errors": {n: sum("error" in r for r in a.values()) for n, a in answers.items()}}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    from xinstruct.evaluate.report import write_eval_report
    summary["report"] = str(write_eval_report(summary, answers, out_dir / "report"))
    return summary
