"""The paper's comparison out of the box: the untuned base model, the base tuned on the seed pairs only (the
naive-translation baseline when the seeds are translated data), and the base tuned on the xinstruct dataset,
each answering with the paper's prompt; the xinstruct-tuned model is the focus of the pairwise judge.

Layout under <run>/compare/: tune-seed/, tune-xinstruct/ (as `xinstruct tune` writes), evaluate/ (as
`xinstruct evaluate` writes, report included).
"""

from __future__ import annotations

from pathlib import Path

from xinstruct.config import ModelConfig, RunConfig, SystemConfig, model_config, validated_copy
from xinstruct.core.layout import CompareLayout, RunLayout
from xinstruct.evaluate.stage import Progress, no_progress, run_evaluate
from xinstruct.tune.stage import run_tune

BASE, SEED, XINSTRUCT = "base", "seed-tuned", "xinstruct-tuned"


def serving_model(base: str | None) -> ModelConfig:
    """How the three systems are served: llama.cpp for the bundled model or a GGUF base, else transformers."""
    if base is None or base.endswith(".gguf"):
        return model_config(backend="llamacpp", model=base)
    return model_config(backend="transformers", model=base)


def baseline_systems(layout: CompareLayout, base: str | None, template: str) -> list[SystemConfig]:
    served = serving_model(base)
    return [SystemConfig(name=BASE, model=served, template=template),
            SystemConfig(name=SEED, model=served, tuned=str(layout.tune_seed)),
            SystemConfig(name=XINSTRUCT, model=served, tuned=str(layout.tune_xinstruct))]


def tune_baselines(cfg: RunConfig, langs: list[str], log=print, progress: bool = True) -> Path:
    """Tune the base on the seed pairs and on the dataset (each reused when already trained on the same data)."""
    run = RunLayout(cfg.out)
    seeds, dataset = run.seed_pairs, run.dataset_all
    for path, stage in ((seeds, "seed"), (dataset, "export")):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run `xinstruct {stage}` (or the demo) first")
    tune_cfg = validated_copy(cfg.tune, languages=langs, per_language=False)
    log(f"tune {SEED}: on the seed pairs ({seeds})")
    run_tune(tune_cfg, str(seeds), run.compare.tune_seed, progress, log)
    log(f"tune {XINSTRUCT}: on the xinstruct dataset ({dataset})")
    run_tune(tune_cfg, str(dataset), run.compare.tune_xinstruct, progress, log)
    return run.compare.root


def evaluate_baselines(cfg: RunConfig, langs: list[str], progress: Progress = no_progress, log=print) -> dict:
    layout = RunLayout(cfg.out).compare
    eval_cfg = validated_copy(cfg.evaluate, systems=baseline_systems(layout, cfg.tune.train.base.model,
                                                                      cfg.tune.template), focus=XINSTRUCT)
    return run_evaluate(eval_cfg, langs, layout.evaluate, progress, log, cfg.executor)

