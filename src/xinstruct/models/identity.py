"""What a model config stands for, for fingerprints: content hashes of local model and adapter files, else
the served model's name. Two configs with the same identity give the same outputs for the same inputs."""

from __future__ import annotations

from xinstruct.core.fingerprint import path_identity
from xinstruct.models.bundled import bundled_gguf


def model_identity(cfg) -> dict:
    backend = cfg.backend
    model = getattr(cfg, "model", None)
    identity = {"backend": backend}
    if backend in ("llamacpp", "transformers") and model is None:
        identity["model"] = path_identity(str(bundled_gguf()))
    else:
        identity["model"] = path_identity(model)
    lora = getattr(cfg, "lora", None)
    if lora:
        identity["lora"] = path_identity(lora)
    if backend == "openai":
        identity["chat"] = getattr(cfg, "chat", False)
    if backend == "transformers":
        identity["dtype"] = getattr(cfg, "dtype", "auto")
    return identity


def short_hash(value) -> str:
    """A sha256 hex digest cut to 16 characters; any other value (a hub id, a served name) as it is."""
    if not value:
        return ""
    text = str(value)
    return text[:16] if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def model_label(value, names: dict) -> str:
    """A model identity for people: the manifest's `model_names` name beside its short hash, where it has one."""
    return f"{names[value]} ({short_hash(value)})" if value in names else short_hash(value)
