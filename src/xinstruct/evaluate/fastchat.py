"""Interchange with FastChat's llm_judge and alpaca_eval: answers and judgements in their files' shapes, both ways.

Written per question set and language, as a FastChat bench folder (`<out>/fastchat/<set>-<lang>/`):
- `question.jsonl`: the questions as they were asked (`question_id`, `category`, `turns` with "Answer in
  {Language}." where it was added, `reference` where the set has it);
- `model_answer/<system>.jsonl`: `question_id`, `answer_id`, `model_id`, `choices: [{index, turns}]`, `tstamp`;
- `model_judgment/<judge>_single.jsonl`: `question_id`, `model`, `judge: [judge, prompt name]`, `user_prompt`,
  `judgment`, `score` (-1 where the grade did not parse, as FastChat writes it), `turn`, `tstamp`;
- `model_judgment/<judge>_pair.jsonl`: `question_id`, `model_1` (the focus), `model_2`, `g1_winner` (focus first),
  `g2_winner` (focus second), each "model_1" | "model_2" | "tie" | "error", the prompts and judgments, `turn`.
So FastChat's show_result reads our judgements, its gen_judgment scores our answers, and a FastChat model_answer
file is a system here (`systems[].answers`). `<out>/leaderboard.csv` has alpaca_eval's leaderboard columns.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

from xinstruct.config import SystemConfig
from xinstruct.core.layout import EvaluateLayout
from xinstruct.evaluate.questions import Asked
from xinstruct.io.files import write_jsonl
from xinstruct.languages import answer_suffix

TSTAMP = 0.0  # FastChat's time stamp: a constant, so that the files depend on their inputs alone (reruns are identical)
PROMPT_NAMES = {("single", False): "xinstruct-single-v1", ("single", True): "xinstruct-single-v1-multi-turn",
                ("pair", False): "xinstruct-pair-v1", ("pair", True): "xinstruct-pair-v1-multi-turn"}


def _qid(question_id: str) -> int | str:
    """FastChat's ids are integers; ours are strings (any set's ids)."""
    return int(question_id) if question_id.isdigit() else question_id


# -- reading -------------------------------------------------------------------------------------------------

def read_model_answers(path: Path) -> dict[str, dict]:
    """{question id: record} of a FastChat model_answer file; a line that is not such a record is an error with
    its line number (a benchmark with holes would be scored as if whole)."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                turns = record["choices"][0]["turns"]
                if not isinstance(turns, list) or not all(isinstance(t, str) for t in turns):
                    raise TypeError("choices[0].turns is not a list of strings")
                out[str(record["question_id"])] = record
            except (ValueError, KeyError, IndexError, TypeError) as e:
                raise ValueError(f"{path}:{n}: not a FastChat model_answer record ({type(e).__name__}: {e})") from None
    return out


def answers_from_file(system: SystemConfig, lang: str, asked: list[Asked], upto: int) -> dict[tuple, dict]:
    """A system's answers read from its FastChat model_answer file (`{lang}` in the path: one per language),
    matched to the questions by `question_id`; a question or turn the file lacks is an answer error."""
    path = Path(system.answers.format(lang=lang))
    if not path.is_file():
        raise FileNotFoundError(f"system {system.name}: answers file {path} is missing")
    found = read_model_answers(path)
    out = {}
    for a in asked:
        q = a.question
        record = found.get(q.id)
        turns = record["choices"][0]["turns"] if record else []
        for turn in range(1, min(upto, len(q.turns)) + 1):
            base = {"system": system.name, "lang": lang, "set": q.set, "question_id": q.id, "turn": turn,
                    "category": q.category, "group": a.group, "question": q.turns[turn - 1], "source": str(path)}
            if turn <= len(turns):
                out[(lang, q.set, q.id, turn)] = {**base, "answer": turns[turn - 1].strip(),
                                                  "model": record.get("model_id", system.name),
                                                  "finish_reason": "stop", "n_tokens": 0}
            else:
                out[(lang, q.set, q.id, turn)] = {**base, "error": f"not in {path.name}"}
    return out


