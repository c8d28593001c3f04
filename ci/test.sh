#!/usr/bin/env bash
# The build + test sequence every CI runs (this repo's .ci/run and the nightly GitHub workflow): build all
# images against the committed lock's inputs, then run every test, the browser acceptance test included.
# Artifacts of a failed acceptance step land in target/acceptance-artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
# The tree is tidy before anything is built: formatted, and clippy-clean with warnings as errors (ruff and
# the hub's pytest run inside the hub image's build).
echo "ci: cargo fmt --check, cargo clippy -D warnings" >&2
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
echo "ci: cargo xtask build-images --locked" >&2
cargo xtask build-images --locked
built=$(date +%s)
echo "ci: images ready in $((built - started)) s" >&2

echo "ci: cargo test --workspace -- --test-threads=1" >&2
# One test at a time, in name order: the resilience test's cases each start a stack, and its Docker
# daemon restart (z_docker_daemon_restart, with JHUB_TEST_RESTART_ENGINE=1) must come last.
cargo test --workspace -- --test-threads=1
echo "ci: tests done in $(( $(date +%s) - built )) s" >&2
