"""What `jupyterhub_config.py` needs beyond plain values: the hub's state on disk, the culler, the proxy's address.

Each function here is one decision the config file applies with a `c.X = …` line; `load` reads and
checks everything the hub needs at start, in the order an admin fixes problems.
"""

import os
import sys
from dataclasses import dataclass

from jhub_hub import settings as settings_module
from jhub_hub import view as view_module
from jhub_hub.errors import ConfigError
from jhub_hub.ldap import LDAP_DIR
from jhub_hub.secrets import ensure_secret_file, read_secret_file

COOKIE_SECRET_RE = r"[0-9a-f]{64}"
PROXY_TOKEN_RE = r"[0-9a-zA-Z_-]{32,}"


@dataclass(frozen=True)
class HubState:
    """Paths and secrets on the hub's volumes, ready for use."""

    db_url: str
    cookie_secret_file: str
    pid_file: str
    proxy_token: str


@dataclass(frozen=True)
class Loaded:
    """Everything the configuration is made of."""

    settings: settings_module.Settings
    view: view_module.View
    state: HubState


def load(environ):
    """Settings from `environ`, the view they point at, and the hub's state prepared; or ConfigError."""
    settings = settings_module.from_environ(environ)
    view = view_module.load(settings.view_path)
    if settings.spawner == "profiles" and not view.profiles:
        raise ConfigError(
            f"SPAWNER=profiles but view {settings.view_path} has no profile",
            "add a [[profile]] to images/catalog.toml and run `cargo xtask up`, or use SPAWNER=dockerspawner",
        )
    if settings.ldap is not None:
        ldap_files_present(settings.ldap, LDAP_DIR)
    foldered = [group.name for group in view.groups if group.course_folder or group.shared_folder]
    if settings.mode == "swarm" and foldered:
        raise ConfigError(
            f"group folders ({', '.join(foldered)}) need one host: a swarm's nodes share no file system",
            "drop course_folder and shared_folder from those [[group]]s of images/catalog.toml on a swarm",
        )
    return Loaded(settings=settings, view=view, state=prepare_state(settings))


def prepare_state(settings):
    """Make the hub's files private, create the cookie secret and proxy token if absent, read them back.

    Sets the process umask to 077: every file the hub creates later (sqlite database and journal, pid
    file) is private to it.
    """
    os.umask(0o077)
    if not os.path.isdir(settings.data_dir):
        raise ConfigError(
            f"data directory {settings.data_dir} does not exist",
            "mount the jupyterhub_data volume at /srv/jupyterhub/data",
        )
    token_dir = os.path.dirname(settings.proxy_token_file)
    if not os.path.isdir(token_dir):
        raise ConfigError(
            f"proxy token directory {token_dir} does not exist",
            f"mount the jupyterhub_proxy_token volume at {token_dir} (hub and proxy)",
        )
    cookie_secret_file = os.path.join(settings.data_dir, "jupyterhub_cookie_secret")
    try:
        ensure_secret_file(cookie_secret_file)
        ensure_secret_file(settings.proxy_token_file)
    except PermissionError as e:
        raise ConfigError(
            f"cannot write secrets: {e}",
            "the hub must run as root (owner of the jupyterhub_data and jupyterhub_proxy_token volumes)",
        ) from None
    read_secret_file(cookie_secret_file, COOKIE_SECRET_RE)
    db_file = os.path.join(settings.data_dir, "jupyterhub.sqlite")
    if os.path.exists(db_file):
        os.chmod(db_file, 0o600)  # databases made before the umask above were 644
    return HubState(
        db_url=f"sqlite:///{db_file}",
        cookie_secret_file=cookie_secret_file,
        pid_file=os.path.join(settings.data_dir, "jupyterhub.pid"),
        proxy_token=read_secret_file(settings.proxy_token_file, PROXY_TOKEN_RE),
    )


def culler_services(settings):
    """The idle culler as a hub-managed service, or none when IDLE_CULL_TIMEOUT is 0."""
    if settings.idle_cull_timeout <= 0:
        return []
    timeout = settings.idle_cull_timeout
    return [
        {
            "name": "idle-culler",
            "command": [
                sys.executable,
                "-m",
                "jupyterhub_idle_culler",
                f"--timeout={timeout}",
                f"--cull-every={max(60, min(600, timeout // 4))}",
            ],
        }
    ]


def roles(settings):
    """`JupyterHub.load_roles`: the culler's scopes, and with dummy auth an admin role with no members.

    With AUTH_STRATEGY=dummy everyone who knows the one shared password could log in as `admin`.
    admin_users alone only adds admins; the admin role with an exact, empty member list also takes the
    flag from users who got it earlier (e.g. `admin` from a native-auth run on the same data volume).
    """
    result = []
    if settings.auth_strategy == "dummy":
        result.append({"name": "admin", "users": []})
    if settings.idle_cull_timeout > 0:
        result.append(
            {
                "name": "idle-culler",
                "description": "stop idle user servers",
                "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
                "services": ["idle-culler"],
            }
        )
    return result


def cookie_options(settings):
    """The hub's cookie attributes (`tornado_settings["cookie_options"]`; the `_xsrf` cookie takes them too).

    SameSite=Lax: a page of another site cannot make the browser send the hub's cookies with a POST, a
    frame or a script's request, only with a top-level link (and no GET changes state). Secure behind the
    TLS front door: the browser then never sends them over plain HTTP (JupyterHub marks its own cookies
    Secure for https requests by itself, but not `_xsrf`).
    """
    options = {"samesite": "Lax"}
    if settings.tls_front:
        options["secure"] = True
    return options


def catalog_groups(view):
    """`JupyterHub.load_groups`: every group of the catalog exists from the start, so the admin panel lists it
    and members can be added before anyone logs in. Only names: membership is the admin panel's, the REST
    API's or the directory's, and a restart must not take anyone out of a group."""
    return {group.name: {} for group in view.groups}


def named_server_limit(view, default):
    """`JupyterHub.named_server_limit_per_user`: a callable, asked at each new named server, giving a user the
    largest limit any of their groups sets, else `default` (JHUB_NAMED_SERVER_LIMIT)."""

    def limit_for(handler):
        user = handler.current_user
        groups = [group.name for group in getattr(user, "groups", None) or []]
        limit = view.limits_for(groups)["named_server_limit"]
        return default if limit is None else limit

    return limit_for


def ldap_files_present(ldap_settings, folder):
    """The LDAP folder's files the settings name (the directory's CA, the search account's password file)
    exist, so a missing one stops the hub at start with a hint instead of failing every login later."""
    for variable, name in (
        ("LDAP_CA_FILE", ldap_settings.ca_file),
        ("LDAP_SEARCH_PASSWORD_FILE", ldap_settings.search_password_file),
    ):
        if name and not os.path.isfile(os.path.join(folder, name)):
            raise ConfigError(
                f"{variable}={name} is not in the LDAP folder",
                f"put the file at stack/ldap/{name} (or in the folder JHUB_LDAP_DIR names) and run `cargo xtask up`",
            )
