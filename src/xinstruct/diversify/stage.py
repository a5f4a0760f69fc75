"""Stage III: from the refined pairs of each language, draw a diverse set of up to the target size.

pool (refine/final/<lang>.jsonl) → drop other grades, contaminated and duplicate instructions → embed the
English instructions (sharded tasks, each with its cache of vectors by text: diversify/embed.py) → spherical
k-means → round-robin draw.

Writes, per language, into <run>/diversify/: <lang>.pool.jsonl (every pool pair with its cluster, distance to
the centroid and draw rank or null), <lang>.selected.jsonl (in draw order), <lang>.dropped.jsonl (with reasons)
and embeddings/<lang>/vectors.npy (pool order). While it runs: work/<lang>.pool.jsonl (the pool the embedding
tasks read), cache/<task>.sqlite (vectors by text, kept for reruns), tasks/ (progress), logs/ (executors).

The vectors are gathered in pool order from the task caches, so the k-means, the draw and every file are the
same however many tasks embedded the pool; the pool records are streamed from disk, never held twice.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from xinstruct.config import DiversifyConfig
from xinstruct.core.fingerprint import config_section, digest, path_identity, source_digest
from xinstruct.core.layout import RunLayout
from xinstruct.core.stage import Stage, StageResult
from xinstruct.core.tasks import (
    FileProgress,
    ModelSlot,
    ShardCaches,
    Task,
    read_progress,
    run_tasks,
    shards_per_language,
    task_list,
    write_progress,
)
from xinstruct.corpus.stage import missing
from xinstruct.diversify.cluster import default_k, kmeans
from xinstruct.diversify.decontaminate import Decontaminator, load_questions, words
from xinstruct.diversify.diversity import diversity_report
from xinstruct.diversify.embed import embed_task, gather, load_embeddings, save_vectors, text_key
from xinstruct.diversify.select import instruction_form, round_robin
from xinstruct.io.cache import BlobCache
from xinstruct.io.files import read_jsonl, write_json, write_jsonl
from xinstruct.models import embedder as sentence_embedder  # its load_embedder looked up at call time: tests swap it
from xinstruct.models.identity import embedder_id, embedder_identity


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


def record_key(r: dict) -> str:
    """A pool record's identity, which decides its embedding task: its id, else its instruction."""
    return str(r["id"]) if r.get("id") is not None else text_key(r["instruction"])


def pool_items(folder: Path, lang: str) -> Iterator[tuple[str, str]]:
    """(record key, instruction) of the language's pool, in pool order, streamed from the work file."""
    for r in read_jsonl(RunLayout.pool_work_in(folder, lang)):
        yield record_key(r), r["instruction"]


def embedder_fingerprint(cfg: DiversifyConfig) -> str:
    """What a vector depends on: the embedder (its files), its settings, the embedding code; not the pool, k or
    target, so changing those embeds nothing again."""
    return digest({"embedder": embedder_identity(cfg.embedder), "settings": config_section(cfg, "embedder"),
                   "code": source_digest(("diversify/embed.py", "models/embedder.py"))})


def prepare_language(records: list[dict], lang: str, cfg: DiversifyConfig, folder: Path,
                     decontaminator: Decontaminator | None = None) -> dict:
    """Build the pool; write the dropped pairs, and the pool for the embedding tasks to read. Returns counts."""
    pool, dropped = build_pool(records, cfg.grades, decontaminator, cfg.dedup_instructions)
    write_jsonl(RunLayout.dropped_in(folder, lang), dropped)
    write_jsonl(RunLayout.pool_work_in(folder, lang), pool)
    return {"refined": len(records), "dropped": dict(Counter(d["drop_reason"] for d in dropped)),
            "pool": len(pool), "target": cfg.target(lang)}


def embed_language_task(task: Task, folder: Path, cfg: DiversifyConfig, fingerprint: str, get_model: Callable,
                        on_progress: Callable[[int], None] | None = None) -> dict:
    """Embed the pool records of `task` that its cache (or a cache of another split) lacks."""
    started = time.perf_counter()
    stats = embed_task(pool_items(folder, task.lang), RunLayout.task_cache(folder, task.name), fingerprint,
                       cfg.embedder, get_model, task, on_progress)
    return {**stats, "seconds": round(time.perf_counter() - started, 2)}


