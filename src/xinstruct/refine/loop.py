"""Stage II, X-Instruction refinement: k rounds of label → keep → retrain.

Round t (1-based) lives in <run>/refine/iter-<t>/:
  evaluator/         the trained evaluator of this round (round 1: rating set; later: + confident labels)
  generator/, candidates/   only when `retrain` includes the generator (round ≥ 2): retrained on seed + kept
  labels/            <lang>.labels.jsonl / <lang>.errors.jsonl, journaled (resumable mid-round)
  kept/<lang>.jsonl  what this round keeps
  summary.json       grade distribution per language, moves vs the previous round; written last, so a round
                     with a summary is finished and skipped on resume
The last round's kept pairs are copied to <run>/refine/final/<lang>.jsonl for Stage III.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from xinstruct.config import ModelConfig, RunConfig, with_adapter
from xinstruct.core.stage import RunContext
from xinstruct.io.files import read_jsonl, write_json, write_jsonl
from xinstruct.refine.label import compare, keep_rule, label_candidates, pair_key, select
from xinstruct.refine.ratings import GRADES, rating_set


def iteration_dir(cfg: RunConfig, t: int) -> Path:
    return cfg.out / "refine" / f"iter-{t}"


def seed_pairs(cfg: RunConfig, split: str | None = None) -> list[dict]:
    pairs = list(read_jsonl(cfg.out / "seed" / "pairs.jsonl"))
    return [p for p in pairs if split is None or p["split"] == split]


def rating_rows(cfg: RunConfig, split: str) -> list[dict]:
    """The synthetic rating set of this run's seed pairs, one split of it (train: to learn; heldout: to check)."""
    ecfg = cfg.refine.evaluator
    return [r for r in rating_set(seed_pairs(cfg), tuple(ecfg.degradations), ecfg.train.seed) if r["split"] == split]


def candidate_folder(cfg: RunConfig, t: int) -> Path:
    """The candidates round t labels: regenerated ones where the generator was retrained, else Stage I's."""
    for k in range(t, 1, -1):
        folder = iteration_dir(cfg, k) / "candidates"
        if (folder / "done.json").exists():
            return folder
    return cfg.out / "candidates"


def read_candidates(folder: Path, lang: str) -> list[dict]:
    path = folder / f"{lang}.candidates.jsonl"
    return list(read_jsonl(path)) if path.exists() else []


def read_labels(folder: Path, lang: str) -> dict[str, dict]:
    """{pair key: label}: a label belongs to a candidate's id and content (see label.pair_key)."""
    path = folder / f"{lang}.labels.jsonl"
    return {r["key"]: r for r in read_jsonl(path)} if path.exists() else {}


def self_labelled_rows(cfg: RunConfig, t: int) -> list[dict]:
    """Round t-1's confident labels as graded training rows, the most confident first, capped per grade."""
    prev = iteration_dir(cfg, t - 1)
    rows = []
    for lang in cfg.languages:
        cands = {pair_key(c): c for c in read_candidates(candidate_folder(cfg, t - 1), lang)}
        labels = [lb for lb in read_labels(prev / "labels", lang).values()
                  if lb.get("probs") and lb["probs"][lb["grade"]] >= cfg.refine.self_label_min_confidence
                  and lb["key"] in cands]
        for grade in GRADES:
            mine = sorted((lb for lb in labels if lb["grade"] == grade), key=lambda lb: -lb["probs"][grade])
            for lb in mine[:cfg.refine.self_label_max_per_grade]:
                c = cands[lb["key"]]
                rows.append({"lang": lang, "grade": grade, "kind": "self_label", "instruction": c["instruction"],
                             "output": c["output"], "split": "train"})
    return rows


def evaluator_backend_config(cfg: RunConfig, trained_dir: Path | None) -> ModelConfig:
    model = cfg.refine.evaluator.model
    if trained_dir is None:
        return model
    return with_adapter(model, trained_dir / "evaluator-lora.gguf", trained_dir / "adapter",
                        "the trained evaluator (refine.evaluator.kind: trained)")


