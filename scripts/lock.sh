#!/usr/bin/env bash
# Refresh requirements.lock and requirements-dev.lock (+ the test tools): the exact versions and hashes that
# scripts/setup.sh installs (CPython 3.11, x86-64 Linux).
# Versions already in the lock are kept; `bash scripts/lock.sh --upgrade` takes the newest that pyproject.toml
# allows (then run the tests before committing it). torch is the CPU build (+cpu), from pytorch's CPU index.
set -euo pipefail
cd "$(dirname "$0")/.."
# torch's CPU wheel: from the machine's wheel folder where pip has one (PIP_FIND_LINKS), else pytorch's CPU index
torch_from="--extra-index-url https://download.pytorch.org/whl/cpu"
[ -n "${PIP_FIND_LINKS:-}" ] && torch_from="--find-links $PIP_FIND_LINKS"
[ -x .venv/bin/uv ] || .venv/bin/python -m pip install -q uv
.venv/bin/uv pip compile pyproject.toml --extra server --generate-hashes \
  --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
  $torch_from --index-strategy unsafe-best-match \
  --custom-compile-command "bash scripts/lock.sh" -o requirements.lock -q "$@"
.venv/bin/uv pip compile pyproject.toml --extra dev --extra server --generate-hashes \
  --python-version 3.11 --python-platform x86_64-manylinux_2_28 $torch_from --index-strategy unsafe-best-match \
  --custom-compile-command "bash scripts/lock.sh" -c requirements.lock -o requirements-dev.lock -q "$@"
echo "requirements.lock: $(grep -c "==" requirements.lock) packages, requirements-dev.lock: $(grep -c "==" requirements-dev.lock)"
