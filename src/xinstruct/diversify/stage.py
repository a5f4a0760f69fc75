"""Stage III: from the refined pairs of each language, draw a diverse set of up to the target size.

pool (refine/final/<lang>.jsonl) → drop other grades, contaminated and duplicate instructions → embed the
English instructions (shards on disk) → spherical k-means → round-robin draw across clusters.

Writes, per language, into <run>/diversify/: <lang>.pool.jsonl (every pool pair with its cluster, distance to
the centroid and draw rank or null), <lang>.selected.jsonl (in draw order), <lang>.dropped.jsonl (with reasons)
and embeddings/<lang>/ (shards).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from xinstruct.config import DiversifyConfig
from xinstruct.core.stage import Stage, StageResult
from xinstruct.diversify.cluster import default_k, kmeans
from xinstruct.diversify.decontaminate import Decontaminator, load_questions, words
from xinstruct.diversify.diversity import diversity_report
from xinstruct.diversify.embed import embed_to_disk, embedder_id, load_embeddings
from xinstruct.diversify.select import round_robin
from xinstruct.io.files import read_jsonl, write_json, write_jsonl


def build_pool(records: list[dict], grades: list[str], decontaminator: Decontaminator | None,
               dedup: bool) -> tuple[list[dict], list[dict]]:
    """(pool, dropped): pairs of an accepted grade, not contaminated and, with `dedup`, one per instruction
    (the better graded, then higher P(best), is kept). Each dropped pair carries `drop_reason`."""
    rank = {g: i for i, g in enumerate(grades)}
    ordered = sorted(records, key=lambda r: (rank.get(r.get("grade"), len(rank)),
                                             -(r.get("probs") or {}).get("best", 0.0), str(r.get("id"))))
    pool, dropped, seen = [], [], {}
    for r in ordered:
        if r.get("grade") not in rank:
            dropped.append({**r, "drop_reason": f"grade:{r.get('grade')}"})
            continue
        match = decontaminator.match(r["instruction"]) if decontaminator else None
        if match:
            dropped.append({**r, "drop_reason": "contaminated", "question_id": match.question_id,
                            "overlap": match.overlap})
            continue
        key = " ".join(words(r["instruction"]))
        if dedup and key in seen:
            dropped.append({**r, "drop_reason": "duplicate_instruction", "duplicate_of": seen[key]})
            continue
        seen[key] = r.get("id")
        pool.append(r)
    return pool, dropped


def diversify_language(records: list[dict], lang: str, cfg: DiversifyConfig, folder: Path,
                       decontaminator: Decontaminator | None = None, model_loader: Callable | None = None,
                       on_progress: Callable[[int], None] | None = None) -> dict:
    pool, dropped = build_pool(records, cfg.grades, decontaminator, cfg.dedup_instructions)
    write_jsonl(folder / f"{lang}.dropped.jsonl", dropped)
    summary = {"refined": len(records), "dropped": dict(Counter(d["drop_reason"] for d in dropped)),
               "pool": len(pool), "target": cfg.target(lang)}
    if not pool:
        write_jsonl(folder / f"{lang}.pool.jsonl", [])
        write_jsonl(folder / f"{lang}.selected.jsonl", [])
        return {**summary, "selected": 0, "clusters": 0}
    started = time.perf_counter()
    vectors, computed = embed_to_disk([r["instruction"] for r in pool], folder / "embeddings" / lang,
                                      cfg.embedder, model_loader, on_progress)
    embedded = time.perf_counter()
    k = min(cfg.n_clusters or default_k(cfg.target(lang), len(pool)), len(pool))
    _, labels, distances = kmeans(vectors, k, cfg.kmeans_iterations, cfg.seed)
    clustered = time.perf_counter()
    grade_rank = np.array([cfg.grades.index(r["grade"]) for r in pool])
    order = round_robin(labels, distances, grade_rank, cfg.target(lang))
    rank_of = {i: n for n, i in enumerate(order)}
    for i, r in enumerate(pool):
        r.update(cluster=int(labels[i]), centroid_distance=round(float(distances[i]), 6),
                 selected_rank=rank_of.get(i))
    write_jsonl(folder / f"{lang}.pool.jsonl", pool)
    write_jsonl(folder / f"{lang}.selected.jsonl", (pool[i] for i in order))
    sizes = np.bincount(labels, minlength=k)
    picked = np.bincount(labels[order], minlength=k) if order else np.zeros(k, int)
    return {**summary, "selected": len(order), "clusters": k, "cluster_sizes": sizes.tolist(),
            "selected_per_cluster": picked.tolist(), "embedded_this_run": computed,
            "diversity": diversity_report(vectors, labels, k, np.array(order, dtype=np.int64), seed=cfg.seed),
            "seconds": {"embed": round(embedded - started, 2), "kmeans": round(clustered - embedded, 2)}}


def load_decontaminator(cfg: DiversifyConfig) -> Decontaminator | None:
    questions = [q for source in cfg.decontaminate.questions for q in load_questions(source)]
    return Decontaminator(questions, cfg.decontaminate.ngram) if questions else None


def refined_path(out: Path, lang: str) -> Path:
    return out / "refine" / "final" / f"{lang}.jsonl"


def run_diversify(out: Path, languages: list[str], cfg: DiversifyConfig,
                  on_language: Callable | None = None) -> dict:
    """Every language in turn; returns the stage summary (also what `xinstruct diversity` recomputes)."""
    missing = [lang for lang in languages if not refined_path(out, lang).exists()]
    if missing:
        raise FileNotFoundError(f"no refined pairs for {', '.join(missing)} under {out / 'refine' / 'final'}: "
                                "run `xinstruct refine` first")
    folder = out / "diversify"
    decontaminator = load_decontaminator(cfg)
    summary: dict = {"embedder": embedder_id(cfg.embedder),
                     "decontaminated_against": {"sources": cfg.decontaminate.questions,
                                                "questions": len(decontaminator) if decontaminator else 0,
                                                "ngram": cfg.decontaminate.ngram},
                     "languages": {}}
    for lang in languages:
        records = list(read_jsonl(refined_path(out, lang)))
        progress = on_language(lang, len(records)) if on_language else None
        summary["languages"][lang] = diversify_language(records, lang, cfg, folder, decontaminator,
                                                        on_progress=progress)
    write_summary(folder, summary)
    return summary


def write_summary(folder: Path, summary: dict) -> None:
    write_json(folder / "summary.json", summary)


def measure_diversity(out: Path, lang: str, draws: int = 20, seed: int = 0) -> dict:
    """Recompute a language's diversity figures from the files the stage left (pool, clusters, embeddings).
    k is the stage's own (summary.json), not the highest cluster seen: a cluster may have ended up empty."""
    pool = list(read_jsonl(out / "diversify" / f"{lang}.pool.jsonl"))
    if not pool:
        return {"pool": 0, "selected": 0}
    k = json.loads((out / "diversify" / "summary.json").read_text())["languages"][lang]["clusters"]
    vectors = load_embeddings(out / "diversify" / "embeddings" / lang)[:len(pool)]
    labels = np.array([r["cluster"] for r in pool])
    selected = np.array([i for i, r in enumerate(pool) if r["selected_rank"] is not None], dtype=np.int64)
    return diversity_report(vectors, labels, k, selected, draws, seed)