def finish_language(lang: str, cfg: DiversifyConfig, folder: Path, shards: int, counts: dict,
                    embedding: dict | None = None) -> dict:
    """Gather the vectors in pool order from the task caches, cluster, draw, write the pool and the selection."""
    embedding = embedding or {}
    n = counts["pool"]
    if not n:
        write_jsonl(RunLayout.pool_in(folder, lang), [])
        write_jsonl(RunLayout.selected_in(folder, lang), [])
        RunLayout.pool_work_in(folder, lang).unlink(missing_ok=True)
        return {**counts, "selected": 0, "clusters": 0}
    started = time.perf_counter()
    with ShardCaches(lambda s: RunLayout.task_cache(folder, Task(lang, s, shards).name), shards, BlobCache) as caches:
        vectors = gather(pool_items(folder, lang), n, caches.of)
    save_vectors(vectors, RunLayout.embeddings_in(folder, lang))
    rows = [(cfg.grades.index(r["grade"]), instruction_form(r["instruction"]))
            for r in read_jsonl(RunLayout.pool_work_in(folder, lang))]
    grade_rank = np.array([g for g, _ in rows])
    gathered = time.perf_counter()
    k = min(cfg.n_clusters or default_k(cfg.target(lang), n), n)
    _, labels, distances = kmeans(vectors, k, cfg.kmeans_iterations, cfg.seed)
    clustered = time.perf_counter()
    order = round_robin(labels, distances, grade_rank, cfg.target(lang), [f for _, f in rows], cfg.max_form_share)
    rank_of = {i: rank for rank, i in enumerate(order)}
    selected: dict[int, dict] = {}

    def annotated():
        for i, r in enumerate(read_jsonl(RunLayout.pool_work_in(folder, lang))):
            r.update(cluster=int(labels[i]), centroid_distance=round(float(distances[i]), 6),
                     selected_rank=rank_of.get(i))
            if i in rank_of:
                selected[i] = r
            yield r

    write_jsonl(RunLayout.pool_in(folder, lang), annotated())
    write_jsonl(RunLayout.selected_in(folder, lang), (selected[i] for i in order))
    RunLayout.pool_work_in(folder, lang).unlink()
    sizes = np.bincount(labels, minlength=k)
    picked = np.bincount(labels[order], minlength=k) if order else np.zeros(k, int)
    return {**counts, "selected": len(order), "clusters": k, "cluster_sizes": sizes.tolist(),
            "selected_per_cluster": picked.tolist(), "embedded_this_run": embedding.get("embedded", 0),
            "diversity": diversity_report(vectors, labels, k, np.array(order, dtype=np.int64), seed=cfg.seed),
            "seconds": {"embed": round(embedding.get("seconds", 0.0), 2),
                        "gather": round(gathered - started, 2), "kmeans": round(clustered - gathered, 2)}}


def diversify_language(records: list[dict], lang: str, cfg: DiversifyConfig, folder: Path,
                       decontaminator: Decontaminator | None = None, model_loader: Callable | None = None,
                       on_progress: Callable[[int], None] | None = None) -> dict:
    """One language in this process, as one task (the stage splits the embedding over its executor)."""
    counts = prepare_language(records, lang, cfg, folder, decontaminator)
    embedding = {}
    if counts["pool"]:
        load = model_loader or sentence_embedder.load_embedder
        embedding = embed_language_task(Task(lang), folder, cfg, embedder_fingerprint(cfg),
                                        lambda: load(cfg.embedder), on_progress)
    return finish_language(lang, cfg, folder, 1, counts, embedding)


def load_decontaminator(cfg: DiversifyConfig) -> Decontaminator | None:
    questions = [q for source in cfg.decontaminate.questions for q in load_questions(source)]
    return Decontaminator(questions, cfg.decontaminate.ngram) if questions else None


def check_refined(out: Path, languages: list[str]) -> None:
    layout = RunLayout(out)
    missing = [lang for lang in languages if not layout.refined_file(lang).exists()]
    if missing:
        raise FileNotFoundError(f"no refined pairs for {', '.join(missing)} under {layout.refined}: "
                                "run `xinstruct refine` first")


def summary_header(cfg: DiversifyConfig, decontaminator: Decontaminator | None) -> dict:
    return {"embedder": embedder_id(cfg.embedder),
            "decontaminated_against": {"sources": cfg.decontaminate.questions,
                                       "questions": len(decontaminator) if decontaminator else 0,
                                       "ngram": cfg.decontaminate.ngram},
            "languages": {}}


def run_diversify(out: Path, languages: list[str], cfg: DiversifyConfig,
                  on_language: Callable | None = None, model_loader: Callable | None = None) -> dict:
    """Every language in turn, in this process; returns the stage summary. The embedder is loaded once, and only
    if some text is not in the caches yet."""
    check_refined(out, languages)
    layout = RunLayout(out)
    folder = layout.diversify
    decontaminator = load_decontaminator(cfg)
    summary = summary_header(cfg, decontaminator)
    with ModelSlot(model_loader or sentence_embedder.load_embedder) as slot:
        for lang in languages:
            records = list(read_jsonl(layout.refined_file(lang)))
            progress = on_language(lang, len(records)) if on_language else None
            summary["languages"][lang] = diversify_language(records, lang, cfg, folder, decontaminator,
                                                            lambda c: slot.get("embedder", c), progress)
    write_summary(folder, summary)
    return summary


