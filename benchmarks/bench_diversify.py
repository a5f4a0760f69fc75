"""Stage III throughput: the whole diversification stage (pool building, embedding to disk shards, spherical
k-means, round-robin draw, file writing) over synthetic English instructions, one summary line.

The instructions are built from templates and word lists written here (no shared data), spread over 10
"languages" of equal size, as the paper's 10 x 32k. Target: 320k instructions in under 10 minutes on 2 cores.

    .venv/bin/python benchmarks/bench_diversify.py [--total 320000] [--languages 10] [--target 16000]
"""

from __future__ import annotations

import argparse
import random
import resource
import tempfile
import time
from pathlib import Path

VERBS = ["Write", "Explain", "Describe", "Summarize", "List", "Give", "Compare", "Create", "Suggest", "Outline",
         "Draft", "Tell me", "Classify", "Rewrite", "Plan", "Analyze", "Propose", "Design", "Recommend", "Argue"]
FORMS = ["a short poem", "a news report", "three tips", "a step-by-step guide", "a summary", "a letter",
         "an overview", "five questions", "a recipe", "a speech", "a short story", "a product review",
         "a lesson plan", "a timeline", "an advertisement", "a dialogue", "a tweet", "an essay", "a table"]
TOPICS = ["rice farming", "the rainy season", "a football match", "mobile money", "local elections", "river fishing",
          "a wedding ceremony", "school fees", "traditional medicine", "street food", "a music festival",
          "climate change", "public transport", "a national park", "small businesses", "the history of the city",
          "a new hospital", "exam preparation", "tea plantations", "the fuel price", "a cooking contest",
          "coastal tourism", "cattle markets", "solar power", "a village library", "the tax reform"]
AUDIENCES = ["for children", "for farmers", "for tourists", "for students", "for a newspaper", "for the radio",
             "for parents", "for a local council", "for beginners", "for a blog", "", "", ""]
EXTRAS = ["in under {n} words", "using simple language", "with {n} examples", "in a formal tone",
          "and mention the year {y}", "from the point of view of a teacher", "", "", ""]


def synthetic_instructions(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        extra = rng.choice(EXTRAS).format(n=rng.randint(3, 300), y=rng.randint(1950, 2025))
        parts = [rng.choice(VERBS), rng.choice(FORMS), "about", rng.choice(TOPICS), rng.choice(AUDIENCES), extra]
        out.append(" ".join(p for p in parts if p) + ".")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--total", type=int, default=320_000)
    ap.add_argument("--languages", type=int, default=10)
    ap.add_argument("--target", type=int, default=16_000, help="pairs drawn per language")
    args = ap.parse_args()

    from xinstruct.config import DiversifyConfig
    from xinstruct.diversify.embed import load_embedder
    from xinstruct.diversify.stage import diversify_language
    from xinstruct.train.sft import set_cpu_threads

    set_cpu_threads()
    cfg = DiversifyConfig(target_per_language=args.target, dedup_instructions=False)
    model = load_embedder(cfg.embedder)  # loaded once, outside the timing
    per_lang = args.total // args.languages
    texts = synthetic_instructions(args.total)
    rng = random.Random(1)
    seconds = {"embed": 0.0, "kmeans": 0.0}
    selected = clusters = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.languages):
            records = [{"id": f"l{n}-{i}", "instruction": t, "output": "", "grade": rng.choice(["best", "flawed"]),
                        "probs": {"best": rng.random()}}
                       for i, t in enumerate(texts[n * per_lang:(n + 1) * per_lang])]
            s = diversify_language(records, f"l{n}", cfg, Path(tmp), model_loader=lambda _cfg: model)
            for key in seconds:
                seconds[key] += s["seconds"][key]
            selected += s["selected"]
            clusters = s["clusters"]
    total = time.perf_counter() - started
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"diversify: {args.total} instructions in {args.languages} languages → {selected} selected; "
          f"embed {seconds['embed']:.0f}s ({args.total / seconds['embed']:.0f}/s), k-means "
          f"{args.languages}×k={clusters} {seconds['kmeans']:.0f}s, whole stage {total:.0f}s "
          f"({'under' if total < 600 else 'OVER'} the 600s target), peak RSS {rss_gb:.1f} GB")


if __name__ == "__main__":
    main()
