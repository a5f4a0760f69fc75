"""Scoring speed of llama.cpp's score(): the prefix-tree path against the one-at-a-time path it replaced, on the
requests the default grader sends for the FLORES rating set (held-out ids of one language: true, flawed and
mismatched pairs), with how far the two disagree and how far the one-at-a-time path moves against itself when
only its batch shape changes (16-token chunks). Both run back to back on the same requests; on a shared machine
the ratio is the figure to read.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_scoring.py [--lang sw] [--limit 60]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def chunked(backend, requests, size: int) -> list[float]:
    """The one-at-a-time path with the prompt fed in `size`-token chunks: only the batch shape changes."""
    L = backend.L
    out = []
    for context, continuation in requests:
        ctx, cont = backend.tokenize(context), backend.tokenize(continuation, add_bos=False)
        full, total = ctx + cont, 0.0
        L.llama_memory_seq_rm(backend.mem, -1, -1, -1)
        for start in range(0, len(full), size):
            backend.batch.n_tokens = 0
            chunk = full[start:start + size]
            for j, tok in enumerate(chunk):
                backend._add(tok, start + j, 0, len(ctx) - 1 <= start + j < len(full) - 1)
            if L.llama_decode(backend.ctx, backend.batch) != 0:
                raise RuntimeError("llama_decode failed")
            for j in range(len(chunk)):
                if backend.batch.logits[j]:
                    row = np.ctypeslib.as_array(L.llama_get_logits_ith(backend.ctx, j), shape=(backend.n_vocab,))
                    m = row.max()
                    total += float(row[full[start + j + 1]] - m - np.log(np.exp(row - m).sum()))
        out.append(total)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lang", default="sw")
    ap.add_argument("--limit", type=int, default=60, help="rating rows (3 per held-out id)")
    args = ap.parse_args()

    from xinstruct.config import model_config
    from xinstruct.experiments.eval_evaluator import flores_rating_rows
    from xinstruct.models.llamacpp import LlamaCppBackend
    from xinstruct.refine.features import _requests, families_of, references_by_language
    from xinstruct.refine.grader import DEFAULT_FEATURES

    rows = [r for r in flores_rating_rows([args.lang], SHARED / "text" / "flores_sib200")
            if r["split"] == "heldout"][:args.limit]
    families = families_of(DEFAULT_FEATURES)
    references = references_by_language(r for r in rows if r["kind"] == "true")
    requests = list(dict.fromkeys(req for r in rows for req in _requests(r, families, references).values()))
    with LlamaCppBackend(model_config()) as backend:
        backend.score(requests[:2])  # warm up
        started = time.perf_counter()
        fast = backend.score(requests)
        t_fast = time.perf_counter() - started
        started = time.perf_counter()
        slow = backend.score_sequential(requests)
        t_slow = time.perf_counter() - started
        shape = chunked(backend, requests, 16)
    n_tok = np.array([s.n_tokens for s in slow])
    d_fast = np.abs(np.array([f.logprob for f in fast]) - [s.logprob for s in slow])
    d_shape = np.abs(np.array(shape) - [s.logprob for s in slow])
    print(f"{args.lang}: {len(rows)} rating pairs, {len(requests)} distinct requests ({DEFAULT_FEATURES})")
    print(f"one at a time: {t_slow:.1f}s, {len(rows) / t_slow:.2f} pairs/s")
    print(f"prefix tree:   {t_fast:.1f}s, {len(rows) / t_fast:.2f} pairs/s  -> {t_slow / t_fast:.2f}x")
    print(f"|tree - one at a time|: max {d_fast.max():.3f} nats, mean {d_fast.mean():.3f}, max per token "
          f"{(d_fast / np.maximum(1, n_tok)).max():.4f}")
    print(f"|16-token chunks - one at a time| (batch shape alone): max {d_shape.max():.3f} nats, mean "
          f"{d_shape.mean():.3f}, max per token {(d_shape / np.maximum(1, n_tok)).max():.4f}")
    bound = 0.5 + 0.1 * n_tok  # the tests' tolerance
    print(f"over the tests' bound 0.5 + 0.1 nats a token: tree {(d_fast > bound).sum()}, 16-token chunks "
          f"{(d_shape > bound).sum()} of {len(requests)}")


if __name__ == "__main__":
    main()
