#!/usr/bin/env bash
# Prepares a Debian 12/13 or Ubuntu 24.04 host (a fresh CI machine or a developer's) for jhub-docker:
# installs what is missing of the Docker engine, mmdebstrap, Compose v2, a browser with its chromedriver
# and npm, and starts dockerd when no engine answers. Idempotent: what is already there is left alone (an
# engine from docker-ce, any Compose v2, a browser named by JHUB_CHROMIUM / JHUB_CHROMEDRIVER). Needs root.
#
# Each piece is one step; a step that fails is reported and the others still run. Required pieces (engine,
# mmdebstrap, Compose v2) make the script exit 1 at the end when one is missing; optional ones (the
# browser, only for the acceptance test; npm, only for `cargo xtask lock`) print a warning and a hint.
#
# Compose v2 on Debian 12: bookworm only packages Compose 1.29 (unsupported, refused by the project), so
# the script fetches trixie's `docker-compose` package (2.26, one static Go binary that needs libc6 >=
# 2.34) with a private apt configuration under a temporary folder and installs it with dpkg. The host's
# apt sources are never changed. JHUB_DEBIAN_MIRROR overrides the mirror it is fetched from.
set -uo pipefail

log() { printf 'setup-host: %s\n' "$*" >&2; }
engine_answers() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }
have() { command -v "$1" >/dev/null 2>&1; }

if [ "$(id -u)" -ne 0 ]; then
    log "error: must run as root (apt-get, dpkg and dockerd need it)"
    log "hint: sudo bash ci/setup-host.sh"
    exit 1
fi

os_id=$(. /etc/os-release && echo "${ID:-unknown}")
os_codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-unknown}")
failed=()
apt_updated=false

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if ! $apt_updated; then
        apt-get update -qq || return 1
        apt_updated=true
    fi
    log "apt-get install $*"
    apt-get install -y -qq "$@" >/dev/null
}

# The major version of the Compose v2 the host has ("" when only 1.x or nothing): the `docker compose`
# plugin, or a standalone `docker-compose` that is v2.
compose_v2_version() {
    local version
    for cli in "docker compose" "docker-compose"; do
        version=$($cli version --short 2>/dev/null) || continue
        version=${version#v}
        case "$version" in
            2.* | [3-9].*) echo "$version"; return 0 ;;
        esac
    done
    return 1
}

step_engine() {
    if ! have dockerd && ! engine_answers; then
        apt_install docker.io || return 1
    fi
    if engine_answers; then
        log "docker engine already answers"
        return 0
    fi
    log "starting dockerd (log: /var/log/dockerd.log)"
    # setsid: the engine must outlive this script and the shell that ran it.
    setsid dockerd >/var/log/dockerd.log 2>&1 </dev/null &
    for _ in $(seq 1 60); do
        engine_answers && return 0
        sleep 1
    done
    log "error: dockerd did not answer within 60 s"
    log "hint: read /var/log/dockerd.log"
    tail -n 20 /var/log/dockerd.log >&2 || true
    return 1
}

step_mmdebstrap() {
    local packages=()
    have mmdebstrap || packages+=(mmdebstrap)
    # mmdebstrap checks Debian's signatures; Debian hosts have the keyring, other distributions need it.
    [ "$os_id" = debian ] || [ -s /usr/share/keyrings/debian-archive-keyring.gpg ] || packages+=(debian-archive-keyring)
    [ "${#packages[@]}" -eq 0 ] || apt_install "${packages[@]}"
}

