#!/usr/bin/env bash
# Set up xinstruct in ./.venv from nothing, or refresh it, from the locked versions (requirements.lock, with hashes;
# `--dev` takes requirements-dev.lock, which adds the test tools), then check the machine (`xinstruct doctor`).
#   --rebuild-llama   build llama-cpp-python again even if a wheel for it is kept
# llama-cpp-python is compiled here once; its wheel is kept in $XINSTRUCT_WHEELHOUSE and reused by later setups.
# XINSTRUCT_LLAMA_BUILD picks how (docs/INSTALL.md has the figures):
#   portable (default)  every x86-64 CPU variant of ggml's kernels, the best one chosen when it loads: one wheel for
#                       every machine that shares this home folder
#   native              this CPU's instructions only (-march=native): kept per CPU kind
set -euo pipefail
cd "$(dirname "$0")/.."
lock=requirements.lock rebuild=0 extras=server
for arg in "$@"; do
  case "$arg" in
    --dev) lock=requirements-dev.lock extras=server,dev ;;
    --rebuild-llama) rebuild=1 ;;
    *) echo "setup.sh: unknown option $arg (--dev, --rebuild-llama)" >&2; exit 2 ;;
  esac
done
build="${XINSTRUCT_LLAMA_BUILD:-portable}"
case "$build" in
  portable) cmake_args="-DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON -DCMAKE_INSTALL_BINDIR=llama_cpp/lib"
            kind=portable ;;
  native)   cmake_args="-DGGML_NATIVE=ON"
            # a native wheel holds this CPU's instructions: a home folder shared with other kinds must not hand
            # one of them instructions it lacks
            kind="native-$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | tr ' ' '\n' | grep -E '^(avx|amx|fma|f16c|bmi)' \
              | sort | tr '\n' ' ' | cksum | cut -d' ' -f1 || echo unknown)" ;;
  *) echo "setup.sh: XINSTRUCT_LLAMA_BUILD is portable or native, not $build" >&2; exit 2 ;;
esac
cmake_args="$cmake_args -DLLAVA_BUILD=OFF"  # the multimodal library: not used here, minutes of compiling
llama_version="$(sed -n 's/^llama-cpp-python==\([^ ]*\).*/\1/p' $lock)"
wheelhouse="${XINSTRUCT_WHEELHOUSE:-$HOME/.cache/xinstruct/wheels}/llama-cpp-python-$llama_version-$kind"
mkdir -p "$wheelhouse"

[ -x .venv/bin/python ] || python3 -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check "$@"; }
pip install -q --upgrade pip wheel setuptools
py="$(.venv/bin/python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
if [ "$py" != "3.11" ]; then  # the lock is for CPython 3.11: elsewhere, pyproject's ranges (untested versions)
  echo "note: Python $py, the lock files are for 3.11: installing from pyproject.toml's version ranges instead"
  lock=""
fi

# llama-cpp-python: its source, checked against the lock's hash, compiled once (about 10 minutes on 2 cores)
if [ "$rebuild" = 1 ] || ! ls "$wheelhouse"/llama_cpp_python-*.whl >/dev/null 2>&1; then
  echo "building llama-cpp-python $llama_version ($build build); later setups reuse $wheelhouse"
  req="$(mktemp)"
  awk '/^llama-cpp-python==/{on=1} on&&/^[a-z]/&&!/^llama-cpp-python==/{on=0} on' requirements.lock > "$req"
  rm -f "$wheelhouse"/llama_cpp_python-*.whl
  start=$SECONDS
  CMAKE_ARGS="$cmake_args" pip wheel -q --no-deps --require-hashes --no-binary llama-cpp-python -w "$wheelhouse" -r "$req"
  echo "built in $((SECONDS - start)) s"
  rm -f "$req"
fi
pip install -q --no-deps --force-reinstall "$wheelhouse"/llama_cpp_python-*.whl

# torch: the CPU build (a bare `torch` pulls GBs of CUDA packages); from pip's own sources where they have it (our
# machines keep the wheel locally), else from pytorch's CPU index
torch_version="$(sed -n 's/^torch==\([^ ]*\).*/\1/p' requirements.lock)"
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__ != '$torch_version')" 2>/dev/null; then
  pip install -q "torch==$torch_version" 2>/dev/null \
    || pip install -q "torch==$torch_version" --extra-index-url "${XINSTRUCT_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
fi

if [ -n "$lock" ]; then
  pip install -q --require-hashes -r "$lock"
  pip install -q --no-deps -e .
else
  pip install -q -e ".[$extras]"
fi
.venv/bin/xinstruct doctor
