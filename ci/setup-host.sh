#!/usr/bin/env bash
# Prepares a Debian/Ubuntu host (a fresh CI machine or a developer's) for jhub-docker: installs what is
# missing of the Docker engine, mmdebstrap, Compose, Chromium and chromedriver from the distribution, and
# starts dockerd when no engine answers. Idempotent: what is already there is left alone (an engine from
# docker-ce, a compose v2 plugin, a browser named by JHUB_CHROMIUM / JHUB_CHROMEDRIVER). Needs root.
set -euo pipefail

log() { printf 'setup-host: %s\n' "$*" >&2; }
engine_answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if [ "$(id -u)" -ne 0 ]; then
    log "error: must run as root (apt-get and dockerd need it)"
    log "hint: sudo bash ci/setup-host.sh"
    exit 1
fi

os_id=$(. /etc/os-release && echo "${ID:-unknown}")
missing=()
command -v dockerd >/dev/null || engine_answers || missing+=(docker.io)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
# mmdebstrap checks Debian's signatures; Debian hosts have the keyring, other distributions need it.
[ "$os_id" = debian ] || [ -s /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || missing+=(docker-compose)
if [ -z "${JHUB_CHROMIUM:-}" ] && ! command -v chromium >/dev/null; then missing+=(chromium); fi
if [ -z "${JHUB_CHROMEDRIVER:-}" ] && ! command -v chromedriver >/dev/null; then missing+=(chromium-driver); fi
command -v npm >/dev/null || missing+=(npm)

if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if engine_answers; then
    log "docker engine already answers"
else
    log "starting dockerd (log: /var/log/dockerd.log)"
    # setsid: the engine must outlive this script and the shell that ran it.
    setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
    for _ in $(seq 1 60); do
        engine_answers && break
        sleep 1
    done
    if ! engine_answers; then
        log "error: dockerd did not answer within 60 s"
        log "hint: read /var/log/dockerd.log"
        tail -n 20 /var/log/dockerd.log >&2 || true
        exit 1
    fi
fi
log "engine $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})'), $(mmdebstrap --version)"
