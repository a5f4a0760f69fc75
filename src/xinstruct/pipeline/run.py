"""Run order: corpus → seed → train generator → candidates (Stage I) → refine (Stage II) → diversify (Stage III)
→ export (dataset, card, report). Each stage reads the previous stage's files and leaves a summary; a stage whose
summary exists is skipped, and the model stages (generate, refine) resume mid-way by themselves (diversify keeps
its finished embedding shards).
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from xinstruct.config import ModelConfig, RunConfig, adapter_format, with_adapter
from xinstruct.pipeline.journal import read_jsonl, write_jsonl

STAGES = ("corpus", "seed", "train", "generate", "refine", "diversify", "export")
RESUMABLE = ("generate", "refine")  # these pick up mid-way; they are never skipped whole


def quiet_datatrove() -> None:
    """datatrove logs every step of every task to the console; its stats still go to <run>/corpus/logs.
    XINSTRUCT_VERBOSE=1 shows its logs."""
    import os

    from loguru import logger

    if not os.environ.get("XINSTRUCT_VERBOSE"):
        logger.disable("datatrove")


def progress_bar(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), console=console)


def stage_corpus(cfg: RunConfig, console: Console) -> dict:
    from xinstruct.corpus.pipeline import run_corpus

    quiet_datatrove()
    with console.status("corpus: reading, cleaning, language ID, near-dedup"):
        summary = run_corpus(cfg.corpus, cfg.out / "corpus", cfg.languages, cfg.executor)
    return summary


def stage_seed(cfg: RunConfig, console: Console) -> dict:
    from xinstruct.seed import load_pairs

    folder = cfg.out / "seed"
    rejects: list[dict] = []
    pairs = list(load_pairs(cfg.seed.inputs, rejects))
    if cfg.seed.parallel:
        from xinstruct.seed.parallel import load_instructions, parallel_pairs
        instructions = load_instructions(cfg.seed.parallel.instructions)
        for lang in cfg.languages:
            pairs += parallel_pairs(instructions, cfg.seed.parallel.passages_dir, lang)
    if cfg.seed.translate:
        from xinstruct.models.base import load_backend
        from xinstruct.seed.translate import translate_pairs
        tcfg = cfg.seed.translate
        english = _english_source(tcfg.source, tcfg.limit)
        with load_backend(tcfg.teacher) as teacher:
            for lang in cfg.languages:
                with console.status(f"seed: translating {len(english)} responses into {lang}"):
                    got, bad = translate_pairs(english, lang, teacher, tcfg.max_tokens)
                pairs += got
                rejects += bad
    pairs = [p for p in pairs if p["lang"] in cfg.languages]
    write_jsonl(folder / "pairs.jsonl", pairs)
    write_jsonl(folder / "rejects.jsonl", rejects)
    summary = {}
    for p in pairs:
        s = summary.setdefault(p["lang"], {"train": 0, "heldout": 0})
        s[p["split"]] = s.get(p["split"], 0) + 1
    summary["rejected"] = len(rejects)
    return summary


def _english_source(source: str, limit: int) -> list[dict]:
    """English instruction data (Alpaca JSON list or JSONL) as pairs with lang 'en'."""
    from xinstruct.config import InputSpec
    from xinstruct.seed import load_pairs

    return list(load_pairs([InputSpec(path=source, lang="en", limit=limit)]))


def stage_train(cfg: RunConfig, console: Console) -> dict:
    from xinstruct.train.sft import set_cpu_threads, train_generator

    pairs = list(read_jsonl(cfg.out / "seed" / "pairs.jsonl"))
    if cfg.seed.split == "train":
        pairs = [p for p in pairs if p["split"] == "train"]
    set_cpu_threads()
    console.print(f"train: fine-tuning the generator on {len(pairs)} seed pairs "
                  f"({'LoRA' if cfg.train.lora else 'full'}, {cfg.train.epochs:g} epochs)")
    return train_generator(pairs, cfg.train, cfg.out / "generator")


def generator_config(cfg: RunConfig) -> ModelConfig:
    """The configured generator; on llama.cpp (in-process or a managed server) of the bundled model with no
    adapter given, the one this run trained."""
    gen = cfg.generator
    trained = cfg.out / "generator" / "generator-lora.gguf"
    if adapter_format(gen) == "gguf" and gen.lora is None and gen.model is None and trained.exists():
        gen = with_adapter(gen, trained, None, "the generator this run trained")
    return gen


def clean_documents(cfg: RunConfig, lang: str):
    from xinstruct.corpus.pipeline import clean_files

    for path in clean_files(cfg.out / "corpus", lang):
        yield from read_jsonl(path)


def stage_generate(cfg: RunConfig, console: Console) -> dict:
    from xinstruct.generate.candidates import generate_candidates, summarize_candidates
    from xinstruct.models.base import load_backend

    folder = cfg.out / "candidates"
    counts = {lang: sum(1 for _ in clean_documents(cfg, lang)) for lang in cfg.languages}
    with load_backend(generator_config(cfg)) as backend, progress_bar(console) as progress:
        console.print(f"generate: {backend.model_id}, {cfg.generate.n_per_doc} candidate(s) per document")
        for lang in cfg.languages:
            task = progress.add_task(f"generate {lang}", total=counts[lang])
            run = generate_candidates(clean_documents(cfg, lang), lang, backend, cfg.generate, folder,
                                      on_progress=lambda n, t=task: progress.advance(t, n))
            progress.update(task, completed=counts[lang])
            console.print(f"  {lang}: this run {run}")
    return summarize_candidates(folder)


def stage_refine(cfg: RunConfig, console: Console) -> dict:
    from xinstruct.refine.loop import run_refinement

    return run_refinement(cfg, console)


def stage_diversify(cfg: RunConfig, console: Console) -> dict:
    from xinstruct.diversify.stage import run_diversify

    with progress_bar(console) as progress:
        def on_language(lang: str, n: int):
            task = progress.add_task(f"embed {lang}", total=n)
            return lambda k: progress.advance(task, k)

        summary = run_diversify(cfg.out, cfg.languages, cfg.diversify, on_language)
    for lang, s in summary["languages"].items():
        d = s.get("diversity", {})
        console.print(f"  {lang}: {s['refined']} refined → pool {s['pool']} (set aside {s['dropped'] or 'none'}) "
                      f"→ {s['selected']} selected from {s['clusters']} clusters; entropy share "
                      f"{d.get('entropy_fraction', 0):.3f} (random {d.get('random_entropy_fraction', 0):.3f})")
    return summary


def stage_export(cfg: RunConfig, console: Console) -> dict:
    from xinstruct.export.stage import run_export

    with console.status("export: dataset (JSONL, Parquet, HF), card, report"):
        return run_export(cfg)


RUNNERS = {"corpus": stage_corpus, "seed": stage_seed, "train": stage_train, "generate": stage_generate,
           "refine": stage_refine, "diversify": stage_diversify, "export": stage_export}


def run_stages(cfg: RunConfig, stages: tuple[str, ...] = STAGES, console: Console | None = None,
               force: bool = False) -> dict:
    """Run `stages` in order; a finished stage (its summary file exists) is skipped unless `force`."""
    console = console or Console()
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "config.json").write_text(cfg.model_dump_json(indent=2))
    results = {}
    for stage in stages:
        marker = cfg.out / "summaries" / f"{stage}.json"
        if marker.exists() and not force and stage not in RESUMABLE:
            console.print(f"[dim]{stage}: done earlier, skipped ({marker})[/dim]")
            results[stage] = json.loads(marker.read_text())
            continue
        results[stage] = RUNNERS[stage](cfg, console)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps(results[stage], indent=2, ensure_ascii=False))
        text = json.dumps(results[stage], ensure_ascii=False)
        console.print(f"[green]{stage}[/green]: {text if len(text) < 600 else f'done, summary in {marker}'}")
    return results


def outputs(cfg: RunConfig) -> dict[str, Path]:
    out = cfg.out
    return {"cleaned corpus": out / "corpus" / "clean", "corpus rejects": out / "corpus" / "rejects",
            "seed pairs": out / "seed" / "pairs.jsonl", "generator adapter": out / "generator",
            "candidates": out / "candidates", "refinement rounds": out / "refine",
            "refined pairs": out / "refine" / "final", "diversified pairs": out / "diversify",
            "dataset": out / "dataset", "dataset card": out / "dataset" / "README.md",
            "run report": out / "report" / "index.html", "stage summaries": out / "summaries"}