def train_round_evaluator(cfg: RunConfig, t: int, ctx: RunContext) -> Path | None:
    """Round t's trained evaluator (reused if already trained); None for a prompted judge."""
    from xinstruct.refine.training import train_evaluator

    ecfg = cfg.refine.evaluator
    if ecfg.kind != "trained":
        return None
    out = iteration_dir(cfg, t) / "evaluator"
    evaluator_backend_config(cfg, out)  # a grading backend that cannot load the adapter fails before training
    if t > 1 and cfg.refine.retrain not in ("evaluator", "both"):
        return train_round_evaluator(cfg, t - 1, ctx)
    if (out / "train_summary.json").exists():
        return out
    rows = rating_rows(cfg, "train")
    extra = self_labelled_rows(cfg, t) if t > 1 else []
    if t > 1 and not extra:  # retraining on the same rows would rebuild the same evaluator
        ctx.log(f"refine {t}: no label of round {t - 1} reached P ≥ {cfg.refine.self_label_min_confidence}; "
                f"the evaluator of round {t - 1} grades again")
        return train_round_evaluator(cfg, t - 1, ctx)
    ctx.log(f"refine {t}: training the evaluator on {len(rows)} rating-set pairs"
            + (f" + {len(extra)} confident labels of round {t - 1}" if t > 1 else ""))
    train_evaluator(rows + extra, ecfg.train, out)
    return out


def regenerate(cfg: RunConfig, t: int, ctx: RunContext, fingerprint: str, work: str) -> None:
    """Retrain the generator on seed + round t-1's kept pairs, and write new candidates for round t."""
    from xinstruct.generate.candidates import generate_candidates
    from xinstruct.generate.stage import clean_documents
    from xinstruct.models.base import load_backend
    from xinstruct.train.sft import set_cpu_threads, train_generator

    folder = iteration_dir(cfg, t)
    done = folder / "candidates" / "done.json"
    if done.exists() and read_json_or(done).get("fingerprint") == fingerprint:
        return
    gen_dir = folder / "generator"
    # before training: a generator that cannot load the adapter should fail now, not after an hour of training
    gen_cfg = with_adapter(cfg.generator, gen_dir / "generator-lora.gguf", gen_dir / "adapter",
                           "the retrained generator (refine.retrain: generator)")
    if not (gen_dir / "train_summary.json").exists():
        kept = [{"instruction": r["instruction"], "output": r["output"]}
                for lang in cfg.languages for r in read_jsonl(iteration_dir(cfg, t - 1) / "kept" / f"{lang}.jsonl")]
        pairs = seed_pairs(cfg, None if cfg.seed.split == "all" else "train") + kept
        ctx.log(f"refine {t}: retraining the generator on {len(pairs)} pairs (seed + kept)")
        set_cpu_threads()
        train_generator(pairs, cfg.train, gen_dir)
    with load_backend(gen_cfg) as backend:
        for lang in cfg.languages:
            docs = clean_documents(ctx.layout, lang, ctx.limit)
            advance = ctx.progress(f"refine {t}: regenerate {lang}", sum(1 for _ in clean_documents(ctx.layout, lang,
                                                                                                    ctx.limit)))
            generate_candidates(docs, lang, backend, cfg.generate, folder / "candidates", advance,
                                fingerprint=f"{work}:{t}:{backend.model_id}")
    write_json(done, {"fingerprint": fingerprint})


def run_iteration(cfg: RunConfig, t: int, ctx: RunContext, fingerprint: str, work: str) -> dict:
    from xinstruct.models.base import load_backend
    from xinstruct.refine.evaluator import make_evaluator
    from xinstruct.refine.quality import evaluator_quality

    started = time.perf_counter()
    folder = iteration_dir(cfg, t)
    ecfg = cfg.refine.evaluator
    if t > 1 and cfg.refine.retrain in ("generator", "both"):
        regenerate(cfg, t, ctx, fingerprint, work)
    trained = train_round_evaluator(cfg, t, ctx)
    cand_folder = candidate_folder(cfg, t)
    summary: dict = {"iteration": t, "fingerprint": fingerprint, "candidates_from": str(cand_folder),
                     "languages": {}}
    with load_backend(evaluator_backend_config(cfg, trained)) as backend:
        evaluator = make_evaluator(ecfg.kind, backend, ecfg.scoring, ecfg.max_tokens, ecfg.grader)
        summary["evaluator"] = evaluator.id
        heldout = rating_rows(cfg, "heldout")
        if heldout:  # how well this round's evaluator grades held-out seed pairs it never saw
            summary["heldout_rating_set"] = evaluator_quality(heldout, evaluator.grade(heldout))
        for lang in cfg.languages:
            candidates = read_candidates(cand_folder, lang)[:ctx.limit]
            advance = ctx.progress(f"refine {t}: grade {lang}", len(candidates))
            run = label_candidates(candidates, lang, evaluator, folder / "labels", t, cfg.refine.batch_size,
                                   cfg.refine.retries, on_progress=advance,
                                   fingerprint=f"{work}:{t}:{evaluator.id}")
            labels = read_labels(folder / "labels", lang)
            kept = select(candidates, labels, keep_rule(cfg.refine, lang), cfg.refine.keep_flawed_above)
            write_jsonl(folder / "kept" / f"{lang}.jsonl", kept)
            summary["languages"][lang] = language_summary(candidates, labels, kept, folder, lang, run)
            if t > 1:
                summary["languages"][lang]["vs_previous"] = compare(
                    read_labels(iteration_dir(cfg, t - 1) / "labels", lang), labels)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    write_json(folder / "summary.json", summary)
    return summary


