"""The evaluation report: language fidelity and answer length per system, language and turn (English questions,
sets written in the language, the bundled zero-shot set), single-answer grades, the pairwise judge's win/tie/loss
per language, turn and category with 95% intervals and the length-controlled win rate, bar charts, and a few
answers side by side."""

from __future__ import annotations

import html
import random
from pathlib import Path

from xinstruct.evaluate.judge import wilson
from xinstruct.htmlpage import img, page, pyplot, save, table
from xinstruct.languages import get_language


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _ci(share: float | None, ci: list[float]) -> str:
    return f"{_pct(share)} ({100 * ci[0]:.0f}–{100 * ci[1]:.0f})"


def fidelity_rows(summary: dict, group: str) -> list[list]:
    """One row per system and language, then the system's row over all languages."""
    rows = []
    for system in summary["systems"]:
        checks = summary["checks"].get(system, {}).get(group, {})
        for lang, c in checks.items():
            rows.append([system, lang, c["n"], _ci(c["share"], c["ci"]),
                         ", ".join(f"{k} {v}" for k, v in c["other_languages"].items()) or "–",
                         c["mean_chars"], c["empty"]])
        if len(checks) > 1:
            k, n = sum(c["in_language"] for c in checks.values()), sum(c["n"] for c in checks.values())
            rows.append([system, "all", n, _ci(k / n if n else None, list(wilson(k, n))), "", "", ""])
    return rows


def fidelity_turn_rows(summary: dict, group: str) -> list[list]:
    """Per system and language, the share in the language on each turn (the second turn is where a model loses
    the language most often)."""
    rows = []
    for system in summary["systems"]:
        for lang, c in summary["checks"].get(system, {}).get(group, {}).items():
            for turn, t in c.get("turns", {}).items():
                rows.append([system, lang, turn, t["n"], _ci(t["share"], t["ci"]), t["mean_chars"]])
    return rows


def judgement_rows(summary: dict, part: str | None = None) -> list[list]:
    """Win/tie/loss of the focus system per language and overall; `part` "turns" or "categories": per turn or
    category instead."""
    rows = []
    for other, per in summary["judgements"].items():
        keys = [*summary["languages"], "overall"] if part is None else list(per.get(part, {}))
        for key in keys:
            t = per.get(key) if part is None else per[part][key]
            if t is None:
                continue
            rows.append([f"vs {other}", key, t["win"], t["tie"], t["loss"], t["failed"],
                         _ci(t["win_rate"], t["win_ci"]), _ci(t["loss_rate"], t["loss_ci"])])
    return rows


def length_control_rows(summary: dict) -> list[list]:
    rows = []
    for other, per in summary["judgements"].items():
        for key, lc in per.get("length_controlled", {}).items():
            if lc["n"]:
                rows.append([f"vs {other}", key, lc["n"], _ci(lc["win_rate"], lc["win_rate_ci"]),
                             _ci(lc["lc_win_rate"], lc["lc_win_rate_ci"]), lc["length_coef"], lc["mean_length_diff"]])
    return rows


def _mean(stats: dict) -> str:
    if stats["mean"] is None:
        return "–"
    return f"{stats['mean']:.2f}" + (f" ({stats['ci'][0]:.2f}–{stats['ci'][1]:.2f})" if stats["ci"] else "")


def grade_rows(summary: dict, part: str | None = None) -> list[list]:
    """Mean 1-10 grade per system and language (overall), or per turn / category (`part`)."""
    rows = []
    for system in summary["systems"]:
        per = summary.get("grades", {}).get(system)
        if not per:
            continue
        keys = [*summary["languages"], "overall"] if part is None else list(per.get(part, {}))
        for key in keys:
            stats = per.get(key) if part is None else per[part][key]
            if stats is not None:
                rows.append([system, key, stats["n"], _mean(stats), stats["failed"]])
    return rows


def plot_fidelity(summary: dict, group: str, path: Path) -> Path:
    plt = pyplot()
    langs, systems = summary["languages"], summary["systems"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(langs), 3.4))
    width = 0.8 / max(1, len(systems))
    for i, system in enumerate(systems):
        checks = summary["checks"].get(system, {}).get(group, {})
        shares = [100 * (checks.get(lang, {}).get("share") or 0) for lang in langs]
        ax.bar([j + i * width for j in range(len(langs))], shares, width, label=system)
    ax.set_xticks([j + width * (len(systems) - 1) / 2 for j in range(len(langs))], langs)
    ax.set_ylim(0, 100)
    ax.set_ylabel("% answers in the requested language")
    ax.axhline(90, color="#999", lw=0.8, ls="--")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("English questions" if group == "english" else "questions written in the target language",
                 fontsize=10)
    return save(fig, path)


