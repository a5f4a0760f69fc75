#!/usr/bin/env bash
# Set up xinstruct in ./.venv from nothing, or refresh it. `--dev` adds the test tools.
# llama-cpp-python compiles for ~10 minutes; its wheel is kept in $XINSTRUCT_WHEELHOUSE (and pip's cache)
# and reused on every later setup, so only the first one on a machine pays for it.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="server"
[ "${1:-}" = "--dev" ] && extras="dev,server"
# The wheel is compiled for this CPU (llama.cpp's native build: AVX2, AVX512, ...), so it is kept per CPU kind: a
# home folder shared by machines of other kinds must not hand one of them instructions it lacks.
cpu_kind="$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | tr ' ' '\n' | grep -E '^(avx|amx|fma|f16c|bmi)' | sort \
  | tr '\n' ' ' | cksum | cut -d' ' -f1 || true)"
wheelhouse="${XINSTRUCT_WHEELHOUSE:-$HOME/.cache/xinstruct/wheels}/cpu-${cpu_kind:-unknown}"
mkdir -p "$wheelhouse"
[ -x .venv/bin/python ] || python3 -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check "$@"; }
pip install -q --upgrade pip wheel setuptools
# torch 2.13.0: a local CPU wheel on our machines; with a bare `torch` pip would pull GBs of CUDA packages.
.venv/bin/python -c "import torch" 2>/dev/null || pip install -q "torch==2.13.0"
if ! ls "$wheelhouse"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python once (about 10 minutes on 2 cores); later setups reuse $wheelhouse"
  pip wheel -q --no-deps -w "$wheelhouse" "llama-cpp-python>=0.3.16"
fi
pip install -q --find-links "$wheelhouse" -e ".[$extras]"
echo "xinstruct is set up in .venv ($(.venv/bin/python -c 'import xinstruct, llama_cpp; print("llama-cpp-python", llama_cpp.__version__)'))"
