"""Every environment variable the hub reads, parsed once into a frozen `Settings`.

stack/.env.example documents each variable for admins. A bad value raises `ConfigError` naming the
variable, its value and what to write instead.
"""

import ipaddress
import math
import os
import re
from dataclasses import dataclass

from jhub_hub.errors import ConfigError
from jhub_hub.passwords import COST_VARIABLE, MAX_COST, MIN_COST
from jhub_hub.placement import constraint_problem


def ldap_settings_from(env):
    # Imported here: ldap3 loads only on a hub that logs in against a directory.
    from jhub_hub.ldap import settings_from

    return settings_from(env)


def ldap_warnings(ldap_settings):
    from jhub_hub.ldap import warnings_for

    return warnings_for(ldap_settings)


TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})

# The grammar of memory sizes, the same as the Rust side's (jhub_docker::catalog): a positive number with
# an optional fraction and an optional K/M/G/T suffix, which Docker reads as powers of 1024.
MEM_SIZE_RE = re.compile(r"^[1-9][0-9]*(\.[0-9]+)?[KMGT]?$")
# What Docker accepts inside a container, volume or network name.
DOCKER_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")

# JupyterHub's subdomain_host: the hub's public origin; users' servers get a label in front of its name,
# so it is a DNS name of two labels or more, the last not all digits (that would be an IP address).
ORIGIN_RE = re.compile(r"^https://([a-z0-9-]+\.)+[a-z0-9-]*[a-z][a-z0-9-]*(:[0-9]{1,5})?$")

ADMIN_NAME = "admin"
MIN_PASSWORD_LENGTH = 8
DEFAULT_VIEW_PATH = "/srv/jhub/hub-view.json"


@dataclass(frozen=True)
class Settings:
    """The hub's environment, validated. Field comments name the variable each comes from."""

    stack_name: str  # JHUB_STACK_NAME: prefix of container names and the io.jhub-docker.stack label
    network: str  # JHUB_NETWORK: the Docker network user containers join
    user_volume_prefix: str  # JHUB_USER_VOLUME_PREFIX: each user's volume is <prefix><user>
    auth_strategy: str  # AUTH_STRATEGY: "native", "ldap" or "dummy"
    spawner: str  # SPAWNER: "dockerspawner" or "profiles"
    open_signup: bool  # OPEN_SIGNUP; unset: true only when JHUB_BIND_ADDRESS is loopback
    bind_address: str  # JHUB_BIND_ADDRESS: where the stack's port is published (compose passes it on)
    admin_password: str  # ADMIN_PASSWORD: "" = no bootstrap of the admin account
    dummy_password: str  # DUMMY_PASSWORD: the shared password of AUTH_STRATEGY=dummy
    idle_cull_timeout: int  # IDLE_CULL_TIMEOUT: seconds; 0 = never cull
    trust_xheaders: bool  # TRUST_XHEADERS
    trusted_proxies: tuple  # JHUB_TRUSTED_PROXIES: fronts before the proxy whose forwarded headers count
    tls_front: bool  # JHUB_TLS_FRONT: nginx terminates TLS in front (the TLS overlay sets it): cookies get Secure
    mem_limit: str  # JHUB_MEM_LIMIT
    cpu_limit: float  # JHUB_CPU_LIMIT
    pids_limit: int  # JHUB_PIDS_LIMIT
    named_server_limit: int  # JHUB_NAMED_SERVER_LIMIT
    view_path: str  # JHUB_VIEW: the resolved view of the images, written by `cargo xtask up`
    data_dir: str  # JHUB_DATA_DIR: sqlite database, cookie secret, pid file
    proxy_token_file: str  # JHUB_PROXY_TOKEN_FILE: on the volume shared with the proxy only
    hub_image: str  # JHUB_HUB_IMAGE: the hub's own image (compose runs it); archives of deleted users are copied in it
    subdomain_host: str  # JHUB_SUBDOMAIN_HOST: "" or https://HOST[:port], each user's server at <user>.HOST
    mode: str  # JHUB_MODE: "single" (containers on the hub's engine) or "swarm" (one Swarm service per server)
    swarm_constraints: tuple  # JHUB_SWARM_CONSTRAINTS: placement constraints of every user server in swarm mode
    bcrypt_cost: int = 10  # JHUB_BCRYPT_COST: bcrypt's cost for new password hashes (10-16; OWASP's least is 10)
    concurrent_starts: int = 2  # JHUB_CONCURRENT_STARTS: servers that start at once on this host; others queue
    ldap: object = None  # the LDAP_* variables (jhub_hub.ldap.LdapSettings), with AUTH_STRATEGY=ldap only


