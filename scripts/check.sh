#!/usr/bin/env bash
# Everything CI checks, in the order that fails fastest: lint, types, the test suite, then the main
# job on the repo's own models/.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

ruff check harness tests benchmarks
ruff format --check harness tests benchmarks
# The workflows and the Action: actions pinned by commit, no persisted credentials, no template
# expansion into scripts (offline: no GitHub API here).
zizmor --offline --min-severity medium .github/workflows/*.yml action.yml
mypy
pytest tests "$@"
gguf-harness test models/ --publish --harness-report out/report.json
