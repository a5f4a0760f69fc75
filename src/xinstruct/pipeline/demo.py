"""The demo run: the bundled corpus and seed pairs (sw, th, hi), the bundled Gemma, no network, no keys."""

from __future__ import annotations

from xinstruct.config import GenerateConfig, InputSpec, RefineConfig, RunConfig, SeedConfig, TrainConfig
from xinstruct.seed import bundled_path

DEMO_LANGUAGES = ("sw", "th", "hi")


def demo_config(output_dir: str = "runs/demo", languages: tuple[str, ...] = DEMO_LANGUAGES,
                epochs: float = 1.0) -> RunConfig:
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
        # graded at P >= 0.5 (the small model is rarely surer), and every language keeps at least 10 pairs
        refine=RefineConfig(iterations=2, self_label_min_confidence=0.5, self_label_max_per_grade=20,
                            min_keep=10, batch_size=32),
    )
