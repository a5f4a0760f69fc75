"""Why Stage III seeds k-means with k-means++: the round-robin draw against random same-size subsets, with faiss's
random-row seeds and with k-means++ seeds, on a synthetic pool with one big topic (55%) and four small ones
(tests/synthetic_run.py), over several k and 10 k-means seeds. Prints one line per (k, seeding).

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
    ap.add_argument("--seeds", type=int, default=10, help="k-means seeds per setting")
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
            runs = []
            for seed in range(args.seeds):
                _, labels, distances = kmeans(vectors, k, seed=seed, plusplus=plusplus)
                picked = np.array(round_robin(labels, distances, grades, args.target))
                runs.append(diversity_report(vectors, labels, k, picked, seed=seed))
            distance = np.array([r["mean_cosine_distance"] for r in runs])
            baseline = np.array([r["random_mean_cosine_distance"] for r in runs])
            entropy = np.array([r["entropy_fraction"] for r in runs])
            print(f"k={k:3d} seeds={'k-means++' if plusplus else 'random   '}  entropy share {entropy.mean():.3f}  "
                  f"mean cosine distance {distance.mean():.4f} (min {distance.min():.4f}) vs random subsets "
                  f"{baseline.mean():.4f}; below random in {int((distance < baseline).sum())} of {args.seeds} seeds")

if __name__ == "__main__":
    main()
