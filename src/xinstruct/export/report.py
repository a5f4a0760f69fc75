"""The run report: one self-contained HTML page (PNGs inlined, and also written beside it) that shows what a run
did — the funnel per language, length histograms, cluster sizes, a 2-D map of the instruction embeddings coloured
by cluster, diversity against random subsets, and random final samples. Built from the files the stages left."""

from __future__ import annotations

import html
import json
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np

from xinstruct.core.layout import RunLayout
from xinstruct.core.summaries import (
    CorpusSummary,
    Decontamination,
    DiversifySummary,
    GenerateSummary,
    LanguageSelection,
    RoundSummary,
)
from xinstruct.diversify.embed import load_embeddings
from xinstruct.htmlpage import img, page, pyplot, save, table
from xinstruct.io.files import read_jsonl
from xinstruct.languages import get_language
from xinstruct.models.identity import model_label
from xinstruct.refine.audit import samples, snippet, why
from xinstruct.refine.loop import describe_keep, last_round

FUNNEL = ("documents in", "cleaned", "candidates", "graded best", "graded flawed", "graded worst",
          "kept by refinement", "diversify pool", "selected")


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def funnels(out: Path, langs: list[str]) -> dict[str, dict[str, int]]:
    """Counts at each step per language, read from the stage summaries (0 where a stage did not run)."""
    layout = RunLayout(out)
    corpus = CorpusSummary.read(layout.summary("corpus"))
    generated = GenerateSummary.read(layout.summary("generate"))
    standing = RoundSummary.from_dict(last_round(out))
    diversified_all = DiversifySummary.read(layout.diversify_summary)
    counts = {}
    for lang in langs:
        c, g = corpus.language(lang), generated.language(lang)
        graded, diversified = standing.language(lang), diversified_all.language(lang)
        refined = diversified.refined if diversified.refined is not None else graded.kept
        counts[lang] = dict(zip(FUNNEL, (c.read, c.kept, g.candidates, graded.graded("best"),
                                         graded.graded("flawed"), graded.graded("worst"), refined,
                                         diversified.pool, diversified.selected)))
    return counts


def plot_funnels(funnels: dict[str, dict[str, int]], path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(funnels), figsize=(4.2 * len(funnels), 3.6), sharey=True, squeeze=False)
    colors = ["#888", "#888", "#4c72b0", "#55a868", "#dd8452", "#c44e52", "#8172b3", "#8172b3", "#222"]
    for ax, (lang, counts) in zip(axes[0], funnels.items()):
        names, values = list(counts)[::-1], list(counts.values())[::-1]
        ax.barh(names, values, color=colors[::-1])
        for y, v in enumerate(values):
            ax.text(v, y, f" {v}", va="center", fontsize=8)
        ax.set_title(f"{get_language(lang).name} ({lang})")
        ax.set_xlim(0, max(values + [1]) * 1.2)
    return save(fig, path)


