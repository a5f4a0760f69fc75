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
from xinstruct.seed import bundled_path

DEMO_LANGUAGES = ("sw", "th", "hi")
# The Vicuna-80 and MT-Bench questions, where this checkout sits beside the shared data: the demo's data is
# decontaminated against them (they are not bundled; point --decontaminate-against at your own copy).
EVAL_QUESTIONS = tuple(Path("../shared/data/eval") / f for f in ("vicuna_bench_question.jsonl",
                                                                  "mt_bench_question.jsonl"))


def demo_config(output_dir: str = "runs/demo", languages: tuple[str, ...] = DEMO_LANGUAGES,
                epochs: float = 1.0, eval_questions: list[str] | None = None) -> RunConfig:
    corpus = [InputSpec(path=str(bundled_path(f"demo/{lang}/corpus.jsonl")), lang=lang) for lang in languages]
    # a file of deliberately broken records, so the demo shows what is set aside and why
    corpus.append(InputSpec(path=str(bundled_path("demo/noise.jsonl"))))
    seeds = [InputSpec(path=str(bundled_path(f"demo/{lang}/seed.jsonl")), lang=lang) for lang in languages]
    return RunConfig(
        output_dir=output_dir, languages=list(languages),
        corpus={"inputs": corpus},
        seed=SeedConfig(inputs=seeds, split="all"),
        train=TrainConfig(epochs=epochs, batch_size=4, max_length=320),
        generate=GenerateConfig(n_per_doc=2, max_tokens=64, batch_docs=16),
        # two rounds, as the paper; round 2 retrains the evaluator on up to 20 labels per grade and language
        # graded at P >= 0.5 (the small model is rarely surer); every language keeps at least half its
        # candidates, so that Stage III has a pool twice its target to draw from
        refine=RefineConfig(iterations=2, self_label_min_confidence=0.5, self_label_max_per_grade=20,
                            min_keep_share=0.5, batch_size=32),
        # 20 of ~40 pairs per language across 5 clusters (the paper: 32k per language)
        diversify=DiversifyConfig(target_per_language=20, n_clusters=5,
                                  decontaminate={"questions": list(eval_questions or [])}),
    )