def write_summary(folder: Path, summary: dict) -> None:
    write_json(RunLayout.summary_in(folder), summary)


def measure_diversity(out: Path, lang: str, draws: int = 20, seed: int = 0) -> dict:
    """Recompute a language's diversity figures from the files the stage left (pool, clusters, embeddings).
    k is the stage's own (summary.json), not the highest cluster seen: a cluster may have ended up empty."""
    layout = RunLayout(out)
    pool = list(read_jsonl(layout.pool_file(lang)))
    if not pool:
        return {"pool": 0, "selected": 0}
    k = json.loads(layout.diversify_summary.read_text())["languages"][lang]["clusters"]
    vectors = np.asarray(load_embeddings(layout.embeddings(lang))[:len(pool)])
    labels = np.array([r["cluster"] for r in pool])
    selected = np.array([i for i, r in enumerate(pool) if r["selected_rank"] is not None], dtype=np.int64)
    return diversity_report(vectors, labels, k, selected, draws, seed)


class DiversifyStage(Stage):
    name = "diversify"
    title = ("embed the refined English instructions, k-means per language, draw up to the target across clusters "
             "(round-robin, nearest to the centroid and better grades first), after n-gram decontamination")
    needs = ("refine",)
    config = ("languages", "diversify")
    code = ("diversify", "models/embedder.py", "io/questions.py", "io/cache.py", "core/tasks.py")
    start_method = "spawn"  # local workers run torch, whose OpenMP pool does not survive fork (core/executors.py)

    @property
    def task_folder(self) -> Path:
        return self.layout.diversify

    def inputs(self) -> dict:
        return {"embedder": embedder_identity(self.cfg.diversify.embedder),
                "questions": [path_identity(q) for q in self.cfg.diversify.decontaminate.questions]}

    def outputs(self) -> list[Path]:
        return [self.layout.selected_file(lang) for lang in self.cfg.languages] + [self.layout.diversify_summary]

    def clear(self) -> None:
        shutil.rmtree(self.layout.diversify, ignore_errors=True)

    def check(self) -> list[str]:
        return [f"decontamination question set not found: {m}"
                for q in self.cfg.diversify.decontaminate.questions if (m := missing(q))]

    def open_backend(self):
        return ModelSlot(sentence_embedder.load_embedder)

    def run_task(self, task, slot, progress) -> dict:
        folder, cfg = self.task_folder, self.cfg.diversify
        total = sum(1 for key, _ in pool_items(folder, task.lang) if task.owns(key))
        advance = FileProgress(folder, task, total, progress and progress(f"embed {task.name}", total))
        stats = embed_language_task(task, folder, cfg, embedder_fingerprint(cfg),
                                    lambda: slot.get("embedder", cfg.embedder, task.shard), advance)
        write_progress(folder, task, done=total, total=total, state="done", stats=stats)
        return {**stats, "records": total}

    def run(self) -> StageResult:
        cfg, folder = self.cfg.diversify, self.layout.diversify
        check_refined(self.cfg.out, self.cfg.languages)
        decontaminator = load_decontaminator(cfg)
        summary = summary_header(cfg, decontaminator)
        counts = {}
        for lang in self.cfg.languages:
            counts[lang] = prepare_language(list(read_jsonl(self.layout.refined_file(lang))), lang, cfg, folder,
                                            decontaminator)
        shards = shards_per_language(self.cfg.executor)
        tasks = task_list([lang for lang in self.cfg.languages if counts[lang]["pool"]], shards)
        started = time.time()
        run_tasks(self, tasks, self.ctx.progress, self.ctx.log)
        this_run = [p for p in read_progress(folder) if p.get("updated", 0) >= started and "stats" in p]
        for lang in self.cfg.languages:
            embedding = {k: sum(p["stats"].get(k, 0) for p in this_run if p["lang"] == lang)
                         for k in ("embedded", "seconds")}
            s = summary["languages"][lang] = finish_language(lang, cfg, folder, shards, counts[lang], embedding)
            d = s.get("diversity", {})
            self.ctx.log(f"  {lang}: {s['refined']} refined → pool {s['pool']} (set aside {s['dropped'] or 'none'}) "
                         f"→ {s['selected']} selected from {s['clusters']} clusters; entropy share "
                         f"{d.get('entropy_fraction', 0):.3f} (random {d.get('random_entropy_fraction', 0):.3f})")
        write_summary(folder, summary)
        return StageResult(summary)