def plot_lengths(rows: dict[str, list[dict]], path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(2, len(rows), figsize=(4.2 * len(rows), 5.4), squeeze=False)
    for col, (lang, rs) in enumerate(rows.items()):
        for row, (key, label) in enumerate((("english_instruction", "instruction"), ("output", "output"))):
            ax = axes[row][col]
            ax.hist([len(r[key]) for r in rs] or [0], bins=20, color="#4c72b0" if row == 0 else "#55a868")
            ax.set_title(f"{lang}: {label} length (chars)", fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def plot_clusters(diversified: dict[str, LanguageSelection], path: Path) -> Path:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(diversified), figsize=(4.2 * len(diversified), 3.2), squeeze=False)
    for ax, (lang, s) in zip(axes[0], diversified.items()):
        sizes = np.array(s.cluster_sizes)
        picked = np.array(s.selected_per_cluster)
        order = np.argsort(-sizes) if len(sizes) else []
        x = np.arange(len(sizes))
        ax.bar(x, sizes[order] if len(sizes) else [], color="#ccc", label="pool")
        ax.bar(x, picked[order] if len(picked) else [], color="#8172b3", label="selected")
        ax.set_title(f"{lang}: {len(sizes)} clusters, by size", fontsize=9)
        ax.set_xticks([])
        ax.legend(fontsize=7)
    return save(fig, path)


def plot_map(out: Path, langs: list[str], path: Path, max_points: int = 5000) -> Path:
    """PCA of each language's instruction embeddings to 2-D, coloured by cluster; selected pairs ringed."""
    from sklearn.decomposition import PCA

    layout = RunLayout(out)
    plt = pyplot()
    fig, axes = plt.subplots(1, len(langs), figsize=(4.2 * len(langs), 4.2), squeeze=False)
    for ax, lang in zip(axes[0], langs):
        pool_path = layout.pool_file(lang)
        pool = list(read_jsonl(pool_path)) if pool_path.exists() else []
        ax.set_title(f"{lang}: instructions (PCA), colour = cluster", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel("principal component 1", fontsize=8)
        ax.set_ylabel("principal component 2", fontsize=8)
        if len(pool) < MIN_MAP_POINTS:
            ax.text(0.5, 0.5, f"{len(pool)} pairs: too few for a map", ha="center", transform=ax.transAxes)
            continue
        vectors = load_embeddings(layout.embeddings(lang))[:len(pool)]
        idx = np.random.default_rng(0).permutation(len(pool))[:max_points]
        xy = PCA(n_components=2, random_state=0).fit_transform(vectors[idx])
        clusters = np.array([pool[i]["cluster"] for i in idx])
        chosen = np.array([pool[i]["selected_rank"] is not None for i in idx])
        ax.scatter(xy[:, 0], xy[:, 1], c=clusters % 20, cmap="tab20", s=14, alpha=0.8)
        ax.scatter(xy[chosen, 0], xy[chosen, 1], facecolors="none", edgecolors="black", s=40, linewidths=0.6,
                   label="selected")
        ax.legend(fontsize=7, loc="best")
    return save(fig, path)


MIN_MAP_POINTS = 30  # below this a 2-D map of clusters says nothing


def missing_fonts(langs: list[str]) -> list[str]:
    """Run languages whose script no installed font covers (fontconfig's `fc-list :lang=xx`), on the machine
    building the report: its readers may lack them too. Empty where fontconfig is absent (nothing to say)."""
    if not shutil.which("fc-list"):
        return []
    lacking = []
    for lang in langs:
        if get_language(lang).script == "Latin":
            continue
        found = subprocess.run(["fc-list", f":lang={lang}", "family"], capture_output=True, text=True, check=False)
        if not found.stdout.strip():
            lacking.append(lang)
    return lacking


def notes_section(langs: list[str], provenance: dict | None) -> list[str]:
    """What a reader must know before trusting the page: weak grader languages, decontamination, fonts."""
    p = provenance or {}
    notes = []
    weak = (p.get("refinement") or {}).get("weak_grader_languages") or []
    if weak:
        notes.append(f"The grader is near chance for {', '.join(weak)}: those grades are close to guesses; read "
                     "the audit below before training on them.")
    against = Decontamination.from_dict(p.get("decontaminated_against"))
    sources = [Path(str(s)).name for s in against.sources or []]
    notes.append(f"Decontaminated against {against.questions} evaluation questions ({', '.join(sources)}; "
                 f"word {against.ngram}-grams)." if sources else
                 "Not decontaminated: no evaluation question sets were given (diversify.decontaminate.questions).")
    lacking = missing_fonts(langs)
    if lacking:
        notes.append(f"No font for the script of {', '.join(lacking)} was found where this report was built: if "
                     "those texts show as boxes, install Noto fonts (Debian: fonts-noto-core).")
    return ["<h2>Read first</h2>", *(f"<p class=warn>{html.escape(n)}</p>" for n in notes)]


def write_report(out: Path, langs: list[str], rows: dict[str, list[dict]], folder: Path, samples: int = 5,
                 seed: int = 0, provenance: dict | None = None) -> Path:
    """<folder>/index.html and its PNGs, for the run in `out`; `rows` are the exported rows per language;
    `provenance` (the card's) gives the grader warning and the decontamination status."""
    folder.mkdir(parents=True, exist_ok=True)
    counts = funnels(out, langs)
    div_summary = DiversifySummary.read(RunLayout(out).diversify_summary)
    diversified = {lang: div_summary.language(lang) for lang in langs}
    images = {"funnel": plot_funnels(counts, folder / "funnel.png"),
              "lengths": plot_lengths(rows, folder / "lengths.png"),
              "clusters": plot_clusters(diversified, folder / "clusters.png"),
              "map": plot_map(out, langs, folder / "embedding_map.png")}
    rng = random.Random(seed)
    parts = [f"<h1>xinstruct run report</h1><p class=muted>{html.escape(str(out.resolve()))}</p>"]
    parts += notes_section(langs, provenance)
    parts += ["<h2>Funnel</h2>", img(images["funnel"], "funnel per language"),
              table(["step", *langs], [[step, *(counts[lang][step] for lang in langs)] for step in FUNNEL])]
    dropped = sorted({reason for s in diversified.values() for reason in s.dropped or {}})
    if dropped:
        parts.append("<p>Set aside before drawing:</p>" + table(
            ["reason", *langs], [[r, *((diversified[lang].dropped or {}).get(r, 0) for lang in langs)]
                                 for r in dropped]))
    parts += [("<h2>Diversity</h2><p>Selected set against random subsets of the same size from the same pool "
               "(mean of 20 draws): cluster-coverage entropy as a share of its maximum, and mean pairwise cosine "
               "distance of the instruction embeddings.</p>"),
              table(["lang", "pool", "selected", "clusters", "entropy share", "random", "cosine distance", "random"],
                     [[lang, d.pool, d.selected, d.clusters, f"{d.entropy_fraction:.3f}",
                       f"{d.random_entropy_fraction:.3f}", f"{d.mean_cosine_distance:.4f}",
                       f"{d.random_mean_cosine_distance:.4f}"]
                      for lang in langs for d in [diversified[lang].diversity]]),
              "<h2>Clusters</h2>", img(images["clusters"], "cluster sizes"),
              img(images["map"], "2-D map of instruction embeddings"),
              "<h2>Lengths of the final data</h2>", img(images["lengths"], "length histograms"),
              "<h2>Random final samples</h2>"]
    for lang in langs:
        picked = rng.sample(rows[lang], min(samples, len(rows[lang])))
        parts.append(f"<h3>{html.escape(get_language(lang).name)} ({lang})</h3>")
        parts.append(table_html(["instruction", "output", "grade", "cluster"],
                                [[html.escape(r["instruction"]), in_lang(r["output"], lang), html.escape(str(r["grade"])),
                                  html.escape(str(r["cluster"]))] for r in picked])
                     if picked else "<p class=muted>no pairs</p>")
    parts += audit_section(out, langs, samples, seed)
    parts += manifest_section(_json(RunLayout(out).manifest))
    path = folder / "index.html"
    path.write_text(page("xinstruct run report", parts), encoding="utf-8")
    return path


def audit_section(out: Path, langs: list[str], n: int, seed: int) -> list[str]:
    """Stage II's decisions, as `xinstruct audit` shows them: random kept and dropped pairs side by side, with
    grade, P(best), why, and the evidence."""
    def cell(row):
        if row is None:
            return ""
        return (f"<b>{html.escape(row['instruction'])}</b><br><span class=muted lang={row.get('lang', '')}>"
                f"{html.escape(snippet(row['output']))}</span><br><i>{html.escape(why(row))}</i>")

    keep = RoundSummary.from_dict(last_round(out)).keep_rule
    parts = [("<h2>Audit: what Stage II kept and dropped</h2><p class=muted>Random pairs of the refinement round "
             "whose grades stand (<code>xinstruct audit RUN --lang xx</code> shows more).</p>"
              + (f"<p>{html.escape(describe_keep(keep.to_dict()))}</p>" if keep else ""))]
    for lang in langs:
        s = samples(out, lang, n, seed)
        rows = [[cell(s["kept"][i] if i < len(s["kept"]) else None),
                 cell(s["dropped"][i] if i < len(s["dropped"]) else None)]
                for i in range(max(len(s["kept"]), len(s["dropped"])))]
        parts.append(f"<h3>{html.escape(get_language(lang).name)} ({lang}): {s['kept_total']} kept, "
                     f"{s['dropped_total']} dropped</h3>")
        parts.append(table_html(["kept", "dropped"], rows) if rows else "<p class=muted>no pairs</p>")
    return parts


def in_lang(text: str, lang: str) -> str:
    """Text marked with its language, so the browser picks a font for its script (and reads it aloud right)."""
    return f"<span lang={html.escape(lang)}>{html.escape(text)}</span>"


def table_html(header: list[str], rows: list[list[str]]) -> str:
    """A table whose cells are already HTML (the audit's)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td class=sample>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def manifest_section(manifest: dict) -> list[str]:
    """How the run was made (from manifest.json): stages with fingerprints and times, models, machine."""
    if not manifest:
        return []
    stages = [[name, s.get("fingerprint"), s.get("output_digest"), s.get("seconds")]
              for name, s in manifest.get("stages", {}).items()]

    names = manifest.get("model_names", {})
    models = [[stage, role, m.get("backend"), model_label(m.get("model"), names), model_label(m.get("lora"), names)]
              for stage, roles in manifest.get("models", {}).items() for role, m in roles.items()]
    machine = [[k, v] for k, v in {**manifest.get("machine", {}), "xinstruct": manifest.get("xinstruct_commit"),
                                   **manifest.get("packages", {})}.items()]
    return [("<h2>How it was made</h2><p class=muted>From manifest.json: each stage's fingerprint (its settings, "
             "inputs, models and code) and output digest; model files by sha256.</p>"),
            table(["stage", "fingerprint", "output digest", "seconds"], stages),
            table(["stage", "role", "backend", "model (sha256)", "adapter (sha256)"], models),
            table(["", ""], machine)]
