"""Check that an evaluation's FastChat bench folders are what FastChat's llm_judge reads.

    python scripts/check_fastchat.py runs/demo/compare/evaluate/fastchat/mt_bench_question-sw [...]

Every record of question.jsonl, model_answer/*.jsonl and model_judgment/*_{single,pair}.jsonl is checked against
the fields and types FastChat's gen_model_answer.py / gen_judgment.py write. Where FastChat itself is importable
(`pip install fschat`, in any environment: it is not one of xinstruct's dependencies), its own loaders read the
folder too (load_questions, load_model_answers, check_data, load_single_model_judgments,
load_pairwise_model_judgments) and its show_result.py prints the tables from our judgement files.
Exit status 1 when a check fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

QUESTION = {"question_id": (int, str), "category": str, "turns": list}
ANSWER = {"question_id": (int, str), "answer_id": str, "model_id": str, "choices": list, "tstamp": (int, float)}
SINGLE = {"question_id": (int, str), "model": str, "judge": list, "user_prompt": str, "judgment": str,
          "score": (int, float), "turn": int, "tstamp": (int, float)}
PAIR = {"question_id": (int, str), "model_1": str, "model_2": str, "g1_winner": str, "g2_winner": str,
        "judge": list, "g1_user_prompt": str, "g1_judgment": str, "g2_user_prompt": str, "g2_judgment": str,
        "turn": int, "tstamp": (int, float)}
WINNERS = {"model_1", "model_2", "tie", "error"}


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def shape_errors(path: Path, shape: dict, optional: frozenset = frozenset()) -> list[str]:
    """What in the file does not have the record shape: a missing field, an unknown one, a wrong type."""
    errors = []
    for n, r in enumerate(records(path), 1):
        missing, extra = set(shape) - set(r), set(r) - set(shape) - optional
        if missing or extra:
            errors.append(f"{path}:{n}: missing {sorted(missing)}, unknown {sorted(extra)}")
        errors += [f"{path}:{n}: {k} is {type(r[k]).__name__}" for k, kind in shape.items()
                   if k in r and not isinstance(r[k], kind)]
    return errors


def check_folder(folder: Path) -> list[str]:
    """Every shape error in one bench folder, and the answers that do not cover the questions' turns."""
    questions = records(folder / "question.jsonl")
    errors = shape_errors(folder / "question.jsonl", QUESTION, frozenset({"reference"}))
    turns = {q["question_id"]: len(q["turns"]) for q in questions}
    answers = sorted((folder / "model_answer").glob("*.jsonl"))
    if not answers:
        errors.append(f"{folder}: no model_answer files")
    for path in answers:
        errors += shape_errors(path, ANSWER)
        got = {r["question_id"]: r for r in records(path)}
        if set(got) != set(turns):
            errors.append(f"{path}: answers {sorted(got, key=str)} for questions {sorted(turns, key=str)}")
        for qid, r in got.items():
            choice = r["choices"][0] if r["choices"] else {}
            if len(choice.get("turns", [])) != turns.get(qid):
                errors.append(f"{path}: question {qid} has {len(choice.get('turns', []))} turns answered of "
                              f"{turns.get(qid)}")
    for path in sorted((folder / "model_judgment").glob("*_single.jsonl")):
        errors += shape_errors(path, SINGLE)
        errors += [f"{path}: score {r['score']} out of 1-10 and not -1" for r in records(path)
                   if r["score"] != -1 and not 1 <= r["score"] <= 10]
    for path in sorted((folder / "model_judgment").glob("*_pair.jsonl")):
        errors += shape_errors(path, PAIR)
        errors += [f"{path}: winner {r['g1_winner']!r}/{r['g2_winner']!r}" for r in records(path)
                   if {r["g1_winner"], r["g2_winner"]} - WINNERS]
    return errors


def with_fastchat(folder: Path) -> list[str]:
    """Read the folder with FastChat's own loaders and show_result; [] when FastChat is not installed."""
    try:
        from fastchat.llm_judge import common
    except ImportError:
        print("fastchat is not installed here: FastChat's own loaders were not run (pip install fschat)")
        return []
    errors = []
    questions = common.load_questions(str(folder / "question.jsonl"), None, None)
    answers = common.load_model_answers(str(folder / "model_answer"))
    try:
        common.check_data(questions, answers, {}, list(answers), {})
    except AssertionError as e:
        errors.append(f"{folder}: FastChat check_data: {e}")
    for path in sorted((folder / "model_judgment").glob("*.jsonl")):
        load = common.load_single_model_judgments if path.name.endswith("_single.jsonl") else \
            common.load_pairwise_model_judgments
        games = sum(len(v) for v in load(str(path)).values())
        mode = "single" if path.name.endswith("_single.jsonl") else "pairwise-all"
        shown = subprocess.run([sys.executable, "-m", "fastchat.llm_judge.show_result", "--mode", mode,
                                "--input-file", str(path)], capture_output=True, text=True, check=False)
        print(f"FastChat read {path.name}: {games} games; show_result --mode {mode}:\n{shown.stdout}")
        if shown.returncode:
            errors.append(f"{path}: show_result failed: {shown.stderr[-500:]}")
    print(f"FastChat read {folder.name}: {len(questions)} questions, answers of {sorted(answers)}")
    return errors


def main(folders: list[str]) -> int:
    errors = []
    for folder in map(Path, folders):
        found = check_folder(folder)
        print(f"{folder}: {'shapes ok' if not found else f'{len(found)} problems'}")
        errors += found + with_fastchat(folder)
    for e in errors[:50]:
        print(e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