# Debian 12: trixie's docker-compose package through a private apt configuration (see the header).
install_trixie_compose() {
    local tmp mirror
    tmp=$(mktemp -d) || return 1
    mirror=${JHUB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
    mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror trixie main" >"$tmp/sources.list"
    # Only this list, this state and this cache: the system's sources, lists and caches stay untouched.
    # The folder is root's (mktemp), so apt's download sandbox user could not write to it.
    local apt_options=(
        -o "Dir::Etc::SourceList=$tmp/sources.list" -o "Dir::Etc::SourceParts=-"
        -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache"
        -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache=" -o "APT::Sandbox::User=root"
    )
    log "fetching Compose v2 (trixie's docker-compose package) from $mirror with a private apt configuration"
    if apt-get -qq "${apt_options[@]}" update &&
        (cd "$tmp" && apt-get -qq "${apt_options[@]}" download docker-compose) &&
        dpkg -i "$tmp"/docker-compose_*.deb >/dev/null; then
        rm -rf "$tmp"
        return 0
    fi
    rm -rf "$tmp"
    return 1
}

step_compose() {
    local version
    if version=$(compose_v2_version); then
        log "compose $version already installed"
        return 0
    fi
    case "$os_id:$os_codename" in
        debian:bookworm) install_trixie_compose || return 1 ;;
        ubuntu:*) apt_install docker-compose-v2 || return 1 ;;
        *) apt_install docker-compose || return 1 ;;
    esac
    if version=$(compose_v2_version); then
        log "compose $version installed"
        return 0
    fi
    log "error: Compose v2 is still missing after the install (only 1.x answers?)"
    log "hint: install the compose v2 plugin by hand: https://docs.docker.com/compose/install/linux/"
    return 1
}

# The acceptance test's browser. Optional: without it the platform builds and runs; only the browser test
# cannot. On Ubuntu `chromium` is a snap transitional package, so nothing is installed there.
step_browser() {
    if [ -n "${JHUB_CHROMIUM:-}" ] && [ -n "${JHUB_CHROMEDRIVER:-}" ]; then
        log "browser: JHUB_CHROMIUM=$JHUB_CHROMIUM, JHUB_CHROMEDRIVER=$JHUB_CHROMEDRIVER"
        return 0
    fi
    if [ "$os_id" = debian ]; then
        local packages=()
        [ -n "${JHUB_CHROMIUM:-}" ] || have chromium || packages+=(chromium)
        [ -n "${JHUB_CHROMEDRIVER:-}" ] || have chromedriver || packages+=(chromium-driver)
        [ "${#packages[@]}" -eq 0 ] || apt_install "${packages[@]}" || return 1
        return 0
    fi
    # Elsewhere: Google's Chrome with a chromedriver of the same major version, if both are there.
    local chrome driver chrome_major driver_major
    chrome=${JHUB_CHROMIUM:-$(command -v google-chrome || command -v google-chrome-stable || true)}
    driver=${JHUB_CHROMEDRIVER:-$(command -v chromedriver || true)}
    if [ -n "$chrome" ] && [ -n "$driver" ]; then
        chrome_major=$("$chrome" --version 2>/dev/null | grep -oE '[0-9]+\.' | head -n 1)
        driver_major=$("$driver" --version 2>/dev/null | grep -oE '[0-9]+\.' | head -n 1)
        if [ -n "$chrome_major" ] && [ "$chrome_major" = "$driver_major" ]; then
            log "browser: $chrome with $driver (version ${chrome_major%.}); the acceptance test needs:"
            log "  export JHUB_CHROMIUM=$chrome JHUB_CHROMEDRIVER=$driver"
            return 0
        fi
        log "warning: $chrome and $driver are not the same major version (${chrome_major%.} vs ${driver_major%.})"
    else
        log "warning: no browser for the acceptance test (chromium is a snap on $os_id: not installed)"
    fi
    log "hint: install Google Chrome and the matching chromedriver, then set JHUB_CHROMIUM and JHUB_CHROMEDRIVER"
    return 2
}

step_npm() {
    have npm && return 0
    apt_install npm || {
        log "warning: npm is missing: only \`cargo xtask lock\` needs it"
        log "hint: apt-get install -y npm"
        return 2
    }
}

# step name, required?
for step in engine:required mmdebstrap:required compose:required browser:optional npm:optional; do
    name=${step%%:*}
    "step_$name"
    status=$?
    if [ "$status" -eq 1 ] && [ "${step#*:}" = required ]; then
        log "error: step \`$name\` failed; the other steps ran"
        failed+=("$name")
    elif [ "$status" -eq 1 ]; then
        log "warning: optional step \`$name\` failed; the other steps ran"
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    log "error: missing after setup: ${failed[*]}"
    log "hint: read the messages above, fix what they name and run \`sudo bash ci/setup-host.sh\` again"
    exit 1
fi
log "engine $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})'), compose $(compose_v2_version), $(mmdebstrap --version)"
