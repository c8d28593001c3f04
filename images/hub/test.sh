#!/bin/sh
# test.sh: run the hub's unit tests and lint (ruff, pytest) alone, by building the hub Dockerfile's `test`
# stage, the same stage every `cargo xtask build-images` runs. The base image must exist (it does after any
# `cargo xtask build-images`); Docker's layer cache makes a rerun after a code change take seconds.
#
#   images/hub/test.sh            # from anywhere in the repository
#
# JHUB_CA_BUNDLE names the CA bundle for HTTPS in the build stage, as for `cargo xtask build-images`.
set -eu

hub_dir="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$hub_dir/../.." && pwd)"
ca_bundle="${JHUB_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

die() {
    echo "error: $1" >&2
    echo "hint: $2" >&2
    exit 1
}

command -v docker >/dev/null 2>&1 || die "docker is not installed" "install Docker, then run this again"
[ -r "$ca_bundle" ] || die "cannot read the build CA bundle $ca_bundle" "set JHUB_CA_BUNDLE to a PEM bundle"
# The base image as the build pipeline recorded it: its content-keyed tag, jhub/base:<first 12 of the key>.
base_key="$(awk '/^\[image\.base\]$/ {found=1; next} found && /^content_key = / {gsub(/"/, "", $3); print $3; exit}' "$root/images.lock")"
base_id="${base_key:+jhub/base:$(printf '%s' "${base_key#sha256:}" | cut -c1-12)}"
[ -n "$base_id" ] && docker image inspect "$base_id" >/dev/null 2>&1 \
    || die "the base image ${base_id:-of images.lock} is not in the Docker engine" "run \`cargo xtask build-images base\`"

# The context as the pipeline sends it: the folder without caches, plus the CA bundle.
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
tar -C "$hub_dir" --exclude=__pycache__ --exclude=node_modules --exclude=checks.toml -cf - . | tar -C "$context" -xf -
cp "$ca_bundle" "$context/jhub-build-ca.crt"

DOCKER_BUILDKIT=0 docker build --rm --force-rm --target test --build-arg "BASE_IMAGE=$base_id" \
    -t jhub/hub-test:latest "$context"
echo "hub tests passed" >&2