def plot_judgements(summary: dict, path: Path) -> Path:
    plt = pyplot()
    bars = [(f"vs {other}\n{key}", per[key]) for other, per in summary["judgements"].items()
            for key in [*summary["languages"], "overall"] if key in per]
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * max(1, len(bars)), 3.4))
    for x, (_, t) in enumerate(bars):
        bottom = 0
        for key, colour in (("win", "#2e7d32"), ("tie", "#bdbdbd"), ("loss", "#c62828"), ("failed", "#fff3c4")):
            ax.bar(x, t[key], bottom=bottom, color=colour, edgecolor="#666", lw=0.3,
                   label=key if x == 0 else None)
            bottom += t[key]
    ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=7)
    ax.set_ylabel("questions")
    ax.set_title(f"{summary['focus']}: win / tie / loss (both orders must agree)", fontsize=10)
    ax.legend(fontsize=8)
    return save(fig, path)


def plot_grades(summary: dict, path: Path) -> Path:
    """Mean grade per system, language and turn."""
    plt = pyplot()
    grades = summary.get("grades", {})
    systems = [s for s in summary["systems"] if s in grades]
    turns = sorted({t for s in systems for t in grades[s].get("turns", {})}) or ["1"]
    bars = [(s, t) for s in systems for t in turns]
    fig, ax = plt.subplots(figsize=(1.6 + 0.9 * max(1, len(bars)), 3.4))
    for x, (system, turn) in enumerate(bars):
        stats = grades[system]["turns"].get(turn, {})
        mean = stats.get("mean") or 0
        err = [[mean - stats["ci"][0]], [stats["ci"][1] - mean]] if stats.get("ci") else None
        ax.bar(x, mean, color="#5c6bc0" if turn == "1" else "#9fa8da", yerr=err, capsize=3)
    ax.set_xticks(range(len(bars)), [f"{s}\nturn {t}" for s, t in bars], fontsize=7)
    ax.set_ylim(0, 10)
    ax.set_ylabel("mean grade (1-10), 95% CI")
    ax.set_title("single-answer grades", fontsize=10)
    return save(fig, path)


FIDELITY_HEADER = ["system", "lang", "n", "in language (95% CI)", "others", "mean chars", "empty"]
FIDELITY_TURN_HEADER = ["system", "lang", "turn", "n", "in language (95% CI)", "mean chars"]
JUDGE_HEADER = ["focus vs", "lang", "win", "tie", "loss", "failed", "win (95% CI)", "loss (95% CI)"]
LC_HEADER = ["focus vs", "lang", "judged", "win rate, tie ½ (95% CI)", "length-controlled (95% CI)", "length coef",
             "mean Δ chars"]
GRADE_HEADER = ["system", "lang", "graded", "mean grade (95% CI)", "failed"]
FIDELITY_TITLES = {"english": "Language fidelity: English questions, “Answer in {Language}.”",
                   "target": "Language fidelity: question sets written in the target language",
                   "native": "Zero-shot: the bundled questions written in the target language"}


def console_tables(summary: dict) -> list[tuple[str, list[str], list[list]]]:
    """(title, header, rows) of what `xinstruct evaluate` and `compare` print: fidelity (and per turn), grades per
    turn, the pairwise judge (overall, per turn) and the length-controlled win rate; tables without rows left out."""
    tables = []
    for group, title in FIDELITY_TITLES.items():
        tables += [(title, FIDELITY_HEADER, fidelity_rows(summary, group)),
                   (f"{title}, per turn", FIDELITY_TURN_HEADER, fidelity_turn_rows(summary, group))]
    if summary.get("grades"):
        tables.append((f"single-answer grades 1-10 ({summary['judge_model']}), per turn",
                       ["system", "turn", *GRADE_HEADER[2:]], grade_rows(summary, "turns")))
    if summary["judgements"]:
        pairwise = (f"pairwise judge ({summary['judge_model']}): {summary['focus']} against each other system, both "
                    "orders; a win or loss only when both agree")
        tables += [(pairwise, JUDGE_HEADER, judgement_rows(summary)),
                   ("pairwise, per turn", ["focus vs", "turn", *JUDGE_HEADER[2:]], judgement_rows(summary, "turns")),
                   ("win rate (tie ½) and length-controlled win rate", LC_HEADER, length_control_rows(summary))]
    return [t for t in tables if t[2]]


