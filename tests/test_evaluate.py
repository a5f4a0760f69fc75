"""The evaluation harness: judge-output parsing, the both-orders rule, aggregation, question sets, caching."""

import json

import pytest

from xinstruct.config import EvaluateConfig, SystemConfig, model_config
from xinstruct.evaluate.judge import JudgeParseError, parse_scores, verdict, wilson
from xinstruct.evaluate.questions import load_question_set, native_questions, spread
from xinstruct.evaluate.stage import aggregate_judgements, run_evaluate
from xinstruct.languages import PAPER_LANGUAGES
from xinstruct.prompts import pairwise_judge_prompt


@pytest.mark.parametrize("output, scores", [
    ("<score1>7</score1><score2>3</score2> Answer 1 is in Swahili.", (7, 3)),
    ("7</score1><score2>3</score2>", (7, 3)),  # the continuation of the prefilled "<score1>"
    ("<score1> 10 </score1>\n<SCORE2>0</SCORE2>", (10, 0)),
    ("<score1>5</score1><score2>5</score2><score1>5</score1>", (5, 5)),  # a repeated, agreeing tag
])
def test_judge_scores_parse(output, scores):
    assert parse_scores(output) == scores


@pytest.mark.parametrize("output, reason", [
    ("Answer 1 is better.", "missing <score1>"),
    ("<score1>7</score1> and the second one is worse", "missing <score2>"),
    ("N</score1><score2>N</score2>", "not an integer"),
    ("<score1>7.5</score1><score2>3</score2>", "not an integer"),
    ("<score1>seven</score1><score2>3</score2>", "not an integer"),
    ("<score1></score1><score2>3</score2>", "not an integer"),
    ("<score1>11</score1><score2>3</score2>", "out of range"),
    ("<score1>4</score1><score2>-1</score2>", "out of range"),
    ("<score1>4</score1><score2>2</score2><score1>9</score1>", "conflicting"),
])
def test_bad_judge_output_is_a_failure_never_a_score(output, reason):
    with pytest.raises(JudgeParseError, match=reason):
        parse_scores(output)


def test_unprefilled_output_must_carry_both_tags():
    with pytest.raises(JudgeParseError, match="missing <score1>"):
        parse_scores("7</score1><score2>3</score2>", prefilled=False)


def test_a_win_needs_both_orders():
    # (scores with the focus answer first, scores with the focus answer second)
    assert verdict((8, 3), (2, 9)) == "win"  # both orders prefer the focus system
    assert verdict((3, 8), (9, 2)) == "loss"  # both prefer the other
    assert verdict((8, 3), (8, 3)) == "tie"  # a judge that prefers whatever comes first
    assert verdict((3, 8), (3, 8)) == "tie"  # ... or second
    assert verdict((5, 5), (2, 9)) == "tie"  # one order undecided
    assert verdict(None, (2, 9)) == "failed"
    assert verdict((8, 3), None) == "failed"


def _judgement(other, lang, qid, order, scores, failure=None):
    return {"other": other, "lang": lang, "set": "vicuna", "question_id": qid, "order": order,
            "scores": scores, "failure": failure}


