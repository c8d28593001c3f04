#!/usr/bin/env bash
# The build + test sequence every CI runs (this repo's .ci/run and the nightly GitHub workflow): build all
# images against the committed lock's inputs, then run every test, the browser acceptance test included.
# Artifacts of a failed acceptance step land in target/acceptance-artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
echo "ci: cargo xtask build-images --locked" >&2
cargo xtask build-images --locked
built=$(date +%s)
echo "ci: images ready in $((built - started)) s" >&2

echo "ci: cargo test --workspace" >&2
cargo test --workspace
echo "ci: tests done in $(( $(date +%s) - built )) s" >&2
