"""The demo run: the bundled corpus and seed pairs (sw, th, hi), the bundled Gemma, no network, no keys."""

from __future__ import annotations

from pathlib import Path

from xinstruct.config import (
    DiversifyConfig,
    GenerateConfig,
    InputSpec,
    RefineConfig,
    RunConfig,
    SeedConfig,
    TrainConfig,
)
from xinstruct.core.summaries import CorpusSummary, DiversifySummary, GenerateSummary, RefineSummary, SeedSummary
from xinstruct.seed import bundled_path

DEMO_LANGUAGES = ("sw", "th", "hi")
# The Vicuna-80 and MT-Bench questions, where this checkout sits beside the shared data: the demo's data is
# decontaminated against them (they are not bundled; point --decontaminate-against at your own copy).
EVAL_QUESTIONS = tuple(Path("../shared/data/eval") / f for f in ("vicuna_bench_question.jsonl",
                                                                  "mt_bench_question.jsonl"))


def demo_config(output_dir: str = "runs/demo", languages: tuple[str, ...] = DEMO_LANGUAGES,
                epochs: float = 1.0, eval_questions: list[str] | None = None, n_per_doc: int = 1,
                generator: str = "bundled") -> RunConfig:
    corpus = [InputSpec(path=str(bundled_path(f"demo/{lang}/corpus.jsonl")), lang=lang) for lang in languages]
    # a file of deliberately broken records, so the demo shows what is set aside and why
    corpus.append(InputSpec(path=str(bundled_path("demo/noise.jsonl"))))
    seeds = [InputSpec(path=str(bundled_path(f"demo/{lang}/seed.jsonl")), lang=lang) for lang in languages]
    return RunConfig(
        output_dir=output_dir, languages=list(languages),
        corpus={"inputs": corpus},
        seed=SeedConfig(inputs=seeds, split="all"),
        # the bundled generator as it is (held out, it beats one trained on the demo's 120 seed pairs: docs/GENERATION.md)
        train=TrainConfig(generator=generator, epochs=epochs, batch_size=4, max_length=320),
        # three candidates a document from three sources, for Stage II to pick from: a sample, the greedy text and
        # the PMI-guided one at α = 0.5 (read side by side they are about as good as each other, and fit different
        # documents: docs/GENERATION.md)
        generate=GenerateConfig(n_per_doc=n_per_doc, greedy=True, guided=[0.5], max_tokens=64, batch_docs=16),
        # two rounds, as the paper: the likelihood grader fitted on the demo's seed pairs grades, then is refitted
        # on its confident labels and kept only if it grades the held-out seed pairs better; one instruction per
        # document, the best-graded
        refine=RefineConfig(iterations=2, batch_size=32),
        # 20 of ~40 pairs per language across 5 clusters (the paper: 32k per language)
        diversify=DiversifyConfig(target_per_language=20, n_clusters=5,
                                  decontaminate={"questions": list(eval_questions or [])}),
    )


DEMO_HEADER = ("language", "read", "kept", "dropped", "seed pairs", "candidates", "rejected candidates",
               "refined (kept)", "selected")


def demo_rows(languages: list[str], results: dict) -> list[tuple[str, ...]]:
    """Each language's way through the stages, under DEMO_HEADER, from the stages' summaries (run_stages)."""
    corpus, seed = CorpusSummary.from_dict(results["corpus"]), SeedSummary.from_dict(results["seed"])
    generated = GenerateSummary.from_dict(results["generate"])
    refined, diversified = RefineSummary.from_dict(results["refine"]), DiversifySummary.from_dict(results["diversify"])
    rows = []
    for lang in languages:
        c, g = corpus.language(lang), generated.language(lang)
        rows.append((lang, str(c.read), str(c.kept), str(c.n_dropped), str(seed.language(lang).pairs),
                     str(g.candidates), str(g.n_rejected), str(refined.final.get(lang, 0)),
                     str(diversified.language(lang).selected)))
    return rows
