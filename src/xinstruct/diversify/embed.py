"""Sentence embeddings of the English instructions, kept per text in caches so no text is embedded twice.

A language's pool is split into tasks (core/tasks.py: by a stable hash of the record key). Each task keeps the
vectors it made in its own cache (<diversify>/cache/<task>.sqlite, io/cache.py BlobCache), keyed by a hash of
the text and committed a batch at a time, under the embedder's fingerprint (model, its files, bf16, this code):
a killed task resumes alone, a rerun embeds only texts it has not seen (a text already embedded under another
number of tasks is copied, not embedded again), and another embedder starts afresh.

Each text is encoded alone (`embedder.batch_invariant`, the default), so its vector is a function of its text:
the vectors, and so the k-means and the draw, are the same however many tasks made them and after any resume (on
the same kind of machine). Batching texts, even of equal length so that none is padded, left a vector depending on
its batch on an AMX CPU (bf16 kernels chosen by the batch's shape); `batch_invariant: false` batches them anyway,
about 5x faster on CPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from xinstruct.config import EmbedderConfig
from xinstruct.core.machine import cpu_has_bf16
from xinstruct.core.tasks import Task, open_task_cache
from xinstruct.core.work import MapCounts, journaled_map
from xinstruct.io.cache import BlobCache


def use_bf16(cfg: EmbedderConfig, model) -> bool:
    """bf16 autocast triples MiniLM's CPU speed where the CPU has bf16 units (cosine to fp32 ≈ 0.99999)."""
    if str(model.device) != "cpu":
        return False
    if cfg.bf16 is not None:
        return cfg.bf16
    return cpu_has_bf16()


def embed(model, texts: Sequence[str], cfg: EmbedderConfig) -> np.ndarray:
    """Unit vectors (float32) of `texts`, in their order: each text alone (cfg.batch_invariant), else in groups
    of equal token length (no padding, but the kernels may still round with the batch's shape)."""
    import torch

    texts = list(texts)
    dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension  # renamed in 5.x
    out = np.zeros((len(texts), dim()), np.float32)
    if not texts:
        return out
    # the model's own tokenization, so the lengths are those it pads to (tokenize: before 5.x)
    tokens = (getattr(model, "preprocess", None) or model.tokenize)(texts)
    lengths = tokens["attention_mask"].sum(dim=1).tolist()
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if use_bf16(cfg, model)
                else contextlib.nullcontext())
    with autocast, torch.inference_mode():
        if cfg.batch_invariant:
            device = model.device
            for i, n in enumerate(lengths):
                one = {k: (v[i:i + 1, :n].to(device) if hasattr(v, "shape") else v) for k, v in tokens.items()}
                vector = model.forward(one)["sentence_embedding"].float()
                out[i] = torch.nn.functional.normalize(vector, dim=-1)[0].cpu().numpy()
            return out
        groups: dict[int, list[int]] = defaultdict(list)
        for i, n in enumerate(lengths):
            groups[n].append(i)
        for rows in groups.values():
            out[rows] = model.encode([texts[i] for i in rows], batch_size=cfg.batch_size, normalize_embeddings=True,
                                     convert_to_numpy=True, show_progress_bar=False)
    return out


def text_key(text: str) -> str:
    """A text's key in the embedding caches."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def embed_task(items: Iterable[tuple[str, str]], cache_path: Path, fingerprint: str, cfg: EmbedderConfig,
               get_model: Callable, task: Task, on_progress: Callable[[int], None] | None = None) -> dict:
    """Embed the texts of the (record key, text) `items` that `task` owns and that its cache lacks, in committed
    batches of `cfg.shard_size`; a text another split's cache of the same fingerprint holds is copied. The model
    (`get_model()`) is loaded only if something is left to embed."""
    counts = MapCounts()
    with open_task_cache(cache_path, task, fingerprint, BlobCache) as (cache, others):
        owned = ((text_key(text), text) for key, text in items if task.owns(key))

        def call(batch: list[tuple[str, str]]) -> np.ndarray:
            return embed(get_model(), [t for _, t in batch], cfg)

        for _committed in journaled_map(owned, lambda item: item[0], cache, call,
                                        lambda item, vector: (item[0], vector.tobytes()), cfg.shard_size,
                                        reuse=others, advance=on_progress, counts=counts):
            pass
        reset = cache.reset
    return {"embedded": counts.asked, "cached": counts.cached, "copied": counts.copied, "cache_reset": int(reset)}


def gather(items: Iterable[tuple[str, str]], n: int, cache_of: Callable[[str], object]) -> np.ndarray:
    """The vectors of `n` (record key, text) items in their order, each from the cache of its record's task
    (`cache_of(key)`). Raises when one is missing (a task that did not finish)."""
    out = None
    for i, (key, text) in enumerate(items):
        raw = cache_of(key).get(text_key(text))
        if raw is None:
            raise RuntimeError(f"no embedding for pool record {key!r}: an embedding task did not finish")
        vector = np.frombuffer(raw, np.float32)
        if out is None:
            out = np.empty((n, len(vector)), np.float32)
        out[i] = vector
    return out if out is not None else np.zeros((0, 0), np.float32)


def save_vectors(vectors: np.ndarray, folder: str | Path) -> Path:
    """The language's pool vectors in pool order (what `xinstruct diversity` and the run report read)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path, tmp = folder / "vectors.npy", folder / "vectors.tmp.npy"
    np.save(tmp, vectors)
    os.replace(tmp, path)
    return path


def load_embeddings(folder: str | Path) -> np.ndarray:
    """A language's pool vectors, in pool order (memory-mapped)."""
    path = Path(folder) / "vectors.npy"
    return np.load(path, mmap_mode="r") if path.exists() else np.zeros((0, 0), np.float32)