def from_environ(environ):
    """Parse a mapping like `os.environ` into `Settings`, or raise `ConfigError` for the first bad value."""
    env = _Environment(environ)
    bind_address = env.text("JHUB_BIND_ADDRESS", "127.0.0.1")
    settings = Settings(
        stack_name=env.docker_name("JHUB_STACK_NAME", "jhub"),
        network=env.docker_name("JHUB_NETWORK", "jupyterhub-net"),
        user_volume_prefix=env.docker_name("JHUB_USER_VOLUME_PREFIX", "jupyterhub-user-"),
        auth_strategy=env.choice("AUTH_STRATEGY", "native", ("native", "ldap", "dummy")),
        spawner=env.choice("SPAWNER", "dockerspawner", ("dockerspawner", "profiles")),
        open_signup=env.boolean("OPEN_SIGNUP", is_loopback(bind_address)),
        bind_address=bind_address,
        admin_password=environ.get("ADMIN_PASSWORD", ""),
        dummy_password=environ.get("DUMMY_PASSWORD", ""),
        idle_cull_timeout=env.integer("IDLE_CULL_TIMEOUT", 3600),
        trust_xheaders=env.boolean("TRUST_XHEADERS", False),
        trusted_proxies=tuple(env.text("JHUB_TRUSTED_PROXIES", "").split()),
        tls_front=env.boolean("JHUB_TLS_FRONT", False),
        mem_limit=env.mem_size("JHUB_MEM_LIMIT", "4G", "set JHUB_MEM_LIMIT to e.g. 4G or 512M"),
        cpu_limit=env.cpus("JHUB_CPU_LIMIT", "2", "set JHUB_CPU_LIMIT to e.g. 2 or 0.5"),
        pids_limit=env.integer("JHUB_PIDS_LIMIT", 2048, minimum=64),
        named_server_limit=env.integer("JHUB_NAMED_SERVER_LIMIT", 3),
        view_path=env.text("JHUB_VIEW", DEFAULT_VIEW_PATH),
        data_dir=env.text("JHUB_DATA_DIR", "/srv/jupyterhub/data"),
        proxy_token_file=env.text("JHUB_PROXY_TOKEN_FILE", "/srv/jupyterhub/proxy/proxy_auth_token"),
        hub_image=env.text("JHUB_HUB_IMAGE", ""),
        subdomain_host=env.origin("JHUB_SUBDOMAIN_HOST"),
        mode=env.choice("JHUB_MODE", "single", ("single", "swarm")),
        swarm_constraints=env.constraints("JHUB_SWARM_CONSTRAINTS"),
        bcrypt_cost=env.bcrypt_cost(),
        concurrent_starts=env.integer("JHUB_CONCURRENT_STARTS", default_concurrent_starts(), minimum=0),
        ldap=ldap_settings_from(env) if environ.get("AUTH_STRATEGY") == "ldap" else None,
    )
    if f"{settings.stack_name}-archive-".startswith(settings.user_volume_prefix):
        raise ConfigError(
            f"JHUB_USER_VOLUME_PREFIX={settings.user_volume_prefix!r} would make the archives of deleted users "
            f"({settings.stack_name}-archive-…) look like user volumes",
            f"use a prefix that {settings.stack_name}-archive- does not start with (default: jupyterhub-user-)",
        )
    if settings.auth_strategy == "native":
        if settings.admin_password and len(settings.admin_password) < MIN_PASSWORD_LENGTH:
            raise ConfigError(
                f"ADMIN_PASSWORD is shorter than {MIN_PASSWORD_LENGTH} characters",
                f"set ADMIN_PASSWORD to at least {MIN_PASSWORD_LENGTH} characters, "
                "or unset it to sign up as admin by hand",
            )
    elif settings.auth_strategy == "ldap":
        pass
    elif not settings.dummy_password:
        raise ConfigError(
            "AUTH_STRATEGY=dummy needs DUMMY_PASSWORD (else anyone logs in as anyone with no password)",
            "set DUMMY_PASSWORD, or use AUTH_STRATEGY=native",
        )
    return settings


def warnings_for(settings):
    """Settings that are valid but have no effect, or that open the hub to strangers, as lines for stderr."""
    warnings = []
    if settings.auth_strategy == "dummy" and settings.admin_password:
        warnings.append("warning: ADMIN_PASSWORD is ignored with AUTH_STRATEGY=dummy")
    if settings.auth_strategy == "native" and settings.open_signup and not is_loopback(settings.bind_address):
        warnings.append(
            f"warning: OPEN_SIGNUP=true with JHUB_BIND_ADDRESS={settings.bind_address}: anyone who reaches the port "
            "gets an approved account and a shell in a container"
        )
    if settings.auth_strategy == "ldap":
        warnings.extend(ldap_warnings(settings.ldap))
        if settings.admin_password:
            warnings.append(
                "warning: ADMIN_PASSWORD is ignored with AUTH_STRATEGY=ldap (admins come from LDAP_ADMIN_GROUPS)"
            )
    if settings.mode != "swarm" and settings.swarm_constraints:
        warnings.append("warning: JHUB_SWARM_CONSTRAINTS is ignored with JHUB_MODE=single")
    return warnings


