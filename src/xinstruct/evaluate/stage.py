"""`xinstruct evaluate`: every system answers every turn of every question in every language; objective checks per
turn; the judge grades each system's answers 1-10 (single) and the focus system against each other one (pairwise,
both orders); win rates raw and length-controlled.

Answering and judging run as sharded tasks (evaluate/tasks.py) in this process or on the `executor` section's
datatrove executor (local workers, Ray, Slurm), each task with its own cache keyed by a hash of model + prompt +
settings, so a rerun (or a killed run) redoes nothing it has.

Layout: <out>/answers/<system>.answers.jsonl, <out>/judgements/judgements.jsonl, <out>/grades/grades.jsonl (this
evaluation's records, in question order), <out>/summary.json, <out>/leaderboard.csv, <out>/fastchat/<set>-<lang>/
(FastChat's shapes, evaluate/fastchat.py), <out>/report/index.html; caches in answers/cache/, judgements/cache/ and
grades/cache/, task progress in tasks/, executor logs in logs/.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from xinstruct.config import EvaluateConfig, ExecutorConfig, RunConfig, validated_copy
from xinstruct.core.executors import executor_session
from xinstruct.core.tasks import run_tasks, shards_per_language
from xinstruct.evaluate.checks import fidelity, length
from xinstruct.evaluate.fastchat import bench_folders, write_leaderboard
from xinstruct.evaluate.judge import tally, verdict
from xinstruct.evaluate.length_control import length_controlled
from xinstruct.evaluate.questions import ENGLISH, NATIVE, TARGET, load_question_set
from xinstruct.evaluate.report import write_eval_report
from xinstruct.evaluate.tasks import ORDERS, Answering, Grading, Judging, Plan, file_name
from xinstruct.io.files import write_jsonl
from xinstruct.models.identity import model_fingerprint

Progress = Callable[[str, int], Callable[[int], None]]  # (task name, total) → advance(n)
GROUPS = (ENGLISH, TARGET, NATIVE)


def no_progress(_name: str, _total: int) -> Callable[[int], None]:
    return lambda _n, note=None: None


def collect_answers(plan: Plan, progress: Progress, log, executor: ExecutorConfig) -> dict[str, dict[tuple, dict]]:
    """Every system's answers, {system: {(lang, set, question id, turn): record}}, asked turn by turn where no
    cache has them (turn t's prompts hold the answers to turns before it)."""
    for turn in range(1, plan.max_turns + 1):
        answering = Answering(plan, turn)
        if answering.systems():
            run_tasks(answering, answering.tasks(), progress, log, executor)
    answers: dict[str, dict[tuple, dict]] = {s.name: {} for s in plan.cfg.systems}
    for lang in plan.langs:
        for name, records in plan.lang_answers(lang).items():
            answers[name].update(records)
    log("answers: " + ", ".join(f"{n} {sum('error' not in r for r in a.values())}/{len(a)}" for n, a in answers.items()))
    for name, records in answers.items():
        write_jsonl(plan.layout.answers_file(file_name(name)), records.values())
    return answers


def collect_judgements(plan: Plan, answers: dict[str, dict[tuple, dict]], progress: Progress, log,
                       executor: ExecutorConfig) -> list[dict]:
    """One record per (other system, language, turn, question, order), judged where no cache has it."""
    judging = Judging(plan)
    run_tasks(judging, judging.tasks(), progress, log, executor)
    judgements = [r for other in plan.others for lang in plan.langs for turn in range(1, plan.max_turns + 1)
                  for r in plan.judgements(other, lang, turn, {n: answers[n] for n in (plan.focus, other)})]
    log(f"pairwise judgements: {sum(r.get('scores') is not None for r in judgements)} scored of {len(judgements)}")
    return judgements


def collect_grades(plan: Plan, answers: dict[str, dict[tuple, dict]], progress: Progress, log,
                   executor: ExecutorConfig) -> list[dict]:
    """One record per (system, language, turn, question), graded where no cache has it."""
    grading = Grading(plan)
    run_tasks(grading, grading.tasks(), progress, log, executor)
    grades = [r for s in plan.cfg.systems for lang in plan.langs for turn in range(1, plan.max_turns + 1)
              for r in plan.grades(s.name, lang, turn, answers[s.name])]
    log(f"single-answer grades: {sum(r.get('rating') is not None for r in grades)} graded of {len(grades)}")
    return grades


def _by(items, key) -> dict:
    found = defaultdict(list)
    for item in items:
        found[key(item)].append(item)
    return found


def _answer_chars(answers: dict[tuple, dict], r: dict) -> int:
    return len(answers.get((r["lang"], r["set"], r["question_id"], r.get("turn", 1)), {}).get("answer", ""))


def aggregate_judgements(records: list[dict], langs: list[str], answers: dict[str, dict[tuple, dict]] | None = None
                         ) -> dict:
    """{other: {lang | "overall": tally, "turns": {turn: tally}, "categories": {category: tally},
    "failures": {reason: n}, "length_controlled": {lang | "overall": rates}}} for the focus system; an item is a
    question's turn, judged in both orders."""
    by_item: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in records:
        by_item[(r["other"], r["lang"], r["set"], r["question_id"], r.get("turn", 1))][r["order"]] = r
    items: dict[str, list[tuple[dict, str]]] = defaultdict(list)
    failures: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (other, *_), orders in by_item.items():
        scores = [tuple(orders[o]["scores"]) if orders.get(o, {}).get("scores") else None for o in ORDERS]
        items[other].append((next(iter(orders.values())), verdict(*scores)))
        for o in ORDERS:
            if orders.get(o, {}).get("failure"):
                failures[other][orders[o]["failure"].split(":")[0]] += 1
    out = {}
    for other, judged in items.items():
        def tallies(field, default, judged=judged):
            found = _by(judged, lambda item: item[0].get(field) or default)
            return {str(k): tally([v for _, v in vs]).as_dict() for k, vs in sorted(found.items())}

        per_lang = tallies("lang", "")
        out[other] = {lang: per_lang[lang] for lang in langs if lang in per_lang}
        out[other]["overall"] = tally([v for _, v in judged]).as_dict()
        out[other]["turns"] = tallies("turn", 1)
        out[other]["categories"] = tallies("category", "–")
        out[other]["failures"] = dict(failures[other])
        if answers is not None:
            focus = judged[0][0]["focus"]
            lc = {}
            for key in [*langs, "overall"]:
                chosen = [(r, v) for r, v in judged if key in ("overall", r["lang"])]
                if not chosen:
                    continue
                diffs = [_answer_chars(answers[focus], r) - _answer_chars(answers[other], r) for r, _ in chosen]
                lc[key] = {**length_controlled([v for _, v in chosen], diffs),
                           "focus_mean_chars": round(statistics.fmean(_answer_chars(answers[focus], r)
                                                                      for r, _ in chosen), 1)}
            out[other]["length_controlled"] = lc
    return out


def grade_stats(ratings: list[float | None]) -> dict:
    """Mean grade with a 95% t-interval over the graded answers (cut to the 1-10 range); `failed` counts grades
    that did not parse or could not be asked."""
    from scipy.stats import t as student_t

    graded = [r for r in ratings if r is not None]
    n = len(graded)
    out = {"n": n, "failed": len(ratings) - n, "mean": round(statistics.fmean(graded), 3) if n else None, "ci": None}
    if n > 1:
        half = student_t.ppf(0.975, n - 1) * statistics.stdev(graded) / n ** 0.5
        out["ci"] = [round(max(1.0, out["mean"] - half), 3), round(min(10.0, out["mean"] + half), 3)]  # grade range
    return out


def aggregate_grades(records: list[dict], langs: list[str]) -> dict:
    """{system: {lang | "overall": stats, "turns": {turn: stats}, "categories": {category: stats},
    "failures": {reason: n}}}."""
    out = {}
    by_system: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_system[r["system"]].append(r)
    for system, rs in by_system.items():
        def group(field, default, rs=rs):
            found = _by(rs, lambda r: r.get(field) or default)
            return {str(k): grade_stats([r.get("rating") for r in v]) for k, v in sorted(found.items())}

        per_lang = group("lang", "")
        failures: dict[str, int] = defaultdict(int)
        for r in rs:
            if r.get("failure"):
                failures[r["failure"].split(":")[0]] += 1
        out[system] = {lang: per_lang[lang] for lang in langs if lang in per_lang}
        out[system] |= {"overall": grade_stats([r.get("rating") for r in rs]),
                        "turns": group("turn", 1), "categories": group("category", "–"),
                        "failures": dict(failures)}
    return out


def objective_checks(answers: dict[str, dict[tuple, dict]], langs: list[str]) -> dict:
    """{system: {group: {lang: fidelity + length, with "turns": {turn: fidelity + length}}}}, group english (the
    English questions), target (sets written in the language) or native (the bundled check); a failed answer
    counts as not in the language."""
    out: dict = {}
    for system, records in answers.items():
        for group in GROUPS:
            for lang in langs:
                chosen = [(k[3], r.get("answer", "")) for k, r in records.items()
                          if k[0] == lang and r.get("group", ENGLISH) == group]
                if not chosen:
                    continue
                per_turn = {str(t): [a for tt, a in chosen if tt == t] for t in sorted({t for t, _ in chosen})}
                texts = [a for _, a in chosen]
                checks = {**fidelity(texts, lang), **length(texts)}
                if len(per_turn) > 1:
                    checks["turns"] = {t: {**fidelity(ts, lang), **length(ts)} for t, ts in per_turn.items()}
                out.setdefault(system, {}).setdefault(group, {})[lang] = checks
    return out


def validate(cfg: EvaluateConfig) -> str:
    """The focus system; a config that cannot be evaluated is a ValueError naming what is wrong."""
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
    return focus


def evaluate_overrides(cfg: RunConfig, questions: list[str] | None = None, limit: int | None = None,
                       languages: str | None = None, question_lang: str | None = None, turns: int | None = None,
                       judging: str | None = None) -> tuple[RunConfig, list[str]]:
    """The config with the command line's evaluation settings (None: the config's), and the languages to evaluate
    (comma-separated `languages`, else evaluate.languages, else the run's); raises ConfigError on a bad one."""
    updates = {k: v for k, v in {"questions": questions, "limit": limit, "question_lang": question_lang,
                                 "turns": turns, "judging": judging.split(",") if judging else None}.items()
               if v is not None}
    cfg = validated_copy(cfg, evaluate=validated_copy(cfg.evaluate, **updates))
    return cfg, (languages.split(",") if languages else cfg.evaluate.languages or cfg.languages)


def run_evaluate(cfg: EvaluateConfig, langs: list[str], out_dir: Path, progress: Progress = no_progress,
                 log=print, executor: ExecutorConfig | None = None) -> dict:
    """Answer, check and judge; `executor` says where the tasks run (default: in this process)."""
    focus = validate(cfg)
    questions = [q for source in cfg.questions for q in load_question_set(source, cfg.limit, cfg.question_lang)]
    if not questions and not cfg.native_questions:
        raise ValueError("evaluate: no questions (set evaluate.questions or native_questions)")
    executor = executor or ExecutorConfig()
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = Plan(cfg, langs, questions, out_dir, shards_per_language(executor), focus)
    judged = any(plan.judged(lang) for lang in langs)

    with executor_session(executor):  # one Ray cluster for answering and judging, where none is named
        answers = collect_answers(plan, progress, log, executor)
        judgements = (collect_judgements(plan, answers, progress, log, executor)
                      if judged and plan.others and "pairwise" in cfg.judging else [])
        grades = collect_grades(plan, answers, progress, log, executor) if judged and "single" in cfg.judging else []
    write_jsonl(plan.layout.judgements_file, judgements)
    write_jsonl(plan.layout.grades_file, grades)
    judge_name = cfg.judge.model or "bundled"
    summary = {"languages": langs, "systems": [s.name for s in cfg.systems], "focus": focus,
               "questions": cfg.questions, "question_lang": cfg.question_lang,
               "n_english_questions": sum(q.lang == "en" for q in questions),
               "n_target_questions": {lang: sum(q.lang == lang for q in questions) for lang in langs},
               "max_turns": plan.max_turns, "judging": cfg.judging, "judge": model_fingerprint(cfg.judge),
               "judge_model": judge_name, "checks": objective_checks(answers, langs),
               "judgements": aggregate_judgements(judgements, langs, answers),
               "grades": aggregate_grades(grades, langs),
               "answer_errors": {n: sum("error" in r for r in a.values()) for n, a in answers.items()}}
    folders = bench_folders(plan.layout, {lang: plan.judged(lang) for lang in langs}, answers, judgements, grades,
                            Path(judge_name).name)
    summary["fastchat"] = [str(f.relative_to(out_dir)) for f in folders]
    summary["leaderboard"] = str(write_leaderboard(plan.layout.leaderboard, summary).relative_to(out_dir))
    plan.layout.summary.write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    summary["report"] = str(write_eval_report(summary, answers, plan.layout.report))
    return summary