def test_aggregation_over_hand_made_judgements():
    records = [
        _judgement("base", "sw", "1", "focus_first", [9, 2]), _judgement("base", "sw", "1", "focus_second", [1, 8]),
        _judgement("base", "sw", "2", "focus_first", [9, 2]), _judgement("base", "sw", "2", "focus_second", [9, 2]),
        _judgement("base", "sw", "3", "focus_first", [2, 6]), _judgement("base", "sw", "3", "focus_second", [7, 4]),
        _judgement("base", "th", "1", "focus_first", [6, 6]), _judgement("base", "th", "1", "focus_second", [3, 6]),
        _judgement("base", "th", "2", "focus_first", None, "<score1> is not an integer: 'N'"),
        _judgement("base", "th", "2", "focus_second", [3, 6]),
        _judgement("seed", "sw", "1", "focus_first", [7, 2]), _judgement("seed", "sw", "1", "focus_second", [2, 7]),
    ]
    out = aggregate_judgements(records, ["sw", "th"])
    assert {k: out["base"]["sw"][k] for k in ("win", "tie", "loss", "failed")} == \
        {"win": 1, "tie": 1, "loss": 1, "failed": 0}
    assert {k: out["base"]["th"][k] for k in ("win", "tie", "loss", "failed")} == \
        {"win": 0, "tie": 1, "loss": 0, "failed": 1}
    overall = out["base"]["overall"]
    assert (overall["win"], overall["tie"], overall["loss"], overall["failed"], overall["judged"]) == (1, 2, 1, 1, 4)
    assert overall["win_rate"] == 0.25 and overall["win_ci"][0] < 0.25 < overall["win_ci"][1]
    assert out["base"]["failures"] == {"<score1> is not an integer": 1}
    assert out["seed"]["sw"]["win"] == 1 and "th" not in out["seed"]


def test_wilson_interval():
    lo, hi = wilson(0, 10)  # closed form: z²/(n+z²) = 3.8415/13.8415
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)


def test_judge_prompt_carries_the_protocol():
    prompt = pairwise_judge_prompt("How do I save money?", "Weka akiba kila mwezi.", "Save money.", "Swahili")
    assert "asked for the answer in Swahili" in prompt and "<score1>N</score1><score2>N</score2>" in prompt
    assert prompt.index("Weka akiba") < prompt.index("Save money.") and prompt.endswith("<score1>")


def test_native_questions_cover_the_paper_languages():
    from xinstruct.corpus.langid import LanguageIdentifier

    lid = LanguageIdentifier()
    for lang in PAPER_LANGUAGES:
        questions = native_questions(lang)
        assert len(questions) == 8 and len({q.id for q in questions}) == 8
        in_language = sum(lid.check(q.text, lang, min_prob=0.0).ok for q in questions)
        assert in_language == 8, f"{lang}: {in_language}/8 questions identified as {lang}"


def test_question_sets(tmp_path, shared_data):
    vicuna = load_question_set(str(shared_data / "eval" / "vicuna_bench_question.jsonl"))
    assert len(vicuna) == 80 and vicuna[0].category and vicuna[0].text
    some = load_question_set(str(shared_data / "eval" / "vicuna_bench_question.jsonl"), limit=8)
    assert len({q.category for q in some}) >= 6  # spread over the set, not the first 8 (all "generic")
    assert spread(list(range(10)), 5) == [0, 2, 4, 6, 8] and spread([1, 2], 5) == [1, 2]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 1, "turns": ["ok?"]}\n{"question_id": 2}\n')
    with pytest.raises(ValueError, match="record 2 has no question"):
        load_question_set(str(bad))


def _fake_eval(tmp_path, **kw) -> EvaluateConfig:
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question_id": i, "category": "generic", "turns": [f"Question {i}?"]})
                                 + "\n" for i in range(5)))
    fake = model_config(backend="fake_backend:FakeBackend")
    kw = {"batch_size": 4, **kw}
    return EvaluateConfig(questions=[str(questions)], native_questions=False,
                          systems=[SystemConfig(name="a", model=fake), SystemConfig(name="b", model=fake,
                                                                                    template="assistant")],
                          judge=model_config(backend="fake_backend:FakePositionBiasedJudge"), **kw)


