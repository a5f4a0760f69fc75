"""What a model config stands for, for fingerprints: content hashes of local model and adapter files, else
the served model's name. Two configs with the same identity give the same outputs for the same inputs."""

from __future__ import annotations

from xinstruct.core.fingerprint import path_identity


def model_identity(cfg) -> dict:
    backend = cfg.backend
    model = getattr(cfg, "model", None)
    identity = {"backend": backend}
    if backend in ("llamacpp", "transformers") and model is None:
        from xinstruct.models.bundled import bundled_gguf
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
