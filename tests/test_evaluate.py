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
    # answers: systems × langs × questions; pairwise: langs × questions × 2 orders; grades: systems × langs × questions
    assert calls == 2 * 2 * 5 + 2 * 5 * 2 + 2 * 2 * 5
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
    grades = first["grades"]["b"]
    assert grades["overall"]["n"] + grades["overall"]["failed"] == 5 and grades["failures"]  # none guessed
    assert any(r.startswith(("rating is not a number", "no answer from", "judge error")) for r in grades["failures"])
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
    assert images and int(images[1]) == int(images[2]) == 3  # fidelity, win/tie/loss and grade charts
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


# -- multi-turn, single-answer grading, length control, FastChat interchange -----------------------------------

def _two_turn_set(tmp_path, name="mt.jsonl", lang=None, reference=False):
    path = tmp_path / name
    records = [{"question_id": 81 + i, "category": "writing", "turns": [f"Question {i}?", f"Now shorter {i}."]}
               for i in range(3)]
    if reference:
        records[0]["reference"] = ["Ref one.", "Ref two."]
    if lang:
        for r in records:
            r["lang"] = lang
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("template", ["alpaca", "assistant", "none"])
def test_a_second_turn_is_asked_with_the_first_answer(tmp_path, monkeypatch, template):
    """Turn 2's prompt holds turn 1's question and the system's own answer to it, and the language rule on both
    turns; the answers file keeps each turn."""
    prompts = tmp_path / "prompts.jsonl"
    monkeypatch.setenv("FAKE_PROMPTS", str(prompts))
    cfg = EvaluateConfig(questions=[str(_two_turn_set(tmp_path))], native_questions=False, judging=[],
                         systems=[SystemConfig(name="a", model=model_config(backend="fake_backend:PromptRecorder"),
                                               template=template)])
    summary = run_evaluate(cfg, ["sw"], tmp_path / "eval", log=lambda *_: None)
    answers = [json.loads(line) for line in (tmp_path / "eval" / "answers" / "a.answers.jsonl").open()]
    assert [(r["question_id"], r["turn"]) for r in answers] == [(str(q), t) for q in (81, 82, 83) for t in (1, 2)]
    sent = [json.loads(line) for line in prompts.open()]
    assert len(sent) == 6
    for r in answers:
        if r["turn"] == 2:
            first = next(x for x in answers if x["question_id"] == r["question_id"] and x["turn"] == 1)
            assert r["prompt"] in sent and first["answer"] in r["prompt"]
            assert r["prompt"].index(first["prompt"][-40:]) < r["prompt"].index(first["answer"])
            assert r["prompt"].count("Answer in Swahili.") == 2 and r["prompt"].rstrip().endswith(
                {"alpaca": "### Response:", "assistant": "ASSISTANT:", "none": "Answer in Swahili."}[template])
    assert set(summary["checks"]["a"]["english"]["sw"]["turns"]) == {"1", "2"}


def test_a_chat_model_gets_the_conversation_as_messages():
    from xinstruct.answer.systems import ResolvedSystem

    chat = ResolvedSystem("c", model_config(backend="openai", model="m", chat=True), "none")
    messages = chat.turn_prompt(["Hi?", "More?"], ["Jambo."], "sw")
    assert messages == [{"role": "user", "content": "Hi? Answer in Swahili."},
                        {"role": "assistant", "content": "Jambo."},
                        {"role": "user", "content": "More? Answer in Swahili."}]
    assert chat.turn_prompt(["Hi?"], [], "sw") == "Hi? Answer in Swahili."  # turn 1: as single-turn asked it
    text = ResolvedSystem("t", model_config(backend="openai", model="m", chat=True), "assistant")
    assert isinstance(text.turn_prompt(["Hi?", "More?"], ["Jambo."], "sw"), str)


def test_single_grade_prompt_with_and_without_a_reference():
    from xinstruct.prompts import single_grade_prompt

    plain = single_grade_prompt(["What is 2+2?"], ["Nne."], "Swahili")
    assert plain.endswith("Rating: [[") and "[Question]\nWhat is 2+2?" in plain and "Nne." in plain
    assert "Reference" not in plain and "asked for the answer in Swahili" in plain
    ref = single_grade_prompt(["What is 2+2?"], ["Nne."], "Swahili", reference=("4",))
    assert "[The Start of the Reference Answer]\n4\n[The End of the Reference Answer]" in ref
    assert "Compare the answer with the reference answer" in ref
    turn2 = single_grade_prompt(["What is 2+2?", "And 3+3?"], ["Nne.", "Sita."], "Swahili", False, ("4", "6"))
    assert "### User:\nAnd 3+3?\n\n### Assistant:\nSita." in turn2 and "Turn 2:\n6" in turn2
    assert "The user asked in Swahili" in turn2 and "last question" in turn2


