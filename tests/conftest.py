import contextlib
import os
import threading
import time
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
    from xinstruct.models.embedder import load_embedder

    return load_embedder(EmbedderConfig())


@contextlib.contextmanager
def llama_cpp_server(*args: str):
    """llama-cpp-python's OpenAI-compatible server on the bundled Gemma, on a free loopback port (served as
    `gemma`, n_ctx 512 plus `args`); yields its /v1 URL once /v1/models answers, and stops it after."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    pytest.importorskip("llama_cpp.server")
    from xinstruct.models.bundled import bundled_gguf

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "xinstruct.models.llama_server", "--model", str(bundled_gguf()), "--host",
                             "127.0.0.1", "--port", str(port), "--n_ctx", "512", "--model_alias", "gemma", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("llama.cpp server did not start")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(autouse=True)
def _no_call_left_behind():
    """A stage that stops on an error leaves no model call running: the record threads of core/work.py end
    soon after it (the client cancels what is in flight when it closes). One left waiting would keep the
    interpreter from exiting after the last test."""
    yield
    deadline = time.monotonic() + 20
    while (left := [t.name for t in threading.enumerate() if t.name.startswith("xinstruct-call") and t.is_alive()]):
        assert time.monotonic() < deadline, f"model calls still running after the test: {left}"
        time.sleep(0.05)