def language_summary(candidates: list[dict], labels: dict, kept: list[dict], folder: Path, lang: str,
                     run: dict) -> dict:
    from collections import Counter

    errors_path = folder / "labels" / f"{lang}.errors.jsonl"
    current = {pair_key(c) for c in candidates}
    labels = {k: lb for k, lb in labels.items() if k in current}
    unresolved = Counter(e["reason"] for e in {e["key"]: e for e in (read_jsonl(errors_path) if errors_path.exists()
                                                                       else [])}.values()
                         if e["key"] not in labels and e["key"] in current)
    grades = Counter(lb["grade"] for lb in labels.values())
    return {"candidates": len(candidates), "labelled": len(labels), "errors": dict(unresolved),
            "grades": {g: grades.get(g, 0) for g in GRADES}, "kept": len(kept),
            "kept_by": dict(Counter(k["kept_by"] for k in kept)), "this_run": run}


def run_refinement(cfg: RunConfig, ctx: RunContext, fingerprint: str = "", work: str = "") -> dict:
    """All rounds, skipping those finished with the same stage `fingerprint` (same candidates, settings and
    models); labels are cached under `work` (settings and models only), so candidates that did not change are
    not graded again. Returns the per-round summaries and the final kept counts."""
    rounds = []
    for t in range(1, cfg.refine.iterations + 1):
        done = iteration_dir(cfg, t) / "summary.json"
        previous = read_json_or(done)
        if fingerprint and previous.get("fingerprint") == fingerprint:
            ctx.log(f"[dim]refine {t}: done earlier with the same inputs, skipped ({done})[/dim]")
            rounds.append(previous)
        else:
            rounds.append(run_iteration(cfg, t, ctx, fingerprint, work))
        print_round(rounds[-1], ctx.log)
    final = cfg.out / "refine" / "final"
    last = iteration_dir(cfg, cfg.refine.iterations) / "kept"
    final.mkdir(parents=True, exist_ok=True)
    for lang in cfg.languages:
        shutil.copyfile(last / f"{lang}.jsonl", final / f"{lang}.jsonl")
    return {"iterations": [{"iteration": r["iteration"], "evaluator": r["evaluator"],
                            **{lang: {k: s[k] for k in ("grades", "kept", "errors")} | (
                                {"vs_previous": s["vs_previous"]} if "vs_previous" in s else {})
                               for lang, s in r["languages"].items()}} for r in rounds],
            "final": {lang: sum(1 for _ in read_jsonl(final / f"{lang}.jsonl")) for lang in cfg.languages}}


def read_json_or(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def print_round(summary: dict, log) -> None:
    from rich.table import Table

    t = summary["iteration"]
    table = Table(title=f"refinement round {t}: grades per language ({summary['evaluator']})")
    for col in ("lang", "candidates", *GRADES, "errors", "kept", "vs previous round"):
        table.add_column(col)
    for lang, s in summary["languages"].items():
        v = s.get("vs_previous", {})
        moved = (f"agree {v['agreement']:.0%}, up {v['moved_up']}, down {v['moved_down']}"
                 if v.get("compared") else "")
        table.add_row(lang, str(s["candidates"]), *(str(s["grades"][g]) for g in GRADES),
                      str(sum(s["errors"].values())), str(s["kept"]), moved)
    log(table)
    for lang, q in summary.get("heldout_rating_set", {}).items():
        log(f"  held-out seed rating set {lang}: AUC(best: true vs mismatched) "
                      f"{q['auc_true_vs_mismatched']:.3f}, 3-grade accuracy {q['accuracy']:.3f} (n={q['n']})")
