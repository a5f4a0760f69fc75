"""Spherical k-means per language (faiss), and the default number of clusters."""

from __future__ import annotations

import numpy as np


def default_k(target: int, pool: int) -> int:
    """About 32 picks per cluster at the full target: 1,000 clusters for the paper's 32k."""
    return max(1, min(pool, max(2, target // 32)))


def kmeans(x: np.ndarray, k: int, iterations: int = 20, seed: int = 0,
           plusplus: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(centroids, cluster of each row, squared L2 distance of each row to its centroid).

    Rows are unit vectors and centroids are re-normalised each iteration (spherical k-means), so the distance
    orders members by cosine to the centroid. Seeds come from k-means++ (scikit-learn) rather than faiss's random
    rows: with one big topic, random seeds split it and merge the small ones, which is what the round-robin
    draw must not see. faiss then runs Lloyd on at most 256 points per centroid and assigns every row."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, dim = x.shape
    k = min(k, n)
    if k <= 1:
        centroid = x.mean(0, keepdims=True)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-12)
        return centroid, np.zeros(n, np.int64), ((x - centroid) ** 2).sum(1)
    km = faiss.Kmeans(dim, k, niter=iterations, seed=seed, spherical=True, verbose=False,
                      min_points_per_centroid=1, max_points_per_centroid=256)
    if plusplus:
        from sklearn.cluster import kmeans_plusplus

        rng = np.random.default_rng(seed)
        sample = x[rng.choice(n, size=64 * k, replace=False)] if n > 64 * k else x
        seeds, _ = kmeans_plusplus(sample, k, random_state=seed)
        km.train(x, init_centroids=np.ascontiguousarray(seeds, dtype=np.float32))
    else:  # faiss's own seeding: k random rows
        km.train(x)
    distances, labels = km.index.search(x, 1)
    return km.centroids, labels[:, 0].astype(np.int64), distances[:, 0]
