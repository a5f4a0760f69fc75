"""Every identity of a model, computed here and nowhere else. Each kind feeds caches, fingerprints or output
records that users already have, so each keeps its exact strings (tests/test_identity.py pins them); the kinds
differ on purpose or by history, and each says which:

- `model_identity(cfg)`: what a stage fingerprint records for a model config (generate, refine, seed, train): the
  content hash of local model and adapter files (core.fingerprint.path_identity: a file's sha256, remembered by
  size and mtime so a multi-GB model is read once; a folder's digest), else the served or hub name.
- `model_fingerprint(cfg)`: the key under which `xinstruct evaluate` caches a system's answers and a judge's
  verdicts: names, sizes and mtimes of the files (`stat_identity`), not their content.
- `llamacpp_model_id`, `transformers_model_id`, `openai_model_id`: the backends' `model_id`, a name for people
  that is also written into records (candidates' `generator`, evaluation records) and keys the scores cache and
  the grader: the model's name, `+lora:<name>@<tag>` for an adapter, the tag hashed one way per backend
  (`lora_tag_*`).
- `embedder_id(cfg)` / `embedder_identity(cfg)`: the sentence embedder's name (stage summary) and what the
  diversify fingerprints record for it.
Two configs with the same identity give the same outputs for the same inputs.

Not model identities, so not here: core.fingerprint.path_identity used directly for data files (question sets, a fitted grader), the
name of transformers' dequantized-GGUF cache (models/transformers.py), the corpus inputs' sizes and mtimes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from xinstruct.config import EmbedderConfig, OpenAIConfig
from xinstruct.core.fingerprint import path_identity
from xinstruct.models.bundled import BUNDLED_MODEL_ID, bundled_gguf
from xinstruct.models.embedder import BUNDLED_EMBEDDER, BUNDLED_EMBEDDER_ID

# -- what a path stands for ------------------------------------------------------------------------------------


def _stat_entries(path: str | Path) -> list[str]:
    """`name:size:mtime_ns` of a file, or of every file of a folder (sorted by path); none for a missing path."""
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p] if p.exists() else []
    return [f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files]


def stat_identity(path: str | None) -> str:
    """Names, sizes and mtimes of a model file (or every file of a folder), joined by ';'; the path as text where
    it is unset or missing. Reads no content: a retrained adapter changes it, and so does a file merely touched.
    Used by `model_fingerprint`, the evaluate cache key, which has always been made this way."""
    if not path or not Path(path).exists():
        return str(path)
    return ";".join(_stat_entries(path))


# -- the evaluate cache key ------------------------------------------------------------------------------------


def model_fingerprint(model) -> str:
    """The evaluate cache key of a model config (answers by system, verdicts by judge): backend, model and adapter
    with their `stat_identity`, chat, the OpenAI endpoints (or managed server kind) and dtype, sha256 to 16 hex.
    Not `model_identity`: its parts are those from before backends had their own settings, so cached answers stay
    valid."""
    where = ""
    if isinstance(model, OpenAIConfig):
        where = f"managed:{model.managed.kind}" if model.managed else ",".join(model.endpoints)
    parts = [model.backend, str(model.model), stat_identity(model.model), str(model.lora), stat_identity(model.lora),
             str(getattr(model, "chat", False)), where, getattr(model, "dtype", "auto")]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


# -- the stage fingerprints ------------------------------------------------------------------------------------


def model_identity(cfg) -> dict:
    """What a model config stands for in a stage fingerprint: backend, `path_identity` of the model (the bundled
    GGUF where llama.cpp or transformers loads it by default) and of the adapter, chat (openai), dtype
    (transformers)."""
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


# -- the backends' model_id ------------------------------------------------------------------------------------
# Three adapter tags, one per backend, because each backend's model_id has been written into records and score
# caches with its own: changing one would re-score cached features and rename the generator of existing records.


def lora_tag_content(path: str) -> str:
    """llama.cpp: sha1 of the GGUF adapter file's bytes, 8 hex (an adapter is a few MB; a retrained one differs)."""
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:8]


def lora_tag_path(path: str) -> str:
    """transformers: sha1 of the adapter folder's absolute path, 8 hex. It does not change when the adapter is
    retrained in place (`model_identity`, in the stage fingerprints, does); kept as it is for the records and caches
    that hold it."""
    return hashlib.sha1(str(Path(path).resolve()).encode()).hexdigest()[:8]


def lora_tag_stat(path: str) -> str:
    """A managed server's adapter (file or folder, maybe large): sha1 of the path as given and the names, sizes
    and mtimes of its files, 8 hex; cheap, and it changes on retraining."""
    p = Path(path)
    return hashlib.sha1((str(p) + "".join(_stat_entries(p))).encode()).hexdigest()[:8]


def llamacpp_model_id(cfg) -> str:
    """LlamaCppBackend.model_id: the bundled model's id or the GGUF's file name, `+lora:<stem>@<lora_tag_content>`."""
    base = BUNDLED_MODEL_ID if cfg.model is None else Path(cfg.model).name
    if cfg.lora:
        return f"{base}+lora:{Path(cfg.lora).stem}@{lora_tag_content(cfg.lora)}"
    return base


def transformers_model_id(cfg) -> str:
    """TransformersBackend.model_id: the model as configured (HF dir, hub id, GGUF) or the bundled model's id,
    `+lora:<folder name>@<lora_tag_path>`."""
    base = cfg.model or BUNDLED_MODEL_ID
    if cfg.lora:
        return f"{base}+lora:{Path(cfg.lora).name}@{lora_tag_path(cfg.lora)}"
    return base


def openai_model_id(cfg, served_name: Callable[[], str]) -> str:
    """OpenAIBackend.model_id: `openai:<the name the server serves>` (asked through `served_name`) for an external
    server; for a managed one `openai:managed-<kind>:<model or the bundled id>+lora:<name>@<lora_tag_stat>`."""
    if cfg.managed is None:
        return f"openai:{served_name()}"
    base = cfg.model or BUNDLED_MODEL_ID
    lora = f"+lora:{Path(cfg.lora).name}@{lora_tag_stat(cfg.lora)}" if cfg.lora else ""
    return f"openai:managed-{cfg.managed.kind}:{base}{lora}"


# -- the sentence embedder -------------------------------------------------------------------------------------


def embedder_id(cfg: EmbedderConfig) -> str:
    """The embedder's name, for the stage summary: the bundled MiniLM's hub id and package, else the configured
    name or path."""
    return BUNDLED_EMBEDDER_ID if cfg.model == BUNDLED_EMBEDDER else cfg.model


def embedder_identity(cfg: EmbedderConfig) -> str | None:
    """What the diversify fingerprints record for the embedder: the bundled MiniLM by its name (the package pins
    its files), else `path_identity` of the configured path (or the hub name)."""
    return embedder_id(cfg) if cfg.model == BUNDLED_EMBEDDER else path_identity(cfg.model)


# -- for people ------------------------------------------------------------------------------------------------


def short_hash(value) -> str:
    """A sha256 hex digest cut to 16 characters; any other value (a hub id, a served name) as it is."""
    if not value:
        return ""
    text = str(value)
    return text[:16] if len(text) == 64 and all(c in "0123456789abcdef" for c in text) else text


def model_label(value, names: dict) -> str:
    """A model identity for people: the manifest's `model_names` name beside its short hash, where it has one."""
    return f"{names[value]} ({short_hash(value)})" if value in names else short_hash(value)
