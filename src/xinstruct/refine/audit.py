"""Read the refinement's decisions: random kept and dropped pairs of a language, side by side, with the grade, the
probability and the evidence behind it. What a person needs to judge Stage II in one screen (`xinstruct audit`,
and the run report's "Audit" section)."""

from __future__ import annotations

import random
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from xinstruct.core.layout import RunLayout
from xinstruct.io.files import read_jsonl
from xinstruct.refine.loop import describe_keep, last_round

# the features worth a glance, in words (the rest are in the files)
SHOWN = {"pmi_vs_references": "vs references/token", "pmi_per_token": "PMI/token",
         "pmi_segment_min": "weakest clause", "half_gap": "halves apart", "pmi": "PMI",
         "cut_mid_sentence": "cut mid-sentence"}


def snippet(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def why(row: dict) -> str:
    probs = row.get("probs") or {}
    grade = row.get("grade", "?")
    head = f"{grade}, P(best) {probs['best']:.2f}" if probs else grade
    decision = row.get("kept_by") or row.get("drop_reason", "")
    feats = row.get("features") or {}
    shown = ", ".join(f"{label} {feats[k]:.2f}" for k, label in SHOWN.items() if k in feats)
    return f"{head}; {decision}" + (f"; {shown}" if shown else "")


def samples(run: Path, lang: str, n: int = 20, seed: int = 0) -> dict[str, list[dict]]:
    """n random kept and n random dropped pairs of the round whose grades stand (refine/final/)."""
    layout = RunLayout(run)
    rng = random.Random(seed)
    out = {}
    for side, path in (("kept", layout.refined_file(lang)), ("dropped", layout.refined_dropped_file(lang))):
        rows = list(read_jsonl(path)) if path.exists() else []
        out[side] = rng.sample(rows, min(n, len(rows)))
        out[f"{side}_total"] = len(rows)
    return out


def cell(row: dict | None) -> str:
    if row is None:
        return ""
    return f"{row['instruction']}\n[dim]{snippet(row['output'])}[/dim]\n[italic]{why(row)}[/italic]"


def audit_table(run: Path, lang: str, n: int = 20, seed: int = 0):
    s = samples(run, lang, n, seed)
    keep = last_round(Path(run)).get("keep")
    table = Table(title=f"{lang}: {len(s['kept'])} of {s['kept_total']} kept pairs and {len(s['dropped'])} of "
                        f"{s['dropped_total']} dropped, at random (seed {seed})", show_lines=True,
                  title_justify="left", caption=describe_keep(keep) if keep else None, caption_justify="left")
    table.add_column("kept", ratio=1)
    table.add_column("dropped", ratio=1)
    for i in range(max(len(s["kept"]), len(s["dropped"]))):
        left = s["kept"][i] if i < len(s["kept"]) else None
        right = s["dropped"][i] if i < len(s["dropped"]) else None
        table.add_row(*(cell({**r, "instruction": escape(r["instruction"]), "output": escape(r["output"])})
                        if r else "" for r in (left, right)))
    return table
