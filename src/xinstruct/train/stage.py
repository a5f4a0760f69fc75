"""Generator training (I.c) in the run: LoRA SFT on the seed pairs (text → English instruction), exported as a
GGUF adapter for llama.cpp."""

from __future__ import annotations

from pathlib import Path

from xinstruct.core.stage import Stage, StageResult
from xinstruct.io.files import read_jsonl


def uses_trained_adapter(cfg) -> bool:
    """Does the generator take the adapter this run trains? Yes for the bundled model (llama.cpp or
    transformers) when no model or adapter of its own is configured; a served model is the user's business."""
    gen = cfg.generator
    return gen.backend in ("llamacpp", "transformers") and gen.model is None and gen.lora is None


def generator_config(cfg, layout):
    """The configured generator, with the adapter this run trained where it takes one."""
    gen = cfg.generator
    if uses_trained_adapter(cfg):
        adapter = layout.generator_adapter if gen.backend == "llamacpp" else layout.generator / "adapter"
        if adapter.exists():
            gen = gen.model_copy(update={"lora": str(adapter)})
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
