"""Generator training (I.c) in the run: LoRA SFT on the seed pairs (text → English instruction), exported as a
GGUF adapter for llama.cpp."""

from __future__ import annotations

from pathlib import Path

from xinstruct.config import adapter_format, with_adapter
from xinstruct.core.stage import Stage, StageResult
from xinstruct.io.files import read_jsonl
from xinstruct.models.bundled import bundled_generator
from xinstruct.models.identity import model_identity


def uses_trained_adapter(cfg) -> bool:
    """Does the generator take the adapter this run trains? Yes when it runs the model training starts from
    (both unset: the bundled Gemma) on a backend that loads adapters (llama.cpp, transformers, a managed server)
    and has no adapter of its own; a model served elsewhere is the user's business."""
    gen = cfg.generator
    return (adapter_format(gen) is not None and getattr(gen, "lora", None) is None
            and getattr(gen, "model", None) == cfg.train.base.model)


def uses_bundled_generator(cfg) -> bool:
    """train.generator: bundled on the bundled model (the adapter fits no other)."""
    return cfg.train.generator == "bundled" and cfg.train.base.model is None


def uses_few_shot(cfg) -> bool:
    """A generator that knows the task from no adapter (a served model this run cannot tune) is shown seed pairs."""
    return not uses_trained_adapter(cfg) and getattr(cfg.generator, "lora", None) is None and cfg.generate.few_shot > 0


def generator_setup(cfg) -> str:
    """How the generator learned the task, in words, for the console and the dataset card."""
    if uses_trained_adapter(cfg):
        return ("the bundled generator adapter (tuned on FLORES-200 and the demo seeds)" if uses_bundled_generator(cfg)
                else "tuned on this run's seed pairs (a LoRA adapter trained here)")
    if getattr(cfg.generator, "lora", None):
        return "its own adapter (generator.lora)"
    if cfg.generate.few_shot:
        return (f"not tuned here (it does not load this run's adapter): each prompt shows the {cfg.generate.few_shot} "
                "seed pairs of the document's language most like the document (few-shot)")
    return "not tuned here, zero-shot (generate.few_shot: 0)"


def generator_config(cfg, layout, trained_here: bool = False):
    """The configured generator, with its adapter in the form its backend loads: the bundled one
    (train.generator: bundled) or the one trained in `layout` (train.generator: seed, or `trained_here`: a
    refine round that retrains the generator)."""
    gen = cfg.generator
    if not uses_trained_adapter(cfg):
        return gen
    if uses_bundled_generator(cfg) and not trained_here:
        return with_adapter(gen, *bundled_generator(), "the bundled generator")
    gguf, peft = layout.generator_adapter, layout.generator_peft
    if gguf.exists() or peft.exists():
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
        return {"base": model_identity(self.cfg.train.base)}

    def not_needed(self) -> str | None:
        if self.cfg.refine.retrain in ("generator", "both"):
            return None
        if uses_trained_adapter(self.cfg):
            if uses_bundled_generator(self.cfg):
                return "the generator is the bundled adapter (train.generator: bundled; set it to seed to " \
                       "fine-tune one on this run's seed pairs)"
            return None
        return f"the generator ({self.cfg.generator.backend}, {self.cfg.generator.model}) does not use an adapter " \
               "trained here"

    def outputs(self) -> list[Path]:
        return [self.layout.generator_peft, self.layout.generator_adapter]

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
