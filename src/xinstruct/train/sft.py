"""Fine-tune the generator: foreign text in, English instruction out (TRL SFTTrainer + PEFT LoRA).

The loss covers the completion (the instruction) only. From the bundled Gemma, transformers dequantizes the
GGUF to fp32 for training; the LoRA adapter is then exported as a GGUF adapter that llama.cpp applies on top
of the original quantized file, so generation stays on the fast CPU path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from xinstruct.config import TrainConfig
from xinstruct.prompts import generation_prompt


def generator_examples(pairs: list[dict]) -> list[dict]:
    """Seed pairs → prompt/completion rows: the response is the text, the instruction the target."""
    return [{"prompt": generation_prompt(p["response"]), "completion": " " + p["instruction"].strip()}
            for p in pairs]


def train_generator(pairs: list[dict], cfg: TrainConfig, out_dir: Path, progress: bool = True) -> dict:
    """Train on `pairs`, save the adapter (or full model) to out_dir, export GGUF; returns a summary."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from xinstruct.models.transformers import load_causal_lm

    if not pairs:
        raise ValueError("no seed pairs to train the generator on")
    torch.manual_seed(cfg.seed)
    out_dir = Path(out_dir)
    model, tok = load_causal_lm(cfg.base.model, cfg.base.device, "float32")
    model.train()
    ds = Dataset.from_list(generator_examples(pairs)).shuffle(seed=cfg.seed)
    args = SFTConfig(
        output_dir=str(out_dir / "checkpoints"), num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate, lr_scheduler_type="cosine",
        max_length=cfg.max_length, completion_only_loss=True, packing=False, logging_steps=5,
        save_strategy="no", report_to="none", seed=cfg.seed, disable_tqdm=not progress,
        use_cpu=not torch.cuda.is_available(), bf16=False, fp16=False, dataloader_num_workers=0)
    peft_config = None
    if cfg.lora:
        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                 target_modules=cfg.target_modules, task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=peft_config)
    result = trainer.train()
    adapter_dir = out_dir / ("adapter" if cfg.lora else "model")
    trainer.model.save_pretrained(str(adapter_dir))
    tok.save_pretrained(str(adapter_dir))
    summary = {"pairs": len(pairs), "steps": result.global_step, "train_loss": round(result.training_loss, 4),
               "seconds": round(result.metrics.get("train_runtime", 0.0), 1), "adapter_dir": str(adapter_dir),
               "base": cfg.base.model or "bundled"}
    if cfg.lora and cfg.export_gguf:
        from xinstruct.train.gguf_export import export_lora_gguf
        arch = getattr(model.config, "model_type", "gemma3")
        summary["gguf_lora"] = str(export_lora_gguf(adapter_dir, out_dir / "generator-lora.gguf", arch))
    (out_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def set_cpu_threads() -> None:
    """Use every core we are allowed; torch defaults to physical cores, which is 1 on some 2-vCPU boxes."""
    import torch

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