def write_eval_report(summary: dict, answers: dict[str, dict[tuple, dict]], folder: Path, samples: int = 3,
                      seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    parts = ["<h1>xinstruct evaluation</h1>",
             (f"<p class=muted>systems: {html.escape(', '.join(summary['systems']))}; focus: "
              f"{html.escape(summary['focus'])}; {summary['n_english_questions']} English questions from "
              f"{html.escape(', '.join(summary['questions']) or 'none')}, up to {summary['max_turns']} turns each; "
              f"judge: {html.escape(str(summary['judge_model']))}</p>")]
    for group, title in FIDELITY_TITLES.items():
        rows = fidelity_rows(summary, group)
        if rows:
            chart = plot_fidelity(summary, group, folder / f"fidelity_{group}.png")
            parts += [f"<h2>{html.escape(title)}</h2>", img(chart, f"language fidelity ({group})"),
                      table(FIDELITY_HEADER, rows)]
            if turn_rows := fidelity_turn_rows(summary, group):
                parts += ["<p>Per turn (a later turn is asked after the system's own earlier answers):</p>",
                          table(FIDELITY_TURN_HEADER, turn_rows)]
    if summary.get("grades"):
        parts += [("<h2>Single-answer grades</h2><p>MT-Bench's protocol: the judge grades each answer 1–10 on its "
                   "own, turn 1 alone and turn 2 after the whole conversation, against the question's reference "
                   "answer where it has one. A grade that does not parse counts as failed, never as a grade.</p>"),
                  img(plot_grades(summary, folder / "grades.png"), "mean grades"),
                  table(GRADE_HEADER, grade_rows(summary)),
                  "<p>Per turn:</p>", table(["system", "turn", *GRADE_HEADER[2:]], grade_rows(summary, "turns")),
                  "<p>Per category:</p>", table(["system", "category", *GRADE_HEADER[2:]],
                                                grade_rows(summary, "categories"))]
    if summary["judgements"]:
        parts += [("<h2>Pairwise judge</h2><p>Each question's turn is judged twice, with the answers in both orders; "
                   "the focus system wins only when both orders prefer it, and loses only when both prefer the "
                   "other. A failed judgement (no parseable scores, or a missing answer) counts in neither.</p>"),
                  img(plot_judgements(summary, folder / "judgements.png"), "win tie loss"),
                  table(JUDGE_HEADER, judgement_rows(summary)),
                  "<p>Per turn:</p>", table(["focus vs", "turn", *JUDGE_HEADER[2:]], judgement_rows(summary, "turns")),
                  "<p>Per category:</p>", table(["focus vs", "category", *JUDGE_HEADER[2:]],
                                                judgement_rows(summary, "categories"))]
        if lc_rows := length_control_rows(summary):
            parts += [("<h3>Length-controlled win rate</h3><p>alpaca_eval 2's idea: the preference (win 1, tie ½, "
                       "loss 0) regressed on tanh of the standardised length difference; the length-controlled rate "
                       "is the fitted preference at equal length. A positive length coefficient means the judge "
                       "favoured longer answers. Intervals: 95% bootstrap over judged items.</p>"),
                      table(LC_HEADER, lc_rows)]
        failures = {f"{summary['focus']} vs {o}": per.get("failures", {}) for o, per in summary["judgements"].items()}
        if any(failures.values()):
            parts.append("<p>Failed judgements by reason:</p>" + table(
                ["pair", "reason", "count"], [[p, r, n] for p, f in failures.items() for r, n in f.items()]))
    if summary.get("fastchat"):
        parts.append("<h2>Files</h2><p>FastChat bench folders (question.jsonl, model_answer/, model_judgment/): "
                     + ", ".join(f"<code>{html.escape(f)}</code>" for f in summary["fastchat"])
                     + f"; alpaca_eval-style leaderboard: <code>{html.escape(summary.get('leaderboard', ''))}</code>"
                     "</p>")
    rng = random.Random(seed)
    parts.append("<h2>Sample answers</h2>")
    for lang in summary["languages"]:
        keys = sorted({k[:3] for a in answers.values() for k in a if k[0] == lang})
        parts.append(f"<h3>{html.escape(get_language(lang).name)} ({lang})</h3>")
        for key in rng.sample(keys, min(samples, len(keys))):
            turns = sorted({k[3] for a in answers.values() for k in a if k[:3] == key})
            for turn in turns:
                question = next(a[(*key, turn)]["question"] for a in answers.values() if (*key, turn) in a)
                rows = [[name, a.get((*key, turn), {}).get("answer", a.get((*key, turn), {}).get("error", "–"))]
                        for name, a in answers.items()]
                label = f"{key[1]} {key[2]}" + (f", turn {turn}" if len(turns) > 1 else "")
                parts.append(f"<p><b>{html.escape(label)}:</b> {html.escape(question)}</p>"
                             + table(["system", "answer"], rows).replace("<td>", "<td class=sample>"))
    path = folder / "index.html"
    path.write_text(page("xinstruct evaluation", parts), encoding="utf-8")
    return path