@pytest.mark.parametrize("output, rating", [("7]] Good.", 7.0), ("[[10]]", 10.0), ("Fine. Rating: [[3.5]]", 3.5)])
def test_grades_parse(output, rating):
    from xinstruct.evaluate.judge import parse_rating

    assert parse_rating(output) == rating


@pytest.mark.parametrize("output, reason", [("", "missing"), ("11]]", "out of range"), ("7]] or [[8]]", "conflicting"),
                                            ("x]]", "not a number"), ("0]]", "out of range")])
def test_bad_grades_are_failures(output, reason):
    from xinstruct.evaluate.judge import parse_rating

    with pytest.raises(JudgeParseError, match=reason):
        parse_rating(output)


def test_length_controlled_rate_on_synthetic_data():
    """A judge that prefers the longer answer between systems of equal quality: the raw rate is high, the
    length-controlled one near ½. A judge indifferent to length: both near the true 0.7."""
    import math
    import random

    from xinstruct.evaluate.length_control import length_controlled

    rng = random.Random(1)
    verdicts, diffs = [], []
    for _ in range(400):
        d = rng.gauss(150, 200)  # the focus system writes longer answers
        verdicts.append("win" if rng.random() < 1 / (1 + math.exp(-3 * math.tanh(d / 200))) else "loss")
        diffs.append(d)
    biased = length_controlled(verdicts, diffs, resamples=200)
    assert biased["win_rate"] > 0.65 and biased["lc_win_rate_ci"][0] < 0.5 < biased["lc_win_rate_ci"][1]
    assert biased["length_coef"] > 1
    fair = length_controlled(["win" if rng.random() < 0.7 else "loss" for _ in diffs], diffs, resamples=200)
    assert abs(fair["lc_win_rate"] - 0.7) < 0.06 and abs(fair["win_rate"] - 0.7) < 0.06
    assert length_controlled(["tie"] * 10, diffs[:10], resamples=50)["lc_win_rate"] == 0.5
    assert length_controlled([], [])["lc_win_rate"] is None


def test_questions_written_in_the_language(tmp_path, monkeypatch):
    """A set written in Swahili is asked as written (no "Answer in X."), in Swahili only, and judged with the
    language named; the grades carry the reference where the question has one."""
    monkeypatch.setenv("FAKE_PROMPTS", str(tmp_path / "prompts.jsonl"))
    fake = model_config(backend="fake_backend:PromptRecorder")
    cfg = EvaluateConfig(questions=[str(_two_turn_set(tmp_path, "sw.jsonl", reference=True))], question_lang="sw",
                         native_questions=False, systems=[SystemConfig(name="a", model=fake),
                                                          SystemConfig(name="b", model=fake)],
                         judge=model_config(backend="fake_backend:FakePositionBiasedJudge"))
    summary = run_evaluate(cfg, ["sw", "th"], tmp_path / "eval", log=lambda *_: None)
    assert summary["n_target_questions"] == {"sw": 3, "th": 0} and summary["n_english_questions"] == 0
    answers = [json.loads(line) for line in (tmp_path / "eval" / "answers" / "a.answers.jsonl").open()]
    assert {r["lang"] for r in answers} == {"sw"} and all("Answer in" not in r["prompt"] for r in answers)
    assert summary["checks"]["a"]["target"]["sw"]["n"] == 6
    judged = [json.loads(line) for line in (tmp_path / "eval" / "judgements" / "judgements.jsonl").open()]
    assert len(judged) == 3 * 2 * 2 and all("The user asked in Swahili" in r["prompt"] for r in judged)
    grades = [json.loads(line) for line in (tmp_path / "eval" / "grades" / "grades.jsonl").open()]
    assert len(grades) == 2 * 3 * 2 and sum(r["reference"] for r in grades) == 2 * 2
    assert all(r["rating"] is not None for r in grades)
    assert set(summary["grades"]["a"]["turns"]) == {"1", "2"} and summary["judgements"]["a"]["turns"]["2"]["judged"] == 3


