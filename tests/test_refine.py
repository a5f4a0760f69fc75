"""Stage II: rating set, grade parsing, labelling (errors, garbage, resume), keep rules, the refinement loop."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_backend import FakeJudge
from killing import run_and_kill

from xinstruct.config import LanguageQuota, RefineConfig, RunConfig, model_config
from xinstruct.io.files import read_jsonl, write_jsonl
from xinstruct.refine.evaluator import GRADE_TOKENS, JudgeEvaluator, ScoringEvaluator, grade_from_logprobs, parse_score
from xinstruct.refine.label import compare, keep_rule, label_candidates, pair_key, select
from xinstruct.refine.ratings import rating_set, truncate_answer
from xinstruct.seed import bundled_path


def seed_pairs(lang="sw", n=12):
    return [{"id": r["id"], "instruction": r["instruction"], "output": r["output"], "lang": lang,
             "split": "heldout" if i % 4 == 0 else "train"}
            for i, r in enumerate(read_jsonl(bundled_path(f"demo/{lang}/seed.jsonl"))) if i < n]


def candidates(lang="sw", n=40):
    docs = list(read_jsonl(bundled_path(f"demo/{lang}/corpus.jsonl")))[:n]
    seeds = list(read_jsonl(bundled_path(f"demo/{lang}/seed.jsonl")))
    return [{"id": f"{d['id']}#c0", "doc_id": d["id"], "lang": lang, "instruction": seeds[i % len(seeds)]["instruction"],
             "output": d["text"]} for i, d in enumerate(docs)]


def test_rating_set_is_balanced_and_degrades_as_documented():
    pairs = seed_pairs() + seed_pairs("th")
    rows = rating_set(pairs, seed=1)
    assert len(rows) == 3 * len(pairs)
    by_seed = {}
    for r in rows:
        by_seed.setdefault(r["seed_id"], {})[r["grade"]] = r
    instructions = {p["id"]: p for p in pairs}
    for seed_id, g in by_seed.items():
        pair = instructions[seed_id]
        assert g["best"]["instruction"] == pair["instruction"] and g["best"]["output"] == pair["output"]
        assert g["best"]["split"] == pair["split"]
        worst = g["worst"]
        assert worst["instruction"] != pair["instruction"] and worst["output"] == pair["output"]
        assert any(p["instruction"] == worst["instruction"] and p["lang"] == pair["lang"] for p in pairs)
        flawed = g["flawed"]
        if flawed["kind"] == "truncated":
            assert pair["output"].startswith(flawed["output"]) and len(flawed["output"]) < len(pair["output"])
        elif flawed["kind"] == "compound":
            assert flawed["instruction"].startswith(pair["instruction"]) and " Also, " in flawed["instruction"]
        else:
            assert flawed["kind"] == "spliced" and flawed["output"] != pair["output"]
    assert {r["kind"] for r in rows if r["grade"] == "flawed"} == {"truncated", "compound", "spliced"}


def test_truncation_ends_at_a_sentence():
    text = "Mvua imenyesha sana. Wakulima wamefurahi. Mavuno yataongezeka mwaka huu kwa kiasi kikubwa sana."
    assert truncate_answer(text) == "Mvua imenyesha sana."


def test_score_parsing_never_guesses():
    assert parse_score("Relevant and complete.\nScore: best") == "best"
    assert parse_score("Partly.\nScore: **Flawed**") == "flawed"
    assert parse_score("score = worst") == "worst"
    assert parse_score("It is fine, I would say good.") is None
    assert parse_score("Score: best ... on reflection, Score: worst") is None


def test_grade_probabilities_are_normalised():
    g = grade_from_logprobs([-1.0, -3.0, -0.5])
    assert g.grade == "worst" and abs(sum(g.probs.values()) - 1) < 1e-9 and g.confidence == g.probs["worst"]


def test_option_logprobs_batched_equals_loglikelihood(llama):
    """The one-pass grading path scores what per-option log-likelihoods score (to llama.cpp's kernel rounding,
    which moves with the batch's token count: ~0.3 nats; a wrong position would be off by nats)."""
    items = candidates(n=4)
    prompts = ScoringEvaluator(llama).prompts(items)
    batched = llama.option_logprobs(prompts, GRADE_TOKENS)
    for prompt, scores in zip(prompts, batched):
        single = llama.loglikelihood([(prompt, o) for o in GRADE_TOKENS])
        assert scores.error is None
        assert scores.logprobs == pytest.approx(single, abs=0.35)


def test_prompted_judge_on_llamacpp_gives_probabilities(llama):
    grades = JudgeEvaluator(llama, "logprobs", max_tokens=24).grade(candidates(n=2))
    for g in grades:
        assert g.error is None and g.grade in ("best", "flawed", "worst")
        assert abs(sum(g.probs.values()) - 1) < 1e-6 and g.reason is not None


def test_garbage_and_backend_errors_are_counted_not_labelled(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_GARBAGE_EVERY", "5")
    monkeypatch.setenv("FAKE_FAIL_EVERY", "7")
    items = candidates()
    judge = JudgeEvaluator(FakeJudge(), scoring="parse")
    stats = label_candidates(items, "sw", judge, tmp_path, iteration=1, batch_size=8, retries=1)
    labels = list(read_jsonl(tmp_path / "sw.labels.jsonl"))
    errors = list(read_jsonl(tmp_path / "sw.errors.jsonl"))
    assert stats["retried"] > 0
    assert {e["reason"] for e in errors} <= {"parse_failure", "backend_error"}
    assert any(e["reason"] == "parse_failure" for e in errors)
    # a garbage answer never became a grade, and every pair is either labelled or set aside with a reason
    garbage = {e["id"] for e in errors if e["reason"] == "parse_failure"}
    assert not garbage & {lb["id"] for lb in labels}
    assert sorted({lb["id"] for lb in labels} | {e["id"] for e in errors}) == sorted(i["id"] for i in items)
    for lb in labels:
        assert lb["grade"] == parse_score(lb["reason"])
    # the next run retries backend errors only; parse failures stay set aside
    monkeypatch.setenv("FAKE_FAIL_EVERY", "0")
    again = label_candidates(items, "sw", JudgeEvaluator(FakeJudge(), scoring="parse"), tmp_path, 1, 8)
    backend_failed = {e["id"] for e in errors if e["reason"] == "backend_error"} - {lb["id"] for lb in labels}
    assert again.get("labelled", 0) + again.get("error:parse_failure", 0) == len(backend_failed)


RUNNER = """
import sys; sys.path.insert(0, {tests!r})
from fake_backend import FakeJudge
from killing import run_and_kill
from test_refine import candidates
from xinstruct.refine.evaluator import JudgeEvaluator
from xinstruct.refine.label import label_candidates
label_candidates(candidates(), "sw", JudgeEvaluator(FakeJudge(), scoring="parse"), {out!r}, 1, batch_size=4)
"""


def test_sigkill_mid_labelling_resumes_without_relabelling(tmp_path):
    script, out, log = tmp_path / "run.py", tmp_path / "labels", tmp_path / "graded.log"
    script.write_text(RUNNER.format(tests=str(Path(__file__).parent), out=str(out)))
    env = {**os.environ, "FAKE_DELAY": "0.3", "FAKE_LOG": str(log)}
    committed = run_and_kill(script, out / "sw.commit.json", env)
    assert 3 <= committed < 10, "killed too late to test resume"
    first = len(log.read_text().splitlines())
    subprocess.run([sys.executable, str(script)], env={**env, "FAKE_DELAY": "0"}, check=True)
    second = len(log.read_text().splitlines()) - first
    labelled = [r["id"] for r in read_jsonl(out / "sw.labels.jsonl")]
    assert len(labelled) == len(set(labelled)) == 40, "lost or duplicated labels"
    # only the uncommitted pairs were graded again: at most the one batch in flight when killed
    assert second == 40 - 4 * committed


def test_keep_rule_quota_and_overrides():
    cands = [{"id": str(i), "instruction": "x", "output": "y"} for i in range(10)]
    probs = [0.9, 0.6, 0.2, 0.1, 0.05, 0.3, 0.4, 0.7, 0.01, 0.02]
    labels = {pair_key(cands[i]): {"grade": "best" if p > 0.5 else "worst",
                                   "probs": {"best": p, "flawed": 0.0, "worst": 1 - p}, "iteration": 1,
                                   "evaluator": "e"} for i, p in enumerate(probs)}
    cfg = RefineConfig(min_best_prob=0.65, languages={"th": LanguageQuota(min_keep=5)})
    kept = select(cands, labels, keep_rule(cfg, "sw"))
    assert [k["id"] for k in kept] == ["0", "7"]
    kept = select(cands, labels, keep_rule(cfg, "th"))
    assert [k["id"] for k in kept] == ["0", "7", "1", "6", "5"]
    assert [k["kept_by"] for k in kept] == ["best", "best", "quota", "quota", "quota"]
    assert keep_rule(cfg, "th").min_best_prob == 0.65


def test_compare_counts_moves():
    prev = {"a": {"grade": "worst"}, "b": {"grade": "best"}, "c": {"grade": "flawed"}, "d": {"grade": "best"}}
    cur = {"a": {"grade": "flawed"}, "b": {"grade": "worst"}, "c": {"grade": "flawed"}, "e": {"grade": "best"}}
    assert compare(prev, cur) | {"cohen_kappa": 0} == {"compared": 3, "agreement": 0.3333, "moved_up": 1,
                                                       "moved_down": 1, "cohen_kappa": 0}


def test_refinement_loop_two_rounds_and_resume(tmp_path, monkeypatch):
    """Orchestration with a stand-in judge: per-round outputs and summaries, final files, finished rounds
    skipped on rerun."""
    from xinstruct.core.stage import RunContext
    from xinstruct.refine.loop import run_refinement

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.setenv("FAKE_GARBAGE_EVERY", "9")
    cfg = RunConfig(output_dir=str(tmp_path), languages=["sw", "th"], refine={
        "iterations": 2, "retrain": "none", "min_keep": 15,
        "evaluator": {"kind": "judge", "scoring": "parse", "model": {"backend": "fake_backend:FakeJudge"}}})
    pairs = [p for lang in ("sw", "th") for p in seed_pairs(lang)]
    write_jsonl(tmp_path / "seed" / "pairs.jsonl", pairs)
    for lang in ("sw", "th"):
        write_jsonl(tmp_path / "candidates" / f"{lang}.candidates.jsonl", candidates(lang))
    ctx = RunContext(cfg, log=lambda *_: None)
    summary = run_refinement(cfg, ctx, "fp", "work")
    assert [r["iteration"] for r in summary["iterations"]] == [1, 2]
    for lang in ("sw", "th"):
        r1 = json.loads((tmp_path / "refine" / "iter-1" / "summary.json").read_text())["languages"][lang]
        assert r1["labelled"] + sum(r1["errors"].values()) == 40 and r1["errors"].get("parse_failure")
        r2 = summary["iterations"][1][lang]
        assert r2["vs_previous"]["agreement"] == 1.0  # the same deterministic judge twice
        final = list(read_jsonl(tmp_path / "refine" / "final" / f"{lang}.jsonl"))
        assert len(final) == summary["final"][lang] >= 15
        assert all(k["grade"] == "best" for k in final if k["kept_by"] == "best")
    marker = tmp_path / "refine" / "iter-2" / "summary.json"
    stamp = marker.stat().st_mtime_ns
    run_refinement(cfg, ctx, "fp", "work")
    assert marker.stat().st_mtime_ns == stamp, "a finished round was redone"


def test_evaluator_config_round_trips():
    cfg = RunConfig(refine={"evaluator": {"kind": "judge", "model": model_config(backend="openai", chat=True)}})
    assert cfg.refine.iterations == 2 and cfg.refine.evaluator.kind == "judge"
