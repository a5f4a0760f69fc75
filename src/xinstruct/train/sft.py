"""LoRA fine-tuning on prompt/completion rows (TRL SFTTrainer + PEFT), used for the generator and the evaluator.

The loss covers the completion only. From the bundled Gemma, transformers dequantizes the GGUF to fp32 for
training; the LoRA adapter is then exported as a GGUF adapter that llama.cpp applies on top of the original
quantized file, so generation and grading stay on the fast CPU path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from datasets import Dataset
from datasets.utils import disable_progress_bars
from peft import LoraConfig
from transformers import PrinterCallback
from transformers.trainer_utils import get_last_checkpoint
from trl import SFTConfig, SFTTrainer
from trl.trainer.callbacks import RichProgressCallback

from xinstruct.config import TrainConfig
from xinstruct.core.machine import cpu_has_bf16
from xinstruct.models.transformers import load_causal_lm
from xinstruct.prompts import generation_prompt
from xinstruct.train.gguf_export import check_gguf_arch, export_lora_gguf


def generator_examples(pairs: list[dict]) -> list[dict]:
    """Seed pairs → prompt/completion rows: the response is the text, the instruction the target."""
    return [{"prompt": generation_prompt(p["output"]), "completion": " " + p["instruction"].strip()}
            for p in pairs]


class CompletionLossTrainer(SFTTrainer):
    """SFTTrainer whose loss projects through the LM head only the positions that predict a completion token.

    Why: TRL's fused, vocabulary-tiled log-prob kernel is built for GPUs; on a 2-core CPU it cost ~6 s of a
    ~11 s step for Gemma's 262k-token vocabulary (measured with cProfile). A plain gather + cross-entropy on
    the few completion positions gives the same loss for a fraction of that. The loss is the token mean,
    as TRL's is; its entropy/accuracy metrics are not logged.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        with self.accelerator.autocast():  # calling the decoder directly skips accelerate's forward wrapper
            hidden = lm.get_decoder()(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                                      use_cache=False).last_hidden_state[:, :-1]
        labels = inputs["labels"][:, 1:].to(hidden.device)
        mask = labels != -100
        logits = lm.get_output_embeddings()(hidden[mask]).float()
        cap = getattr(lm.config.get_text_config(), "final_logit_softcapping", None)
        if cap:
            logits = torch.tanh(logits / cap) * cap
        n = mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = F.cross_entropy(logits, labels[mask], reduction="sum") / torch.as_tensor(n).clamp(min=1)
        return (loss, None) if return_outputs else loss


def use_bf16(cfg: TrainConfig) -> bool:
    if cfg.bf16 is not None:
        return cfg.bf16
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


