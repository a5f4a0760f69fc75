"""Why Stage III seeds k-means with k-means++: the round-robin draw against random same-size subsets, with faiss's
random-row seeds and with k-means++ seeds, on a synthetic pool with one big topic (55%) and four small ones
(tests/synthetic_run.py), over several k. Prints one line per (k, seeding).

    .venv/bin/python benchmarks/bench_seeding.py [--pool 200] [--target 40]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pool", type=int, default=200)
    ap.add_argument("--target", type=int, default=40)
    args = ap.parse_args()

    from synthetic_run import refined_pairs

    from xinstruct.config import EmbedderConfig
    from xinstruct.diversify.cluster import kmeans
    from xinstruct.diversify.diversity import diversity_report
    from xinstruct.diversify.embed import embed, load_embedder
    from xinstruct.diversify.select import round_robin

    pairs = refined_pairs("sw", args.pool, seed=202)
    cfg = EmbedderConfig()
    vectors = embed(load_embedder(cfg), [p["instruction"] for p in pairs], cfg)
    grades = np.array([["best", "flawed"].index(p["grade"]) for p in pairs])
    for k in (3, 5, 8, 16, args.target):
        for plusplus in (False, True):
            _, labels, distances = kmeans(vectors, k, plusplus=plusplus)
            picked = np.array(round_robin(labels, distances, grades, args.target))
            d = diversity_report(vectors, labels, k, picked)
            print(f"k={k:3d} seeds={'k-means++' if plusplus else 'random   '}  entropy share {d['entropy_fraction']:.3f} "
                  f"(random subsets {d['random_entropy_fraction']:.3f})  mean cosine distance "
                  f"{d['mean_cosine_distance']:.4f} (random subsets {d['random_mean_cosine_distance']:.4f} "
                  f"± {d['random_mean_cosine_distance_sd']:.4f})")


if __name__ == "__main__":
    main()
