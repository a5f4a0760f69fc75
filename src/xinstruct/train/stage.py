"""Generator training (I.c) in the run: LoRA SFT on the seed pairs (text → English instruction), exported as a
GGUF adapter for llama.cpp."""

from __future__ import annotations

from pathlib import Path

from xinstruct.core.stage import Stage, StageResult
from xinstruct.io.files import read_jsonl


def uses_trained_adapter(cfg) -> bool:
    """Does the generator take the adapter this run trains? Yes when it runs the model training starts from
    (both unset: the bundled Gemma) on a backend that loads adapters (llama.cpp, transformers, a managed server)
    and has no adapter of its own; a model served elsewhere is the user's business."""
    from xinstruct.config import adapter_format

    gen = cfg.generator
    return (adapter_format(gen) is not None and getattr(gen, "lora", None) is None
            and getattr(gen, "model", None) == cfg.train.base.model)


def generator_config(cfg, layout):
    """The configured generator, with the adapter this run trained in the form its backend loads."""
    from xinstruct.config import with_adapter

    gen = cfg.generator
    gguf, peft = layout.generator_adapter, layout.generator / "adapter"
    if uses_trained_adapter(cfg) and (gguf.exists() or peft.exists()):
        gen = with_adapter(gen, gguf if gguf.exists() else None, peft if peft.exists() else None,
                           "the generator this run trained")
    return gen


class GeneratorTrainingStage(Stage):
    name = "train"
    title = "fine-tune the generator (text → English instruction) with TRL + LoRA; export a GGUF adapter"
    needs = ("seed",)
    config = ("train", "seed.split")
    code = ("train", "prompts")

    def inputs(self) -> dict:
        from xinstruct.models.identity import model_identity

        return {"base": model_identity(self.cfg.train.base)}

    def not_needed(self) -> str | None:
        if uses_trained_adapter(self.cfg) or self.cfg.refine.retrain in ("generator", "both"):
            return None
        return f"the generator ({self.cfg.generator.backend}, {self.cfg.generator.model}) does not use an adapter " \
               "trained here"

    def outputs(self) -> list[Path]:
        return [self.layout.generator / "adapter", self.layout.generator_adapter]

    def run(self) -> StageResult:
        from xinstruct.train.sft import set_cpu_threads, train_generator

        pairs = list(read_jsonl(self.layout.seed_pairs))
        if self.cfg.seed.split == "train":
            pairs = [p for p in pairs if p["split"] == "train"]
        set_cpu_threads()
        self.ctx.log(f"train: fine-tuning the generator on {len(pairs)} seed pairs "
                     f"({'LoRA' if self.cfg.train.lora else 'full'}, {self.cfg.train.epochs:g} epochs)")
        summary = train_generator(pairs, self.cfg.train, self.layout.generator, progress=not self.ctx.quiet)
        summary["languages"] = sorted({p["lang"] for p in pairs})
        return StageResult(summary)