def test_evaluate_caches_answers_and_judgements(tmp_path, monkeypatch):
    """Orchestration with stand-in models: a position-biased judge gives no wins, a rerun makes no calls."""
    log = tmp_path / "calls.log"
    monkeypatch.setenv("FAKE_LOG", str(log))
    cfg = _fake_eval(tmp_path)
    summary = run_evaluate(cfg, ["sw", "th"], tmp_path / "eval", log=lambda *_: None)
    calls = len(log.read_text().splitlines())
    assert calls == 2 * 2 * 5 + 2 * 5 * 2  # answers: systems × langs × questions; judge: langs × questions × 2
    overall = summary["judgements"]["a"]["overall"]  # b (the focus) against a
    assert (overall["win"], overall["tie"], overall["loss"], overall["judged"]) == (0, 10, 0, 10)
    assert summary["checks"]["a"]["english"]["sw"]["n"] == 5
    assert summary["checks"]["a"]["english"]["sw"]["share"] == 0.0  # the fake answers in English
    assert (tmp_path / "eval" / "report" / "index.html").exists()
    again = run_evaluate(cfg, ["sw", "th"], tmp_path / "eval", log=lambda *_: None)
    assert len(log.read_text().splitlines()) == calls, "a rerun called a model"
    assert again["judgements"] == summary["judgements"]
    assert list(summary["judgements"]) == ["a"]


def test_evaluate_counts_failures_and_retries_server_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL_EVERY", "3")  # every 3rd call of a backend fails like a dead server
    monkeypatch.setenv("FAKE_GARBAGE_EVERY", "3")
    cfg = _fake_eval(tmp_path)
    first = run_evaluate(cfg, ["sw"], tmp_path / "eval", log=lambda *_: None)
    assert sum(first["answer_errors"].values()) > 0
    failures = first["judgements"]["a"]["failures"]  # the focus (b, the last system) against a
    assert any(reason.startswith("no answer from") for reason in failures)
    assert failures.get("judge error", 0) > 0
    assert failures.get("<score1> is not an integer", 0) > 0  # garbage judge output: counted, never a score
    t = first["judgements"]["a"]["overall"]
    assert t["judged"] + t["failed"] == 5 and t["win"] == t["loss"] == 0
    monkeypatch.setenv("FAKE_FAIL_EVERY", "0")
    second = run_evaluate(cfg, ["sw"], tmp_path / "eval", log=lambda *_: None)
    assert sum(second["answer_errors"].values()) == 0  # the failed answers were asked again
    assert not any(r.startswith(("no answer", "judge error")) for r in second["judgements"]["a"]["failures"])


def test_evaluate_rejects_bad_systems(tmp_path):
    cfg = _fake_eval(tmp_path, focus="zzz")
    with pytest.raises(ValueError, match="focus 'zzz' is not one of"):
        run_evaluate(cfg, ["sw"], tmp_path / "eval", log=lambda *_: None)


def test_evaluation_report_renders(tmp_path, monkeypatch):
    import re
    import subprocess

    from test_export import CHROMIUM, FLAGS

    if CHROMIUM is None:
        pytest.skip("no Chromium (Debian: apt-get install chromium; .ci/run installs it)")
    cfg = _fake_eval(tmp_path)
    summary = run_evaluate(cfg, ["sw", "th"], tmp_path / "eval", log=lambda *_: None)
    page = tmp_path / "eval" / "report" / "index.html"
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120, check=False).stdout
    images = re.search(r'data-images="(\d+)" data-images-ok="(\d+)"', dom)
    assert images and int(images[1]) == int(images[2]) == 2  # fidelity chart + win/tie/loss chart
    assert "Pairwise judge" in dom and "vs a" in dom and summary["report"] == str(page)


def test_answers_do_not_depend_on_batch_size(tmp_path, monkeypatch):
    """evaluate.batch_size is the commit batch: 1 or 4 model calls a batch, the same answer and judgement files
    (the bundled model's own batch invariance is tests/test_backends.py's)."""
    files = []
    for batch in (1, 4):
        run_evaluate(_fake_eval(tmp_path, batch_size=batch), ["sw"], tmp_path / f"eval{batch}", log=lambda *_: None)
        out = tmp_path / f"eval{batch}"
        files.append({str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.jsonl"))})
    assert files[0] == files[1] and any("answers" in k for k in files[0])
