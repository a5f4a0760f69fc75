"""A small synthetic run folder (refined pairs and stage summaries) for the Stage III and export tests.
Instructions come from a few topic templates so that k-means has clusters of unequal size to find."""

from __future__ import annotations

import json
import random
from pathlib import Path

from xinstruct.io.files import write_jsonl

# (topic, share of the pool): one big cluster and several small ones, so a random draw over-samples the big one
TOPICS = [("a recipe for {x} with rice and beans", 0.55), ("the football match between {x} and the city club", 0.15),
          ("the history of the {x} kingdom", 0.1), ("how to repair a {x} bicycle", 0.1),
          ("a poem about the {x} river at night", 0.1)]
VERBS = ["Write", "Explain", "Describe", "Summarize", "Give"]
WORDS = ["red", "old", "northern", "small", "famous", "green", "coastal", "quiet", "blue", "ancient", "new", "long"]


def refined_pairs(lang: str, n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    pairs = []
    for i in range(n):
        topic = rng.choices([t for t, _ in TOPICS], weights=[w for _, w in TOPICS])[0]
        instruction = f"{rng.choice(VERBS)} {topic.format(x=rng.choice(WORDS))} in {rng.randint(2, 400)} words."
        pairs.append({"id": f"{lang}-{i}#c0", "doc_id": f"{lang}-{i}", "source": f"/data/{lang}.jsonl", "lang": lang,
                      "instruction": instruction, "output": "x" * rng.randint(150, 900) + f" {i}",
                      "generator": "gen@test", "grade": rng.choice(["best", "best", "flawed"]),
                      "probs": {"best": rng.random()}, "iteration": 2, "evaluator": "eval@test", "kept_by": "best"})
    return pairs


def make_run(out: Path, sizes: dict[str, int]) -> Path:
    for lang, n in sizes.items():
        write_jsonl(out / "refine" / "final" / f"{lang}.jsonl", refined_pairs(lang, n, seed=len(lang) + n))
    (out / "summaries").mkdir(parents=True, exist_ok=True)
    (out / "summaries" / "corpus.json").write_text(json.dumps({lang: {"read": 3 * n, "kept": 2 * n}
                                                                for lang, n in sizes.items()}))
    (out / "summaries" / "generate.json").write_text(json.dumps({lang: {"candidates": 2 * n}
                                                                  for lang, n in sizes.items()}))
    (out / "refine" / "iter-1").mkdir(parents=True, exist_ok=True)
    (out / "refine" / "iter-1" / "summary.json").write_text(json.dumps({"languages": {
        lang: {"grades": {"best": n, "flawed": n // 2, "worst": n // 2}, "kept": n} for lang, n in sizes.items()}}))
    return out
