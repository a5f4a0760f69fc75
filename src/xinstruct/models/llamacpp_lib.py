"""Loading llama.cpp so that it runs on any x86-64 CPU, for every llama.cpp process the project starts.

Two dangers, two rules:
- **The CPU kernels must fit the CPU.** setup.sh builds llama.cpp with ggml's CPU variants as loadable modules
  (GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS): `load()` asks ggml to load the best variant this CPU supports (x64,
  haswell, skylakex, zen4, sapphirerapids, ...), so one wheel runs on every x86-64 machine that shares a home folder.
  A llama-cpp-python built another way (one native CPU backend, linked in) is used as it is; if it was compiled for
  instructions this CPU lacks, `load()` says so in one line instead of dying of SIGILL.
- **No AMX kernels unless asked.** llama.cpp's extra weight layouts ("extra buffer types": the repacked Q4 kernels
  and Intel AMX) are on by default upstream; its AMX path with Q4_K weights crashes (ggml-org/llama.cpp#20824).
  `use_extra_buffers()` turns them off on CPUs with AMX unless the config opts in (`cpu_repack: true`), and the
  in-process backend, the managed server and the tests' servers all ask it.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
from functools import cache
from pathlib import Path

from xinstruct.core.machine import cpu_flags, cpu_has_amx

# llama.cpp's system-info feature names -> /proc/cpuinfo flags: what a build compiled in, what the CPU must have
FEATURE_FLAGS = {"SSE3": "pni", "SSSE3": "ssse3", "AVX": "avx", "AVX2": "avx2", "F16C": "f16c", "FMA": "fma",
                 "BMI2": "bmi2", "AVX_VNNI": "avx_vnni", "AVX512": "avx512f", "AVX512_VBMI": "avx512vbmi",
                 "AVX512_VNNI": "avx512_vnni", "AVX512_BF16": "avx512_bf16", "AMX_INT8": "amx_int8"}

_VARIANT: list[str] = []  # the CPU variant module ggml loaded (a DL build), from its log
_BUFFERS: list[str] = []  # the buffer types of the model loading now, from llama.cpp's log


class UnsupportedCPU(RuntimeError):
    """llama.cpp was built for instructions this CPU does not have."""


def use_extra_buffers(cpu_repack: bool | None) -> bool:
    """llama_model_params.use_extra_bufts: the config's choice, else on except on CPUs with AMX."""
    return cpu_repack if cpu_repack is not None else not cpu_has_amx()


def load_model(L, path: str, cpu_repack: bool | None, params=None):
    """(llama_model_load_from_file with use_extra_bufts decided here, the buffer types its weights went to:
    CPU_Mapped, CPU_REPACK, AMX, ... as llama.cpp logs them)."""
    params = params if params is not None else L.llama_model_default_params()
    params.use_extra_bufts = use_extra_buffers(cpu_repack)
    _BUFFERS.clear()
    # the package's own name for it: llama_server replaces llama_cpp.llama_cpp's, not this copy of it
    model = L.llama_model_load_from_file(path.encode() if isinstance(path, str) else path, params)
    return model, sorted(set(_BUFFERS))


@cache
def load():
    """llama_cpp, with a CPU backend loaded that this CPU can run. Raises UnsupportedCPU (one line) otherwise."""
    import llama_cpp as L

    L.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p())
    ggml = _ggml(L)
    if ggml.ggml_backend_reg_count() == 0:  # a GGML_BACKEND_DL build: the CPU variants are modules beside it
        ggml.ggml_backend_load_all_from_path(str(lib_dir(L)).encode())
        if ggml.ggml_backend_reg_count() == 0:
            raise UnsupportedCPU(f"llama.cpp found no CPU backend this CPU can run in {lib_dir(L)} "
                                 f"(variants there: {', '.join(cpu_variants(L)) or 'none'})")
    elif not cpu_variants(L):  # one CPU backend linked in, compiled for the machine that built it: ask a child
        missing = missing_features(_probe_features(), cpu_flags())
        if missing:
            raise UnsupportedCPU(f"this llama-cpp-python was compiled for {', '.join(missing)}, which this CPU "
                                 "lacks: rebuild it on this machine (bash scripts/setup.sh --rebuild-llama)")
    L.llama_backend_init()
    return L