def default_concurrent_starts():
    """One server start per core of the host (at least two): a start is mostly one busy core, so more at once
    only makes each slower; 0 in JHUB_CONCURRENT_STARTS turns the queue off."""
    return max(2, os.cpu_count() or 2)


def is_loopback(address):
    """Whether a bind address serves this machine only: 127.0.0.0/8, ::1 or localhost."""
    address = address.strip().strip("[]").lower()
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def is_mem_size(value):
    """Whether `value` is a memory size in the grammar the Rust side accepts (e.g. `4G`, `1.5G`, `512M`)."""
    return isinstance(value, str) and MEM_SIZE_RE.match(value) is not None


class _Environment:
    """Typed reads of one environment mapping; an empty or blank value means the default."""

    def __init__(self, environ):
        self.environ = environ

    def raw(self, name):
        return self.environ.get(name, "").strip()

    def text(self, name, default):
        return self.raw(name) or default

    def boolean(self, name, default):
        raw = self.raw(name).lower()
        if not raw:
            return default
        if raw in TRUE_WORDS:
            return True
        if raw in FALSE_WORDS:
            return False
        raise ConfigError(f"{name}={raw!r} is not a boolean", f"set {name} to true or false")

    def integer(self, name, default, minimum=0):
        raw = self.raw(name)
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise ConfigError(f"{name}={raw!r} is not a whole number >= {minimum}", f"set {name} to e.g. {default}")
        return value

    def bcrypt_cost(self):
        raw = self.raw(COST_VARIABLE)
        if not raw:
            return MIN_COST
        if not raw.isdigit() or not MIN_COST <= int(raw) <= MAX_COST:
            raise ConfigError(
                f"{COST_VARIABLE}={raw!r} is not a bcrypt cost from {MIN_COST} to {MAX_COST}",
                f"unset {COST_VARIABLE} for {MIN_COST} (OWASP's least for bcrypt), or set a whole number up to "
                f"{MAX_COST}; each step doubles the time of every login",
            )
        return int(raw)

    def choice(self, name, default, choices):
        raw = self.raw(name).lower() or default
        if raw not in choices:
            raise ConfigError(f"unknown {name} {raw!r}", f"set {name} to one of: {', '.join(choices)}")
        return raw

    def mem_size(self, name, default, hint):
        value = self.text(name, default)
        if not is_mem_size(value):
            raise ConfigError(f"{name} {value!r} is not a memory size", hint)
        return value

    def cpus(self, name, default, hint):
        value = self.text(name, default)
        try:
            cpus = float(value)
        except ValueError:
            cpus = math.nan
        if not (math.isfinite(cpus) and cpus > 0):
            raise ConfigError(f"{name} {value!r} is not a positive number of CPUs", hint)
        return cpus

    def origin(self, name):
        """An https origin with a DNS name of two labels or more (`https://hub.example.org[:port]`), or ""."""
        value = self.raw(name)
        if value and not ORIGIN_RE.match(value):
            raise ConfigError(
                f"{name}={value!r} is not an https origin with a host name",
                f"set {name} to e.g. https://hub.example.org or https://hub.localhost:8443 (cargo xtask up sets it)",
            )
        return value

    def constraints(self, name):
        """A comma-separated list of Swarm placement constraints (`node.labels.jhub.users==true,…`), or ()."""
        raw = self.raw(name)
        if not raw:
            return ()
        entries = [entry.strip() for entry in raw.split(",")]
        for entry in entries:
            problem = "it is empty (two commas in a row, or one at an end)" if not entry else constraint_problem(entry)
            if problem:
                raise ConfigError(
                    f"{name} entry {entry!r} is not a Swarm placement constraint: {problem}",
                    f"set {name} to constraints separated by commas, e.g. "
                    "node.labels.jhub.users==true,node.role!=manager",
                )
        return tuple(entries)

    def docker_name(self, name, default):
        value = self.text(name, default)
        if not DOCKER_NAME_RE.match(value):
            raise ConfigError(
                f"{name}={value!r} cannot be part of a Docker object name",
                f"use letters, digits, '_', '.' and '-' only (default: {default})",
            )
        return value
