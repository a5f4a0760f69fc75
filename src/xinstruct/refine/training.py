"""Train the evaluator: LoRA on graded pairs (the rating set, later plus confident self-labels)."""

from __future__ import annotations

from pathlib import Path

from xinstruct.config import TrainConfig
from xinstruct.refine.evaluator import evaluator_examples


def train_evaluator(rows: list[dict], cfg: TrainConfig, out_dir: Path, progress: bool = True) -> dict:
    """Fine-tune on graded rows {instruction, output, lang, grade}; exports evaluator-lora.gguf."""
    from xinstruct.train.sft import set_cpu_threads, train_lora

    set_cpu_threads()
    return train_lora(evaluator_examples(rows), cfg, Path(out_dir), "evaluator", progress)
