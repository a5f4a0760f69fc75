"""The evaluation report: language fidelity and answer length per system and language (English questions and the
native zero-shot set), the judge's win/tie/loss with 95% intervals, bar charts, and a few answers side by side."""

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


def judgement_rows(summary: dict) -> list[list]:
    rows = []
    for other, per in summary["judgements"].items():
        for key in [*summary["languages"], "overall"]:
            t = per.get(key)
            if t is None:
                continue
            rows.append([f"vs {other}", key, t["win"], t["tie"], t["loss"], t["failed"],
                         _ci(t["win_rate"], t["win_ci"]), _ci(t["loss_rate"], t["loss_ci"])])
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


FIDELITY_HEADER = ["system", "lang", "n", "in language (95% CI)", "others", "mean chars", "empty"]
JUDGE_HEADER = ["focus vs", "lang", "win", "tie", "loss", "failed", "win (95% CI)", "loss (95% CI)"]


def write_eval_report(summary: dict, answers: dict[str, dict[tuple, dict]], folder: Path, samples: int = 3,
                      seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    parts = ["<h1>xinstruct evaluation</h1>",
             (f"<p class=muted>systems: {html.escape(', '.join(summary['systems']))}; focus: "
             f"{html.escape(summary['focus'])}; {summary['n_english_questions']} English questions from "
             f"{html.escape(', '.join(summary['questions']) or 'none')}; judge: "
             f"{html.escape(str(summary['judge_model']))}</p>")]
    for group, title in (("english", "Language fidelity: English questions, “Answer in {Language}.”"),
                         ("native", "Zero-shot: questions written in the target language")):
        rows = fidelity_rows(summary, group)
        if rows:
            chart = plot_fidelity(summary, group, folder / f"fidelity_{group}.png")
            parts += [f"<h2>{html.escape(title)}</h2>", img(chart, f"language fidelity ({group})"),
                      table(FIDELITY_HEADER, rows)]
    if summary["judgements"]:
        parts += [("<h2>Pairwise judge</h2><p>Each question is judged twice, with the answers in both orders; the "
                  "focus system wins only when both orders prefer it, and loses only when both prefer the other. "
                  "A failed judgement (no parseable scores, or a missing answer) counts in neither.</p>"),
                  img(plot_judgements(summary, folder / "judgements.png"), "win tie loss"),
                  table(JUDGE_HEADER, judgement_rows(summary))]
        failures = {f"{summary['focus']} vs {o}": per.get("failures", {}) for o, per in summary["judgements"].items()}
        if any(failures.values()):
            parts.append("<p>Failed judgements by reason:</p>" + table(
                ["pair", "reason", "count"], [[p, r, n] for p, f in failures.items() for r, n in f.items()]))
    rng = random.Random(seed)
    parts.append("<h2>Sample answers</h2>")
    for lang in summary["languages"]:
        keys = sorted({k for a in answers.values() for k in a if k[0] == lang})
        parts.append(f"<h3>{html.escape(get_language(lang).name)} ({lang})</h3>")
        for key in rng.sample(keys, min(samples, len(keys))):
            question = next(a[key]["question"] for a in answers.values() if key in a)
            rows = [[name, a.get(key, {}).get("answer", a.get(key, {}).get("error", "–"))]
                    for name, a in answers.items()]
            parts.append(f"<p><b>{html.escape(key[1])} {html.escape(key[2])}:</b> {html.escape(question)}</p>"
                         + table(["system", "answer"], rows).replace("<td>", "<td class=sample>"))
    path = folder / "index.html"
    path.write_text(page("xinstruct evaluation", parts), encoding="utf-8")
    return path