def lib_dir(L) -> Path:
    """Where llama_cpp loaded its libraries from (LLAMA_CPP_LIB_PATH overrides the package's own lib/)."""
    return Path(os.environ.get("LLAMA_CPP_LIB_PATH") or Path(L.__file__).parent / "lib")


def cpu_variants(L) -> list[str]:
    """The CPU backend modules of a GGML_BACKEND_DL build (empty for a build with one CPU backend linked in)."""
    return sorted(_variant_name(p) for p in lib_dir(L).glob("libggml-cpu-*.so"))


def _variant_name(path: str | Path) -> str:
    """libggml-cpu-haswell.so -> haswell."""
    return Path(path).name.removeprefix("libggml-cpu-").split(".so")[0]


def system_info(L) -> str:
    return L.llama_print_system_info().decode("utf-8", "replace").strip()


def compiled_features(L) -> list[str]:
    """Instruction-set features of the CPU backend in use, from llama.cpp's system info ("AVX2 = 1 | ...")."""
    return features_on(system_info(L))


def features_on(info: str) -> list[str]:
    """The features a llama.cpp system-info text ("AVX2 = 1 | AVX512 = 0 | ...") says are compiled in."""
    return [name for name, on in re.findall(r"([A-Z0-9_]+) = (\d)", info) if on == "1"]


@cache
def _probe_features() -> list[str]:
    """The compiled-in features of a single-backend build, read in a child process: merely initialising such a
    build on a CPU without its instructions can kill the process (SIGILL), and that must not be this one."""
    code = "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())"
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                           check=False)
    if probe.returncode < 0:
        raise UnsupportedCPU(f"llama.cpp dies on this CPU ({signal.Signals(-probe.returncode).name} while starting): "
                             "it was compiled for another CPU; rebuild it here (bash scripts/setup.sh --rebuild-llama)")
    return features_on(probe.stdout)


def missing_features(features: list[str], flags: str) -> list[str]:
    have = set(flags.split())
    return [f for f in features if f in FEATURE_FLAGS and FEATURE_FLAGS[f] not in have]


def loaded_variant() -> str | None:
    """Which CPU variant module ggml loaded (a GGML_BACKEND_DL build); None for a single linked-in backend."""
    return _VARIANT[-1] if _VARIANT else None


def _ggml(L):
    """libggml as libllama loaded it: a wheel holds libggml.so, .so.0 and .so.0.x as separate copies, and only the
    one libllama links to holds the backend registry it reads."""
    try:
        maps = Path("/proc/self/maps").read_text().split()
    except OSError:
        maps = []
    mapped = [p for p in maps if Path(p).name.startswith("libggml.so") and Path(p).parent == lib_dir(L)]
    ggml = ctypes.CDLL(mapped[0] if mapped else str(lib_dir(L) / "libggml.so"))
    ggml.ggml_backend_reg_count.restype = ctypes.c_size_t
    ggml.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
    return ggml


def _log(level, text, user_data):
    line = text.decode("utf-8", "ignore")
    if m := re.search(r"loaded CPU backend from (\S+)", line):
        _VARIANT.append(_variant_name(m.group(1)))
    elif m := re.search(r"(\S+) model buffer size", line):
        _BUFFERS.append(m.group(1))
    if level >= 4 and os.environ.get("XINSTRUCT_LLAMA_LOG"):  # llama.cpp prints every tensor load otherwise
        print(line, end="")


try:
    import llama_cpp as _L

    _LOG_CALLBACK = _L.llama_log_callback(_log)
except ImportError:  # pragma: no cover - llama-cpp-python is a dependency
    _LOG_CALLBACK = None
