import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"../shared/data is absent ({SHARED})")
    return SHARED


@pytest.fixture(scope="session")
def llama():
    """The real bundled Gemma on llama.cpp, shared by the tests that need a model."""
    from xinstruct.config import model_config
    from xinstruct.models.llamacpp import LlamaCppBackend

    backend = LlamaCppBackend(model_config(n_ctx=4096, n_parallel=4))
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def embedder():
    """The bundled MiniLM sentence embedder (sentence-transformers), shared by the Stage III tests."""
    from xinstruct.config import EmbedderConfig
    from xinstruct.diversify.embed import load_embedder

    return load_embedder(EmbedderConfig())