class DiversifyStage(Stage):
    name = "diversify"
    title = ("embed the refined English instructions, k-means per language, draw up to the target across clusters "
             "(round-robin, nearest to the centroid and better grades first), after n-gram decontamination")
    needs = ("refine",)
    config = ("languages", "diversify")
    code = ("diversify", "io/questions.py")

    def inputs(self) -> dict:
        from xinstruct.core.fingerprint import path_identity

        embedder = self.cfg.diversify.embedder.model
        return {"embedder": embedder_id(self.cfg.diversify.embedder) if embedder == "bundled"
                else path_identity(embedder),
                "questions": [path_identity(q) for q in self.cfg.diversify.decontaminate.questions]}

    def outputs(self) -> list[Path]:
        return [self.layout.selected_file(lang) for lang in self.cfg.languages] + [self.layout.diversify /
                                                                                   "summary.json"]

    def check(self) -> list[str]:
        from xinstruct.corpus.stage import missing

        return [f"decontamination question set not found: {m}"
                for q in self.cfg.diversify.decontaminate.questions if (m := missing(q))]

    def run(self) -> StageResult:
        summary = run_diversify(self.cfg.out, self.cfg.languages, self.cfg.diversify,
                                lambda lang, n: self.ctx.progress(f"embed {lang}", n))
        for lang, s in summary["languages"].items():
            d = s.get("diversity", {})
            self.ctx.log(f"  {lang}: {s['refined']} refined → pool {s['pool']} (set aside {s['dropped'] or 'none'}) "
                         f"→ {s['selected']} selected from {s['clusters']} clusters; entropy share "
                         f"{d.get('entropy_fraction', 0):.3f} (random {d.get('random_entropy_fraction', 0):.3f})")
        return StageResult(summary)
