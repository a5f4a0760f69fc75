"""`xinstruct evaluate`: every system answers every question in every language; objective checks; the focus
system is judged pairwise against each other system, in both orders. Answers and judgements are cached in
Journals keyed by a hash of model + prompt + settings, so a rerun (or a killed run) redoes nothing it has.

Layout: <out>/answers/<system>.answers.jsonl, <out>/judgements/judgements.judgements.jsonl, <out>/summary.json,
<out>/report/index.html.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from xinstruct.answer.systems import ResolvedSystem, answer_params, model_fingerprint, resolve_system
from xinstruct.config import EvaluateConfig, SystemConfig
from xinstruct.evaluate.checks import fidelity, length
from xinstruct.evaluate.judge import JudgeParseError, parse_scores, tally, verdict
from xinstruct.evaluate.questions import Question, load_question_set, native_questions
from xinstruct.io.journal import Journal, batches
from xinstruct.languages import get_language
from xinstruct.models.base import SamplingParams, load_backend
from xinstruct.prompts import JUDGE_GRAMMAR, pairwise_judge_prompt

ORDERS = ("focus_first", "focus_second")
Progress = Callable[[str, int], Callable[[int], None]]  # (task name, total) → advance(n)


def call_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False, default=str).encode()).hexdigest()[:24]


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def no_progress(_name: str, _total: int) -> Callable[[int], None]:
    return lambda _n: None


def question_sets(cfg: EvaluateConfig, lang: str, english: list[Question]) -> list[tuple[Question, bool]]:
    """(question, add the "Answer in X." suffix) for one language: the English sets, then the native ones."""
    native = native_questions(lang) if cfg.native_questions else []
    return [(q, True) for q in english] + [(q, False) for q in native]


def collect_answers(cfg: EvaluateConfig, system: SystemConfig, langs: list[str], english: list[Question],
                    folder: Path, progress: Progress = no_progress, log=print) -> dict[tuple, dict]:
    """{(lang, set, question id): record} for one system; only answers missing from the cache are generated."""
    params = answer_params(cfg.answer.temperature, cfg.answer.top_p, cfg.answer.max_tokens, cfg.answer.seed)
    out: dict[tuple, dict] = {}
    groups: dict[str, tuple[ResolvedSystem, list[dict]]] = {}
    with Journal(folder, _file_name(system.name), ("answers",)) as journal:
        done = {r["key"]: r for r in journal.records("answers")}
        for lang in langs:
            resolved = resolve_system(system, lang)
            for q, suffix in question_sets(cfg, lang, english):
                prompt = resolved.prompt(q.text, lang, suffix)
                key = call_key(resolved.fingerprint(), prompt, params)
                if key in done:
                    out[(lang, q.set, q.id)] = done[key]
                    continue
                job = {"key": key, "system": system.name, "lang": lang, "set": q.set, "question_id": q.id,
                       "category": q.category, "question": q.text, "prompt": prompt}
                groups.setdefault(resolved.fingerprint(), (resolved, []))[1].append(job)
        pending = sum(len(jobs) for _, jobs in groups.values())
        log(f"answers {system.name}: {len(out)} cached, {pending} to generate")
        for resolved, jobs in groups.values():
            advance = progress(f"answer {system.name}", len(jobs))
            with load_backend(resolved.model) as backend:
                for batch in batches(jobs, cfg.batch_size):
                    results = backend.generate([j["prompt"] for j in batch], params)
                    ok = []
                    for job, result in zip(batch, results, strict=True):
                        record = {**job, "model": backend.model_id}
                        if result.error:
                            record["error"] = result.error  # not cached: a rerun tries again
                        else:
                            c = result.completions[0]
                            record.update(answer=c.text.strip(), finish_reason=c.finish_reason, n_tokens=c.n_tokens)
                            ok.append(record)
                        out[(job["lang"], job["set"], job["question_id"])] = record
                    journal.commit({"answers": ok})
                    advance(len(batch))
    return out


def collect_judgements(cfg: EvaluateConfig, focus: str, others: list[str], langs: list[str],
                       english: list[Question], answers: dict[str, dict[tuple, dict]], folder: Path,
                       progress: Progress = no_progress, log=print) -> list[dict]:
    """One record per (other system, language, question, order); unparseable judge output is cached as a
    failure (the judge runs at temperature 0, so asking again would give the same text)."""
    params = SamplingParams(temperature=0.0, max_tokens=cfg.judge_max_tokens, stop=("\n\n",), seed=0,
                            grammar=JUDGE_GRAMMAR if cfg.judge_grammar else None)
    judge_id = model_fingerprint(cfg.judge)
    records, jobs = [], []
    with Journal(folder, "judgements", ("judgements",)) as journal:
        done = {r["key"]: r for r in journal.records("judgements")}
        for other in others:
            for lang in langs:
                language = get_language(lang).name
                for q in english:
                    mine, theirs = answers[focus].get((lang, q.set, q.id)), answers[other].get((lang, q.set, q.id))
                    base = {"focus": focus, "other": other, "lang": lang, "set": q.set, "question_id": q.id}
                    missing = [n for n, a in ((focus, mine), (other, theirs)) if not a or "answer" not in a]
                    if missing:
                        for order in ORDERS:
                            records.append({**base, "order": order, "scores": None,
                                            "failure": f"no answer from {', '.join(missing)}"})
                        continue
                    for order in ORDERS:
                        first, second = (mine, theirs) if order == "focus_first" else (theirs, mine)
                        prompt = pairwise_judge_prompt(q.text, first["answer"], second["answer"], language)
                        key = call_key(judge_id, prompt, params)
                        if key in done:
                            records.append({**done[key], **base, "order": order})
                        else:
                            jobs.append({**base, "order": order, "key": key, "prompt": prompt})
        log(f"judgements: {len(records)} cached or unanswerable, {len(jobs)} to ask the judge")
        if jobs:
            advance = progress("judge", len(jobs))
            with load_backend(cfg.judge) as judge:
                for batch in batches(jobs, cfg.batch_size):
                    results = judge.generate([j["prompt"] for j in batch], params)
                    ok = []
                    for job, result in zip(batch, results, strict=True):
                        record = {k: v for k, v in job.items() if k != "prompt"} | {"judge": judge.model_id}
                        if result.error:
                            records.append({**record, "scores": None, "failure": f"judge error: {result.error}"})
                            continue
                        output = result.completions[0].text
                        try:
                            record.update(output=output, scores=list(parse_scores(output)), failure=None)
                        except JudgeParseError as e:
                            record.update(output=output, scores=None, failure=str(e))
                        ok.append(record)
                        records.append(record)
                    journal.commit({"judgements": ok})
                    advance(len(batch))
    return records


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
                 log=print) -> dict:
    if len(cfg.systems) < 1:
        raise ValueError("evaluate: no systems configured (evaluate.systems)")
    names = [s.name for s in cfg.systems]
    if len(set(names)) != len(names):
        raise ValueError(f"evaluate: system names must be unique, got {names}")
    focus = cfg.focus or names[-1]
    if focus not in names:
        raise ValueError(f"evaluate.focus {focus!r} is not one of the systems {names}")
    english = [q for source in cfg.questions for q in load_question_set(source, cfg.limit)]
    if not english and not cfg.native_questions:
        raise ValueError("evaluate: no questions (set evaluate.questions or native_questions)")
    out_dir.mkdir(parents=True, exist_ok=True)
    answers = {s.name: collect_answers(cfg, s, langs, english, out_dir / "answers", progress, log)
               for s in cfg.systems}
    others = [n for n in names if n != focus]
    judgements = collect_judgements(cfg, focus, others, langs, english, answers, out_dir / "judgements",
                                    progress, log) if english and others else []
    summary = {"languages": langs, "systems": names, "focus": focus, "questions": cfg.questions,
               "n_english_questions": len(english), "judge": model_fingerprint(cfg.judge),
               "judge_model": cfg.judge.model or "bundled", "checks": objective_checks(answers, langs),
               "judgements": aggregate_judgements(judgements, langs),
               "answer_errors": {n: sum("error" in r for r in a.values()) for n, a in answers.items()}}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False))
    from xinstruct.evaluate.report import write_eval_report
    summary["report"] = str(write_eval_report(summary, answers, out_dir / "report"))
    return summary
