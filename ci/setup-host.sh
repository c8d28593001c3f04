#!/usr/bin/env bash
# Prepares a Debian/Ubuntu host (a fresh CI machine or a developer's) for jhub-docker: installs the Docker
# engine, mmdebstrap, Compose, Chromium and chromedriver from the distribution, and starts dockerd when no
# engine answers. Idempotent: what is already there is left alone. Needs root.
set -euo pipefail

log() { printf 'setup-host: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
    log "error: must run as root (apt-get and dockerd need it)"
    log "hint: sudo bash ci/setup-host.sh"
    exit 1
fi

packages=(docker.io mmdebstrap docker-compose chromium chromium-driver ca-certificates)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f '${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
    log "docker engine already answers"
else
    log "starting dockerd (log: /var/log/dockerd.log)"
    # setsid: the engine must outlive this script and the shell that ran it.
    setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
    for _ in $(seq 1 60); do
        docker version --format '{{.Server.Version}}' >/dev/null 2>&1 && break
        sleep 1
    done
    if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
        log "error: dockerd did not answer within 60 s"
        log "hint: read /var/log/dockerd.log"
        tail -n 20 /var/log/dockerd.log >&2 || true
        exit 1
    fi
fi
log "engine $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})'), $(mmdebstrap --version), $(chromedriver --version | cut -d' ' -f1-2)"
