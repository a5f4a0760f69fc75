"""A local HF model (directory, hub id, or a GGUF file that transformers dequantizes) on CPU or GPU.

Used for training and as the GPU generation path. Loading the bundled GGUF gives an fp32 model that
Trainer and save_pretrained refuse while it still carries its GGUF quantizer; `load_causal_lm` removes it.
"""

from __future__ import annotations

import os
import shutil
import zlib
from pathlib import Path

from xinstruct.config import TransformersConfig
from xinstruct.models.base import (
    Backend,
    Completion,
    GenerationResult,
    SamplingParams,
    Score,
    clean_error,
    truncate_at_stop,
)
from xinstruct.models.bundled import bundled_gguf
from xinstruct.models.identity import transformers_model_id


def resolve_model_path(model: str | None) -> str:
    return str(bundled_gguf()) if model is None else model


def cache_dir() -> Path:
    return Path(os.environ.get("XINSTRUCT_CACHE", Path.home() / ".cache" / "xinstruct"))


def _load_gguf(path: str):
    """Dequantize a GGUF into a plain fp32 HF model; cached as safetensors, since converting the GGUF
    tokenizer and tensors takes most of a minute on 2 cores while the cached copy loads in seconds."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stat = Path(path).stat()
    cached = cache_dir() / "hf-from-gguf" / f"{Path(path).stem}-{stat.st_size}"
    if (cached / "config.json").exists():
        return AutoModelForCausalLM.from_pretrained(cached, dtype="float32"), AutoTokenizer.from_pretrained(cached)
    folder, name = str(Path(path).parent), Path(path).name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    lm.hf_quantizer = None  # Trainer and save_pretrained refuse a model that still carries its GGUF quantizer
    lm.is_quantized = False
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
    lm.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(cached, ignore_errors=True)
    os.replace(tmp, cached)
    return lm, tok


def load_causal_lm(model: str | None, device: str | None = None, dtype: str = "auto", lora: str | None = None):
    """(model, tokenizer) for an HF dir/id or a .gguf file; None means the bundled Gemma."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(model)
    if path.endswith(".gguf"):
        lm, tok = _load_gguf(path)
    else:
        tok = AutoTokenizer.from_pretrained(path)
        lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if lora:
        from peft import PeftModel
        lm = PeftModel.from_pretrained(lm, lora)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return lm.to(device).eval(), tok


class TransformersBackend(Backend):
    name = "transformers"
    capabilities = frozenset({"generate", "loglikelihood", "option_logprobs"})

    def __init__(self, cfg: TransformersConfig):
        self.cfg = cfg
        self.model, self.tok = load_causal_lm(cfg.model, cfg.device, cfg.dtype, cfg.lora)
        self.device = next(self.model.parameters()).device
        self.n_ctx = getattr(self.model.config, "max_position_embeddings", None)

    def _too_long(self, n_tokens: int) -> str | None:
        if self.n_ctx and n_tokens > self.n_ctx:
            return f"{n_tokens} tokens exceed the model's context of {self.n_ctx}"
        return None

    @property
    def model_id(self) -> str:
        return transformers_model_id(self.cfg)

    def generate(self, prompts: list[str], params: SamplingParams) -> list[GenerationResult]:
        import torch

        self.tok.padding_side = "left"
        results = [None] * len(prompts)
        fit = []
        for i, prompt in enumerate(prompts):  # a prompt too long for the context fails alone, not its batch
            error = self._too_long(len(self.tok(prompt)["input_ids"]) + params.max_tokens)
            if error:
                results[i] = GenerationResult(error=error)
            else:
                fit.append(i)
        batched = []
        size = 1 if self.cfg.batch_invariant else self.cfg.batch_size
        for start in range(0, len(fit), size):
            chunk = [prompts[i] for i in fit[start:start + size]]
            try:
                # each prompt n times: greedy decoding refuses num_return_sequences > 1
                enc = self.tok([p for p in chunk for _ in range(params.n)], return_tensors="pt",
                               padding=True).to(self.device)
                if params.seed is not None:  # from the prompts, not their place in the call
                    torch.manual_seed((params.seed * 1_000_003 + zlib.crc32("\x00".join(chunk).encode()))
                                      & 0x7FFFFFFF)
                sample = params.temperature > 0
                with torch.no_grad():
                    out = self.model.generate(
                        **enc, max_new_tokens=params.max_tokens, do_sample=sample,
                        temperature=params.temperature if sample else None,
                        top_p=params.top_p if sample else None, top_k=None,
                        pad_token_id=self.tok.pad_token_id)
            except (RuntimeError, ValueError) as e:
                batched.extend(GenerationResult(error=clean_error(f"{type(e).__name__}: {e}")) for _ in chunk)
                continue
            new = out[:, enc["input_ids"].shape[1]:]
            for i in range(len(chunk)):
                comps = []
                for row in new[i * params.n:(i + 1) * params.n]:
                    ids = row.tolist()
                    hit_eos = self.tok.eos_token_id in ids or self.tok.pad_token_id in ids
                    n_tok = sum(1 for t in ids if t not in (self.tok.pad_token_id, self.tok.eos_token_id))
                    text, hit_stop = truncate_at_stop(self.tok.decode(ids, skip_special_tokens=True), params.stop)
                    done = hit_eos or hit_stop or n_tok < params.max_tokens
                    comps.append(Completion(text, "stop" if done else "length", n_tok))
                batched.append(GenerationResult(completions=comps))
        for i, result in zip(fit, batched):
            results[i] = result
        return results

    def score(self, requests: list[tuple[str, str]]) -> list[Score]:
        import torch

        scores = []
        for context, continuation in requests:
            ctx = self.tok(context, return_tensors="pt")["input_ids"]
            enc = self.tok(context + continuation, return_tensors="pt", return_offsets_mapping=self.tok.is_fast)
            full = enc["input_ids"].to(self.device)
            error = self._too_long(full.shape[1])
            if error:
                scores.append(Score(error=error))
                continue
            try:
                with torch.no_grad():
                    logprobs = torch.log_softmax(self.model(full).logits[0, :-1].float(), dim=-1)
            except RuntimeError as e:  # e.g. out of memory on a long text: this request fails, not the batch
                scores.append(Score(error=clean_error(f"{type(e).__name__}: {e}")))
                continue
            targets = full[0, 1:]
            token_lp = logprobs.gather(1, targets[:, None])[:, 0][ctx.shape[1] - 1:].double().tolist()
            offsets = ([max(0, int(a) - len(context)) for a, _ in enc["offset_mapping"][0, ctx.shape[1]:].tolist()]
                       if "offset_mapping" in enc else None)
            scores.append(Score(float(sum(token_lp)), int(full.shape[1] - ctx.shape[1]), token_lp, offsets))
        return scores