def read_judgments(path: Path) -> list[dict]:
    """A FastChat model_judgment file (single or pair), as records."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# -- writing -------------------------------------------------------------------------------------------------

def _asked_turns(a: Asked, lang: str) -> list[str]:
    return [f"{t} {answer_suffix(lang)}" if a.suffix else t for t in a.question.turns]


def bench_folders(layout: EvaluateLayout, asked: dict[str, list[Asked]], answers: dict[str, dict[tuple, dict]],
                  judgements: list[dict], grades: list[dict], judge: str) -> list[Path]:
    """Write every (set, language) as a FastChat bench folder; returns the folders."""
    judge = judge.replace("/", "_")
    folders = []
    for lang, questions in asked.items():
        by_set: dict[str, list[Asked]] = defaultdict(list)
        for a in questions:
            by_set[a.question.set].append(a)
        for set_name, items in by_set.items():
            folder = layout.bench(set_name, lang)
            write_jsonl(layout.bench_questions(folder), [
                {"question_id": _qid(a.question.id), "category": a.question.category,
                 "turns": _asked_turns(a, lang), **({"reference": list(a.question.reference)}
                                                    if a.question.reference else {})} for a in items])
            for system, records in answers.items():
                write_jsonl(layout.bench_answers(folder, system),
                            [_model_answer(system, lang, a, records) for a in items])
            mine = [g for g in grades if g["lang"] == lang and g["set"] == set_name]
            pairs = [j for j in judgements if j["lang"] == lang and j["set"] == set_name]
            if mine:
                write_jsonl(layout.bench_judgments(folder, judge, "single"), [_single(g, judge) for g in mine])
            if pairs:
                write_jsonl(layout.bench_judgments(folder, judge, "pair"), _pairs(pairs, judge))
            folders.append(folder)
    return folders


def _model_answer(system: str, lang: str, a: Asked, records: dict[tuple, dict]) -> dict:
    q = a.question
    turns = [records.get((lang, q.set, q.id, t), {}) for t in range(1, len(q.turns) + 1)]
    return {"question_id": _qid(q.id), "answer_id": (turns[0].get("key") or f"{system}:{q.set}:{q.id}"),
            "model_id": system, "choices": [{"index": 0, "turns": [r.get("answer", "$ERROR$") for r in turns]}],
            "tstamp": TSTAMP}


def _single(g: dict, judge: str) -> dict:
    return {"question_id": _qid(g["question_id"]), "model": g["system"],
            "judge": [judge, PROMPT_NAMES[("single", g["turn"] > 1)]], "user_prompt": g.get("prompt", ""),
            "judgment": g.get("output", g.get("failure") or ""),
            "score": g["rating"] if g.get("rating") is not None else -1, "turn": g["turn"],
            "tstamp": TSTAMP}


def _winner(scores: list[int] | None, first: str, second: str) -> str:
    if not scores:
        return "error"
    return first if scores[0] > scores[1] else second if scores[0] < scores[1] else "tie"


def _pairs(records: list[dict], judge: str) -> list[dict]:
    """One FastChat game per (other, question, turn): g1 shows the focus first, g2 the other first."""
    games: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for r in records:
        games[(r["other"], r["question_id"], r["turn"])][r["order"]] = r
    out = []
    for (other, qid, turn), orders in games.items():
        g1, g2 = orders.get("focus_first", {}), orders.get("focus_second", {})
        any_ = g1 or g2
        out.append({"question_id": _qid(qid), "model_1": any_["focus"], "model_2": other,
                    "g1_winner": _winner(g1.get("scores"), "model_1", "model_2"),
                    "g2_winner": _winner(g2.get("scores"), "model_2", "model_1"),
                    "judge": [judge, PROMPT_NAMES[("pair", turn > 1)]],
                    "g1_user_prompt": g1.get("prompt", ""), "g1_judgment": g1.get("output", g1.get("failure") or ""),
                    "g2_user_prompt": g2.get("prompt", ""), "g2_judgment": g2.get("output", g2.get("failure") or ""),
                    "turn": turn, "tstamp": TSTAMP})
    return out


LEADERBOARD_COLUMNS = ["", "win_rate", "standard_error", "n_wins", "n_wins_base", "n_draws", "n_total",
                       "discrete_win_rate", "mode", "avg_length", "length_controlled_winrate", "lc_standard_error"]


def write_leaderboard(path: Path, summary: dict) -> Path:
    """alpaca_eval's leaderboard columns, one row per (focus vs other, language or overall): rates in percent, a
    tie half a win (`discrete_win_rate` too, as alpaca_eval counts it), standard errors from the bootstrap
    intervals (their width / 3.92)."""
    rows = []
    for other, per in summary["judgements"].items():
        for key in [*summary["languages"], "overall"]:
            t, lc = per.get(key), per.get("length_controlled", {}).get(key)
            if not t or not lc or not lc["n"]:
                continue
            n = t["judged"]
            rows.append([f"{summary['focus']} vs {other} ({key})", round(100 * lc["win_rate"], 2),
                         round(100 * (lc["win_rate_ci"][1] - lc["win_rate_ci"][0]) / 3.92, 2), t["win"], t["loss"],
                         t["tie"], n, round(100 * (t["win"] + t["tie"] / 2) / n, 2), "xinstruct",
                         lc.get("focus_mean_chars"), round(100 * lc["lc_win_rate"], 2),
                         round(100 * (lc["lc_win_rate_ci"][1] - lc["lc_win_rate_ci"][0]) / 3.92, 2)])
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(LEADERBOARD_COLUMNS)
        w.writerows(rows)
    return path