def _fastchat_checker():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "check_fastchat.py"
    spec = importlib.util.spec_from_file_location("check_fastchat", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fastchat_answers_round_trip(tmp_path):
    """FastChat-shaped answers written elsewhere are scored as a system; our files have FastChat's shapes."""
    questions = _two_turn_set(tmp_path)
    elsewhere = tmp_path / "gpt.sw.jsonl"
    elsewhere.write_text("".join(json.dumps({"question_id": 81 + i, "answer_id": f"x{i}", "model_id": "gpt",
                                             "choices": [{"index": 0, "turns": [f"Jibu {i}.", f"Fupi {i}."]}],
                                             "tstamp": 1.0}) + "\n" for i in range(2)))  # question 83 missing
    fake = model_config(backend="fake_backend:FakeBackend")
    cfg = EvaluateConfig(questions=[str(questions)], native_questions=False,
                         systems=[SystemConfig(name="gpt", answers=str(tmp_path / "gpt.{lang}.jsonl")),
                                  SystemConfig(name="ours", model=fake)],
                         judge=model_config(backend="fake_backend:FakePositionBiasedJudge"))
    summary = run_evaluate(cfg, ["sw"], tmp_path / "eval", log=lambda *_: None)
    assert summary["answer_errors"]["gpt"] == 2  # question 83, both turns: not in the file
    assert summary["grades"]["gpt"]["overall"]["n"] == 4 and summary["grades"]["gpt"]["failures"] == {
        "no answer from gpt": 2}
    bench = tmp_path / "eval" / "fastchat" / "mt-sw"
    assert summary["fastchat"] == ["fastchat/mt-sw"]
    checker = _fastchat_checker()
    assert checker.check_folder(bench) == []  # FastChat's record shapes, every question's turns answered
    asked = checker.records(bench / "question.jsonl")
    assert asked[0]["turns"] == ["Question 0? Answer in Swahili.", "Now shorter 0. Answer in Swahili."]
    ours = checker.records(bench / "model_answer" / "ours.jsonl")
    assert [len(r["choices"][0]["turns"]) for r in ours] == [2, 2, 2]
    gpt = checker.records(bench / "model_answer" / "gpt.jsonl")
    assert gpt[0]["choices"][0]["turns"] == ["Jibu 0.", "Fupi 0."] and gpt[2]["choices"][0]["turns"] == [
        "$ERROR$", "$ERROR$"]  # FastChat's own mark of an answer it could not get
    single = checker.records(bench / "model_judgment" / "bundled_single.jsonl")
    assert {(r["model"], r["turn"]) for r in single} == {(m, t) for m in ("gpt", "ours") for t in (1, 2)}
    assert sum(r["score"] == -1 for r in single) == 2
    pairs = checker.records(bench / "model_judgment" / "bundled_pair.jsonl")
    # the position-biased judge prefers whichever answer it sees first: model_1 in g1, model_2 in g2
    assert {(r["g1_winner"], r["g2_winner"]) for r in pairs if r["question_id"] != 83} == {("model_1", "model_2")}
    assert {(r["g1_winner"], r["g2_winner"]) for r in pairs if r["question_id"] == 83} == {("error", "error")}
    from xinstruct.evaluate.fastchat import read_judgments, read_model_answers

    assert read_model_answers(bench / "model_answer" / "ours.jsonl")["81"]["choices"][0]["turns"] == [
        r["answer"] for r in map(json.loads, (tmp_path / "eval" / "answers" / "ours.answers.jsonl").open())
        if r["question_id"] == "81"]
    assert len(read_judgments(bench / "model_judgment" / "bundled_pair.jsonl")) == 6
    board = (tmp_path / "eval" / "leaderboard.csv").read_text().splitlines()
    assert board[0].startswith(",win_rate,standard_error,n_wins") and "ours vs gpt (overall)" in board[-1]
    (bench / "model_answer" / "ours.jsonl").write_text(json.dumps({**ours[0], "choices": []}) + "\n")
    assert len(checker.check_folder(bench)) == 2  # the checker can fail: questions missing, a record without turns
    elsewhere.write_text('{"question_id": 81, "choices": "no"}\n')
    with pytest.raises(ValueError, match=r"gpt.sw.jsonl:1: not a FastChat model_answer record"):
        run_evaluate(cfg, ["sw"], tmp_path / "eval2", log=lambda *_: None)
