"""`xinstruct tune`: LoRA (or full) SFT on the dataset with the paper's prompt, one multilingual model or one per
language, each exported as a llama.cpp GGUF adapter with an Ollama Modelfile beside it.

Every model folder holds `tuned.json`, which `answer`, `chat` and `evaluate` read: base model, adapter, template.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from xinstruct.config import TuneConfig, validated_copy
from xinstruct.core.layout import TuneLayout
from xinstruct.io.files import write_jsonl
from xinstruct.models.bundled import bundled_gguf
from xinstruct.prompts import template as prompt_template
from xinstruct.tune.data import load_tuning_pairs, tuning_examples


def tune_overrides(cfg: TuneConfig, languages: list[str] | None = None, per_language: bool | None = None,
                   template: str | None = None, base: str | None = None, epochs: float | None = None,
                   max_steps: int | None = None) -> TuneConfig:
    """The tune section with the command line's settings (None: the config's); raises ConfigError on a bad one."""
    updates = {k: v for k, v in {"languages": languages, "per_language": per_language, "template": template}.items()
               if v is not None}
    train = {k: v for k, v in {"epochs": epochs, "max_steps": max_steps}.items() if v is not None}
    if base is not None:
        train["base"] = validated_copy(cfg.train.base, model=base)
    return validated_copy(cfg, **updates, train=validated_copy(cfg.train, **train))


def base_gguf(base: str | None) -> Path | None:
    """The GGUF that llama.cpp applies the adapter to: the bundled file, a given .gguf, else none known."""
    if base is None:
        return bundled_gguf()
    return Path(base) if base.endswith(".gguf") else None


def ollama_modelfile(base: Path, adapter: Path, template_name: str) -> str:
    """An Ollama Modelfile: the quantized base, the GGUF adapter, and the prompt the model was tuned on."""
    prompt = prompt_template("alpaca" if template_name == "alpaca" else "assistant")
    prompt = prompt.replace("{instruction}", "{{ .Prompt }}").replace("{system}", "{{ .System }}")
    stops = "\n".join(f'PARAMETER stop "{s}"' for s in ("### Instruction:", "USER:"))
    return (f"FROM {base.resolve()}\nADAPTER {adapter.resolve()}\n"
            f'TEMPLATE """{prompt}\n"""\n{stops}\n')


def tune_one(pairs: list[dict], cfg: TuneConfig, out_dir: Path, name: str, progress: bool = True) -> dict:
    """Train one model on `pairs` and write its descriptor (and Modelfile when the base is a GGUF)."""
    from xinstruct.train.sft import set_cpu_threads, train_lora

    set_cpu_threads()
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = train_lora(tuning_examples(pairs, cfg.template), cfg.train, out_dir, "model", progress)
    languages = sorted({p["lang"] for p in pairs})
    descriptor = {"name": name, "languages": languages, "pairs": len(pairs), "template": cfg.template,
                  "base": cfg.train.base.model, "adapter_dir": summary["adapter_dir"],
                  "gguf_lora": summary.get("gguf_lora"), "train": summary}
    gguf = base_gguf(cfg.train.base.model)
    if gguf is not None and summary.get("gguf_lora"):
        modelfile = TuneLayout.modelfile_in(out_dir)
        modelfile.write_text(ollama_modelfile(gguf, Path(summary["gguf_lora"]), cfg.template))
        descriptor["modelfile"] = str(modelfile)
    path = TuneLayout.descriptor_in(out_dir)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(descriptor, indent=2))
    os.replace(tmp, path)
    return descriptor


def run_tune(cfg: TuneConfig, data: str, out_dir: Path, progress: bool = True, log=print) -> dict:
    """Tune on `data`; returns {model name: descriptor}. Set-aside records go to out_dir/rejects.jsonl."""
    layout = TuneLayout(out_dir)
    rejects: list[dict] = []
    by_lang = load_tuning_pairs(data, cfg.languages, cfg.limit, rejects)
    if rejects:
        write_jsonl(layout.rejects, rejects)
        log(f"tune: set aside {len(rejects)} unusable record(s) → {layout.rejects}")
    if not by_lang:
        raise ValueError(f"{data}: no usable pairs" + (f" for {cfg.languages}" if cfg.languages else ""))
    groups = dict(by_lang) if cfg.per_language else {"all": [p for pairs in by_lang.values() for p in pairs]}
    results = {}
    for name, pairs in groups.items():
        log(f"tune {name}: {len(pairs)} pairs ({', '.join(f'{k} {len(v)}' for k, v in by_lang.items() if name in ('all', k))})")
        results[name] = tune_one(pairs, cfg, layout.model(name), name, progress)
        t = results[name]["train"]
        log(f"  {'reused' if t.get('reused') else 'trained'}: {t['steps']} steps, loss {t['train_loss']}, "
            f"{t['seconds']} s → {layout.model(name)}")
    return results


def find_tuned(folder: str | Path, lang: str | None = None) -> dict:
    """The descriptor of a tuned model: `folder` itself, or (per-language tuning) its `<lang>` or `all` model."""
    folder, layout = Path(folder), TuneLayout(folder)
    for candidate in ([folder] + ([layout.model(lang)] if lang else []) + [layout.model("all")]):
        path = TuneLayout.descriptor_in(candidate)
        if path.is_file():
            descriptor = json.loads(path.read_text())
            if lang is None or lang in descriptor["languages"] or candidate == folder:
                return descriptor
    raise FileNotFoundError(f"{folder}: no tuned model" + (f" for {lang}" if lang else "") +
                            f" (expected {TuneLayout.descriptor_in(folder).name} from `xinstruct tune`)")