def training_fingerprint(examples: list[dict], cfg: TrainConfig) -> str:
    """Same examples and settings → same fingerprint: a finished run is reused, checkpoints are resumed."""
    h = hashlib.sha256(cfg.model_dump_json(exclude={"save_steps"}).encode())
    for ex in examples:
        h.update(json.dumps(ex, ensure_ascii=False, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _checkpoints(out_dir: Path, fingerprint: str) -> tuple[Path, str | None]:
    """The checkpoint folder and the last checkpoint to resume from; checkpoints of other data are removed."""
    folder = out_dir / "checkpoints"
    stamp = folder / "fingerprint"
    if folder.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint)
    return folder, get_last_checkpoint(str(folder))


def train_lora(examples: list[dict], cfg: TrainConfig, out_dir: Path, name: str, progress: bool = True) -> dict:
    """Fine-tune on prompt/completion `examples`; save the adapter (or full model) under out_dir and, for
    LoRA, export `<name>-lora.gguf` for llama.cpp. Returns a summary (also written to train_summary.json).

    Resumable: with cfg.save_steps > 0 a killed run continues from its last checkpoint, and a run that
    already finished on the same examples and settings returns its summary without training again.
    """
    if not examples:
        raise ValueError(f"no examples to train the {name} on")
    out_dir = Path(out_dir)
    fingerprint = training_fingerprint(examples, cfg)
    summary_path = out_dir / "train_summary.json"
    if summary_path.exists():
        done = json.loads(summary_path.read_text())
        if done.get("fingerprint") == fingerprint and Path(done.get("adapter_dir", "")).exists():
            return {**done, "reused": True}
    checkpoints, resume_from = _checkpoints(out_dir, fingerprint)
    disable_progress_bars()  # the per-map bars of dataset preparation
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning)
    torch.manual_seed(cfg.seed)
    model, tok = load_causal_lm(cfg.base.model, cfg.base.device, "float32")
    arch = getattr(model.config, "model_type", "gemma3")
    if cfg.lora and cfg.export_gguf:  # say it now, not after the training it would follow
        check_gguf_arch(arch)
    model.train()
    ds = Dataset.from_list(examples).shuffle(seed=cfg.seed)
    cpu = not torch.cuda.is_available()
    args = SFTConfig(
        output_dir=str(checkpoints), num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate, lr_scheduler_type="cosine", warmup_steps=cfg.warmup_steps,
        max_length=cfg.max_length, completion_only_loss=True, packing=False, logging_steps=5,
        gradient_checkpointing=not cpu, report_to="none", seed=cfg.seed,
        save_strategy="steps" if cfg.save_steps > 0 else "no", save_steps=max(cfg.save_steps, 1),
        save_total_limit=2, disable_tqdm=True, use_cpu=cpu, bf16=use_bf16(cfg), fp16=False,
        dataloader_num_workers=0)
    peft_config = None
    if cfg.lora:
        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                 target_modules=cfg.target_modules, task_type="CAUSAL_LM")
    trainer = CompletionLossTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                                    peft_config=peft_config, callbacks=[RichProgressCallback()] if progress else None)
    trainer.remove_callback(PrinterCallback)  # it would print every log dict; the Rich bar shows loss and ETA
    # TRL drops an example whose prompt alone fills max_length (no completion token left to learn): count them
    # from what it kept, and refuse a run that would learn from none
    too_long = len(examples) - len(trainer.train_dataset)
    if too_long == len(examples):
        raise ValueError(f"every {name} example's prompt is at least train.max_length={cfg.max_length} tokens long: "
                         "raise max_length")
    result = trainer.train(resume_from_checkpoint=resume_from)
    adapter_dir = out_dir / ("adapter" if cfg.lora else "model")
    trainer.model.save_pretrained(str(adapter_dir))
    tok.save_pretrained(str(adapter_dir))
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    summary = {"examples": len(examples), "too_long": too_long, "steps": result.global_step,
               "train_loss": round(result.training_loss, 4), "last_logged_loss": losses[-1] if losses else None,
               "seconds": round(result.metrics.get("train_runtime", 0.0), 1), "adapter_dir": str(adapter_dir),
               "base": cfg.base.model or "bundled", "bf16": args.bf16, "fingerprint": fingerprint,
               "resumed_from": resume_from}
    if cfg.lora and cfg.export_gguf:
        summary["gguf_lora"] = str(export_lora_gguf(adapter_dir, out_dir / f"{name}-lora.gguf", arch))
    tmp = summary_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2))
    os.replace(tmp, summary_path)
    return summary


def train_generator(pairs: list[dict], cfg: TrainConfig, out_dir: Path, progress: bool = True) -> dict:
    """Teach the model to write the English instruction a target-language text answers."""
    if not pairs:
        raise ValueError("no seed pairs to train the generator on")
    return {"pairs": len(pairs), **train_lora(generator_examples(pairs), cfg, out_dir, "generator", progress)}


def set_cpu_threads() -> None:
    """Use every core we are allowed; torch defaults to physical cores, which is 1 on some 2-vCPU boxes."""
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
