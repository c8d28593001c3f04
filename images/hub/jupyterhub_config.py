"""JupyterHub configuration of jhub-docker: one Docker container per user, spawned by DockerSpawner.

Everything an admin may change comes from the environment (stack/.env.example documents each variable);
everything about images comes from the catalog and the lock mounted at /srv/jhub/ (JHUB_CATALOG,
JHUB_LOCK override the paths). This file never names an image by a hand-written tag: each single-user
entry of the catalog spawns the image id the build pipeline recorded in images.lock.

Bad input stops the hub before it serves anything, with one `error:` line and one `hint:` line on stderr
and a non-zero exit status.
"""

import binascii
import html
import os
import re
import secrets
import socket
import sys
import tomllib
from dataclasses import dataclass

import bcrypt
import docker.errors
from dockerspawner import DockerSpawner
from jupyterhub.auth import DummyAuthenticator
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.orm import UserInfo
from tornado import web
from traitlets import Unicode, default, directional_link
from wrapspawner import ProfilesSpawner

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)


# --------------------------------------------------------------------------------------------------------
# Errors and environment parsing


def fail(message, hint):
    """Stop the hub with a one-line error and a hint; SystemExit prints it on stderr and exits 1."""
    raise SystemExit(f"error: {message}\nhint: {hint}")


def env_str(name, default=""):
    return os.environ.get(name, default).strip() or default


TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


def env_bool(name, default):
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS:
        return False
    fail(f"{name}={raw!r} is not a boolean", f"set {name} to true or false")


def env_int(name, default, minimum=0):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or value < minimum:
        fail(f"{name}={raw!r} is not a whole number >= {minimum}", f"set {name} to e.g. {default}")
    return value


def env_choice(name, default, choices):
    raw = os.environ.get(name, "").strip().lower() or default
    if raw not in choices:
        fail(f"unknown {name} {raw!r}", f"set {name} to one of: {', '.join(choices)}")
    return raw


MEM_RE = re.compile(r"^[1-9][0-9]*(\.[0-9]+)?[KMGT]?$")


def check_mem_limit(where, value, hint):
    if not isinstance(value, str) or not MEM_RE.match(value):
        fail(f"{where} {value!r} is not a memory size", hint)
    return value


def check_cpu_limit(where, value, hint):
    try:
        cpus = float(value)
    except (TypeError, ValueError):
        cpus = 0.0
    if not cpus > 0:
        fail(f"{where} {value!r} is not a positive number of CPUs", hint)
    return cpus


NAME_PART_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")


def env_docker_name(name, default):
    value = env_str(name, default)
    if not NAME_PART_RE.match(value):
        fail(
            f"{name}={value!r} cannot be part of a Docker object name",
            f"use letters, digits, '_', '.' and '-' only (default: {default})",
        )
    return value


STACK_NAME = env_docker_name("JHUB_STACK_NAME", "jhub")
NETWORK = env_docker_name("JHUB_NETWORK", "jupyterhub-net")
USER_VOLUME_PREFIX = env_docker_name("JHUB_USER_VOLUME_PREFIX", "jupyterhub-user-")
AUTH_STRATEGY = env_choice("AUTH_STRATEGY", "native", ["native", "dummy"])
SPAWNER = env_choice("SPAWNER", "dockerspawner", ["dockerspawner", "profiles"])
OPEN_SIGNUP = env_bool("OPEN_SIGNUP", True)
ADMIN_PASSWORD = os.environ.get("ADMIN_PASSWORD", "")
DUMMY_PASSWORD = os.environ.get("DUMMY_PASSWORD", "")
IDLE_CULL_TIMEOUT = env_int("IDLE_CULL_TIMEOUT", 3600)
TRUST_XHEADERS = env_bool("TRUST_XHEADERS", False)
MEM_LIMIT = check_mem_limit(
    "JHUB_MEM_LIMIT", env_str("JHUB_MEM_LIMIT", "4G"), "set JHUB_MEM_LIMIT to e.g. 4G or 512M"
)
CPU_LIMIT = check_cpu_limit(
    "JHUB_CPU_LIMIT", env_str("JHUB_CPU_LIMIT", "2"), "set JHUB_CPU_LIMIT to e.g. 2 or 0.5"
)
PIDS_LIMIT = env_int("JHUB_PIDS_LIMIT", 2048, minimum=64)
NAMED_SERVER_LIMIT = env_int("JHUB_NAMED_SERVER_LIMIT", 3)
CATALOG_PATH = env_str("JHUB_CATALOG", "/srv/jhub/catalog.toml")
LOCK_PATH = env_str("JHUB_LOCK", "/srv/jhub/images.lock")
DATA_DIR = env_str("JHUB_DATA_DIR", "/srv/jupyterhub/data")
# The proxy's API token lives on a volume of its own, shared with the proxy service, which must not see
# the hub's data (cookie secret, the database with password hashes).
PROXY_TOKEN_FILE = env_str("JHUB_PROXY_TOKEN_FILE", "/srv/jupyterhub/proxy/proxy_auth_token")

ADMIN_NAME = "admin"
MIN_PASSWORD_LENGTH = 8
BUILD_HINT = "run `cargo xtask build-images` to build the images and write images.lock"


# --------------------------------------------------------------------------------------------------------
# Catalog and lock: which images users can spawn, and the exact image id of each


@dataclass(frozen=True)
class SingleUserImage:
    name: str
    display_name: str
    description: str
    home: str
    default_url: str
    image_id: str


@dataclass(frozen=True)
class Profile:
    name: str
    display_name: str
    image: SingleUserImage
    cpu_limit: float
    mem_limit: str


def read_toml(path, what):
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        fail(f"{what} {path} does not exist", f"mount it into the hub container; {BUILD_HINT}")
    except IsADirectoryError:
        fail(
            f"{what} {path} is a directory (Docker creates one when the mounted file is missing)",
            f"remove the empty directory on the host, then {BUILD_HINT}",
        )
    except tomllib.TOMLDecodeError as e:
        fail(f"{what} {path} is not valid TOML: {e}", f"fix the file or {BUILD_HINT}")


IMAGE_ID_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


def load_images(catalog_path, lock_path):
    catalog = read_toml(catalog_path, "catalog")
    lock = read_toml(lock_path, "lock")
    if lock.get("version") != 1:
        fail(f"lock {lock_path} has version {lock.get('version')!r}, expected 1", BUILD_HINT)
    locked = lock.get("image", {})

    images = []
    for entry in catalog.get("image", []):
        if not entry.get("single_user"):
            continue
        name = entry.get("name", "?")
        for field in ("display_name", "home", "default_url"):
            if not isinstance(entry.get(field), str) or not entry[field]:
                fail(
                    f"catalog {catalog_path}: single-user image {name!r} has no {field}",
                    "every single_user entry needs display_name, home and default_url",
                )
        if not entry["home"].startswith("/") or not entry["default_url"].startswith("/"):
            fail(
                f"catalog {catalog_path}: image {name!r} home/default_url must be absolute paths",
                'write e.g. home = "/home/jovyan", default_url = "/lab"',
            )
        image_id = locked.get(name, {}).get("image_id")
        if image_id is None:
            fail(f"lock {lock_path} has no entry for image {name!r}", BUILD_HINT)
        if not isinstance(image_id, str) or not IMAGE_ID_RE.match(image_id):
            fail(f"lock {lock_path}: image {name!r} has a malformed image_id {image_id!r}", BUILD_HINT)
        images.append(
            SingleUserImage(
                name=name,
                display_name=entry["display_name"],
                description=entry.get("description", ""),
                home=entry["home"],
                default_url=entry["default_url"],
                image_id=image_id,
            )
        )
    if not images:
        fail(f"catalog {catalog_path} has no single_user image", "add an [[image]] with single_user = true")
    for attr in ("name", "display_name"):
        values = [getattr(i, attr) for i in images]
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            fail(f"catalog {catalog_path}: duplicate {attr} {dupes[0]!r}", f"make every {attr} unique")

    by_name = {i.name: i for i in images}
    profiles = []
    for entry in catalog.get("profile", []):
        name = entry.get("name", "?")
        where = f"catalog {catalog_path}: profile {name!r}"
        image = by_name.get(entry.get("image"))
        if image is None:
            fail(
                f"{where} names image {entry.get('image')!r}, which is no single_user image",
                f"use one of: {', '.join(by_name)}",
            )
        if not entry.get("display_name"):
            fail(f"{where} has no display_name", "add display_name to the [[profile]]")
        profiles.append(
            Profile(
                name=name,
                display_name=entry["display_name"],
                image=image,
                cpu_limit=check_cpu_limit(f"{where} cpu_limit", entry.get("cpu_limit"), "write e.g. 1.0"),
                mem_limit=check_mem_limit(f"{where} mem_limit", entry.get("mem_limit"), 'write e.g. "2G"'),
            )
        )
    return images, profiles


IMAGES, PROFILES = load_images(CATALOG_PATH, LOCK_PATH)
IMAGES_BY_NAME = {i.name: i for i in IMAGES}
# A spawn request may name an image by its dropdown text (DockerSpawner's allowed_images key, what the
# form posts) or by its catalog name (handier in REST calls).
IMAGES_BY_CHOICE = {**{i.display_name: i for i in IMAGES}, **IMAGES_BY_NAME}
if SPAWNER == "profiles" and not PROFILES:
    fail(f"SPAWNER=profiles but catalog {CATALOG_PATH} has no [[profile]]", "add profiles or use SPAWNER=dockerspawner")


# --------------------------------------------------------------------------------------------------------
# Secrets on the data volume: created once, mode 600, stable across restarts


def ensure_secret_file(path, make_text):
    """Create path with mode 600 if absent, atomically: a reader sees no file or the whole file.

    The proxy service's start script (jhub-proxy) creates the proxy token the same way, so whichever of
    the two starts first wins and the other reads the winner's token. (jhub-proxy then gives the file to
    the proxy's unprivileged user; the hub, root, still reads it.)
    """
    if os.path.exists(path):
        return
    directory = os.path.dirname(path)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(make_text() + "\n")
        try:
            os.link(tmp, path)  # fails if someone else created it meanwhile: keep theirs
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


def read_secret_file(path, pattern):
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        fail(f"{path} has mode {mode:03o}, readable by others", f"run `chmod 600 {path}` in the hub container")
    with open(path) as f:
        text = f.read().strip()
    if not re.fullmatch(pattern, text):
        fail(f"{path} does not hold a valid secret", f"delete {path} and restart the stack to generate a new one")
    return text


# Every file the hub creates (sqlite database and its journal, pid file) is private to it.
os.umask(0o077)
if not os.path.isdir(DATA_DIR):
    fail(f"data directory {DATA_DIR} does not exist", "mount the jupyterhub_data volume at /srv/jupyterhub/data")
if not os.path.isdir(os.path.dirname(PROXY_TOKEN_FILE)):
    fail(
        f"proxy token directory {os.path.dirname(PROXY_TOKEN_FILE)} does not exist",
        f"mount the jupyterhub_proxy_token volume at {os.path.dirname(PROXY_TOKEN_FILE)} (hub and proxy)",
    )
try:
    COOKIE_SECRET_FILE = os.path.join(DATA_DIR, "jupyterhub_cookie_secret")
    ensure_secret_file(COOKIE_SECRET_FILE, lambda: secrets.token_hex(32))
    ensure_secret_file(PROXY_TOKEN_FILE, lambda: secrets.token_hex(32))
except PermissionError as e:
    fail(f"cannot write secrets: {e}", "the hub must run as root (owner of the jupyterhub_data and jupyterhub_proxy_token volumes)")
read_secret_file(COOKIE_SECRET_FILE, r"[0-9a-f]{64}")
DB_FILE = os.path.join(DATA_DIR, "jupyterhub.sqlite")
if os.path.exists(DB_FILE):
    os.chmod(DB_FILE, 0o600)  # databases made before the umask above were 644
PROXY_TOKEN = read_secret_file(PROXY_TOKEN_FILE, r"[0-9a-zA-Z_-]{32,}")


# --------------------------------------------------------------------------------------------------------
# Spawners


def form_html(select_name, label, choices):
    """The spawn form: a <select> of (value, text, description) choices, everything HTML-escaped.

    DockerSpawner 14's own form pastes a Python list repr between the options and does not escape the
    names; wrapspawner's does not escape either.
    """
    options = "\n".join(
        f'    <option value="{html.escape(value)}"{" selected" if i == 0 else ""}>{html.escape(text)}</option>'
        for i, (value, text, _) in enumerate(choices)
    )
    descriptions = "\n".join(
        f"    <li><strong>{html.escape(text)}</strong>: {html.escape(description)}</li>"
        for _, text, description in choices
        if description
    )
    return f"""
<div class="form-group mb-3">
  <label for="jhub-{select_name}" class="form-label">{html.escape(label)}</label>
  <select id="jhub-{select_name}" class="form-control form-select" name="{select_name}" required autofocus>
{options}
  </select>
  <ul class="form-text list-unstyled mt-2">
{descriptions}
  </ul>
</div>
"""


def first_form_value(formdata, key):
    values = formdata.get(key) or [""]
    return values[0] if isinstance(values[0], str) else ""


def escape_braces(text):
    # DockerSpawner formats every string of extra_create_kwargs with its template namespace: double
    # braces so that a user name like "a{b}" arrives unchanged.
    return text.replace("{", "{{").replace("}", "}}")


class JhubDockerSpawner(DockerSpawner):
    """DockerSpawner that resolves the chosen catalog entry at start: image id from the lock, the user's
    volume at that image's home, its default_url, and the io.jhub-docker.* labels."""

    jhub_image_entry = Unicode(
        "",
        help="Catalog entry to spawn regardless of user_options (set per profile by SPAWNER=profiles).",
    ).tag(config=True)

    def template_namespace(self):
        namespace = super().template_namespace()
        # "--<server>" for a named server, "" for the default one: see name_template below.
        namespace["server_suffix"] = f"--{namespace['servername']}" if namespace["raw_servername"] else ""
        return namespace

    @property
    def catalog_image(self):
        if self.jhub_image_entry:
            return IMAGES_BY_NAME[self.jhub_image_entry]
        return self.image_for_choice(self.user_options.get("image"))

    def image_for_choice(self, choice):
        if choice is None or choice == "":
            return IMAGES[0]
        if self.jhub_image_entry:
            raise web.HTTPError(400, "this hub offers profiles: choose a profile, not an image")
        image = IMAGES_BY_CHOICE.get(choice) if isinstance(choice, str) else None
        if image is None:
            known = ", ".join(repr(i.name) for i in IMAGES)
            raise web.HTTPError(400, f"unknown image {str(choice)[:100]!r}: choose one of {known}")
        return image

    @default("options_form")
    def _default_options_form(self):
        if len(IMAGES) < 2:
            return ""
        return form_html(
            "image", "Select an image:", [(i.display_name, i.display_name, i.description) for i in IMAGES]
        )

    @default("options_from_form")
    def _default_options_from_form(self):
        def options_from_form(formdata):
            # Refuse an unknown choice here, before any spawn starts: the form comes back with a 400.
            choice = first_form_value(formdata, "image")
            return {"image": self.image_for_choice(choice).display_name}

        return options_from_form

    @default("apply_user_options")
    def _default_apply_user_options(self):
        # JupyterHub 5.3+ runs this before start(), for form and REST spawns alike: refuse early.
        def apply_user_options(spawner, user_options):
            spawner.image_for_choice(user_options.get("image"))

        return apply_user_options

    async def check_allowed(self, image):
        # Called by DockerSpawner.start with user_options["image"]: same resolution, same 400 errors.
        return self.image_for_choice(image).image_id

    async def start(self):
        image = self.catalog_image  # raises a 400 before any container exists
        self.image = image.image_id
        # The container name comes from name_template at this start, not from whatever an earlier trait
        # change rendered (DockerSpawner re-renders it when `image` changes, even during __init__, before
        # the config's prefix is loaded).
        self.object_name = self._object_name_default()
        self.default_url = image.default_url
        self.volumes = {f"{USER_VOLUME_PREFIX}{{username}}": {"bind": image.home, "mode": "rw"}}
        extra = dict(self.extra_create_kwargs) if isinstance(self.extra_create_kwargs, dict) else {}
        extra["labels"] = {
            **extra.get("labels", {}),
            "io.jhub-docker.stack": escape_braces(STACK_NAME),
            "io.jhub-docker.user": escape_braces(self.user.name),
            "io.jhub-docker.image": escape_braces(image.name),
        }
        self.extra_create_kwargs = extra
        self.log.info(
            "spawning %s with catalog image %r (%s), volume %s at %s",
            self._log_name, image.name, image.image_id[:19], f"{USER_VOLUME_PREFIX}{self.escaped_name}", image.home,
        )
        return await super().start()

    async def pull_image(self, image):
        try:
            await super().pull_image(image)
        except docker.errors.NotFound:
            # pull_policy "never": say which catalog entry is missing instead of a 500 traceback.
            raise web.HTTPError(
                503,
                f"image {self.catalog_image.name!r} ({image[:19]}) is not in the Docker engine: "
                "ask the admin to run `cargo xtask build-images`",
            )



# Traits JupyterHub sets on the spawner it holds at run time; with SPAWNER=profiles that is the
# wrapper, so they are forwarded to the child. Everything else the child takes from its own config:
# wrapspawner's link-everything default would overwrite DockerSpawner's ip (0.0.0.0) and port (8888)
# with the base Spawner's defaults.
FORWARDED_TRAITS = (
    "api_token",
    "admin_access",
    "cert_paths",
    "user_options",
    "oauth_client_id",
    "oauth_access_scopes",
    "oauth_client_allowed_scopes",
    "oauth_roles",
)


class JhubProfilesSpawner(ProfilesSpawner):
    """ProfilesSpawner with an escaped form, refusal of unknown profiles, and a child spawner built for
    JupyterHub 5 (orm_spawner, so named servers get their own container names) from the profile chosen
    for this very spawn."""

    @default("options_form")
    def _default_options_form(self):
        return form_html(
            "profile", "Select a profile:", [(key, display, "") for display, key, _cls, _conf in self.profiles]
        )

    def profile_for_choice(self, choice):
        keys = [p[1] for p in self.profiles]
        if choice is None or choice == "":
            return keys[0]
        if not isinstance(choice, str) or choice not in keys:
            known = ", ".join(repr(k) for k in keys)
            raise web.HTTPError(400, f"unknown profile {str(choice)[:100]!r}: choose one of {known}")
        return choice

    def options_from_form(self, formdata):
        return {"profile": self.profile_for_choice(first_form_value(formdata, "profile"))}

    @default("apply_user_options")
    def _default_apply_user_options(self):
        def apply_user_options(spawner, user_options):
            spawner.profile_for_choice(user_options.get("profile"))

        return apply_user_options

    def construct_child(self):
        if self.child_spawner is None:
            # No 400 here: JupyterHub also builds the child when it loads state, from user_options it
            # stored, maybe refused ones; a stale or unknown profile falls back to the first. start()
            # checks this spawn's choice strictly before calling this.
            profile = self.user_options.get("profile") or self.child_profile
            keys = [p[1] for p in self.profiles]
            self.child_profile = profile if profile in keys else keys[0]
            self.select_profile(self.child_profile)
            self.child_spawner = self.child_class(
                user=self.user,
                orm_spawner=self.orm_spawner,
                hub=self.hub,
                authenticator=self.authenticator,
                config=self.config,
                proxy_spec=self.proxy_spec,
                cookie_options=self.cookie_options,
                cookie_host_prefix_enabled=self.cookie_host_prefix_enabled,
                trusted_alt_names=self.trusted_alt_names,
                _deprecated_db_session=self._deprecated_db_session,
                **self.child_config,
            )
            self.child_spawner.clear_state()
            if self.child_state:
                self.child_spawner.load_state(self.child_state)
            for trait in FORWARDED_TRAITS:
                if self.has_trait(trait) and self.child_spawner.has_trait(trait):
                    directional_link((self, trait), (self.child_spawner, trait))
        return self.child_spawner

    def start(self):
        # JupyterHub loads state (building a child) when it creates the spawner, before this spawn's
        # user_options exist: build the child again from them. start() only runs for a stopped server.
        self.profile_for_choice(self.user_options.get("profile"))  # 400 before anything else
        self.child_spawner = None
        self.child_state = {}
        self.child_profile = ""
        return self.construct_child().start()


c.JupyterHub.spawner_class = JhubProfilesSpawner if SPAWNER == "profiles" else JhubDockerSpawner

# The user containers: on the stack's network, reached by internal IP, removed on stop (image switching
# depends on it; the named volume survives), never pulled (there is no registry: images come from the lock).
c.DockerSpawner.network_name = NETWORK
c.DockerSpawner.use_internal_ip = True
c.DockerSpawner.remove = True
c.DockerSpawner.pull_policy = "never"
c.DockerSpawner.prefix = f"{STACK_NAME}-user"
# Container names, explicitly: <stack>-user-<user> for the default server, <stack>-user-<user>--<server>
# for a named one (DockerSpawner's two defaults; {server_suffix} is JhubDockerSpawner's, so that one
# template covers both). Tests and `xtask down` find containers by label, but people read these names.
c.JhubDockerSpawner.name_template = "{prefix}-{username}{server_suffix}"
c.DockerSpawner.image = IMAGES[0].image_id
c.DockerSpawner.allowed_images = {i.display_name: i.image_id for i in IMAGES}
c.DockerSpawner.mem_limit = MEM_LIMIT
c.DockerSpawner.cpu_limit = CPU_LIMIT
c.DockerSpawner.extra_host_config = {
    "pids_limit": PIDS_LIMIT,
    # Every single-user image runs as uid 1000 and needs no privilege: no setuid/file-capability
    # escalation (sudo, su, ping) and no Linux capabilities at all.
    "security_opt": ["no-new-privileges:true"],
    "cap_drop": ["ALL"],
}
if SPAWNER == "profiles":
    c.JhubProfilesSpawner.profiles = [
        (
            p.display_name,
            p.name,
            JhubDockerSpawner,
            {
                "jhub_image_entry": p.image.name,
                "cpu_limit": p.cpu_limit,
                "mem_limit": p.mem_limit,
            },
        )
        for p in PROFILES
    ]

# Shared by the profiles wrapper and its child (both are Spawners).
c.Spawner.environment = {"JUPYTERHUB_SINGLEUSER_APP": "jupyter_server.serverapp.ServerApp"}
c.Spawner.default_url = IMAGES[0].default_url  # each spawn sets its image's default_url
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 90


# --------------------------------------------------------------------------------------------------------
# Authentication


class JhubNativeAuthenticator(NativeAuthenticator):
    """NativeAuthenticator that creates (or updates) the `admin` account from ADMIN_PASSWORD.

    JupyterHub 5 calls add_user for every user in its database during init_users, admin_users included
    (created there on first start), before the web server listens: the account exists before anyone can
    reach /hub/signup, so nobody can sign up as admin first.
    """

    bootstrap_admin_password = Unicode("", help="Password of the `admin` account (ADMIN_PASSWORD).").tag(
        config=True
    )

    def add_user(self, user):
        if user.name == ADMIN_NAME and self.bootstrap_admin_password:
            self.ensure_bootstrap_admin(self.bootstrap_admin_password)
        return super().add_user(user)

    def ensure_bootstrap_admin(self, password):
        info = UserInfo.find(self.db, ADMIN_NAME)
        if info is None:
            hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt())
            self.db.add(UserInfo(username=ADMIN_NAME, password=hashed, is_authorized=True))
            self.log.info("created the %r account from ADMIN_PASSWORD", ADMIN_NAME)
        else:
            if not info.is_valid_password(password):
                info.password = bcrypt.hashpw(password.encode(), bcrypt.gensalt())
                self.log.info("ADMIN_PASSWORD changed: updated the %r account's password", ADMIN_NAME)
            info.is_authorized = True
        self.db.commit()


c.Authenticator.allow_all = True
ROLES = []  # c.JupyterHub.load_roles, set once at the end
if AUTH_STRATEGY == "native":
    if ADMIN_PASSWORD and len(ADMIN_PASSWORD) < MIN_PASSWORD_LENGTH:
        fail(
            f"ADMIN_PASSWORD is shorter than {MIN_PASSWORD_LENGTH} characters",
            f"set ADMIN_PASSWORD to at least {MIN_PASSWORD_LENGTH} characters, or unset it to sign up as admin by hand",
        )
    c.Authenticator.admin_users = {ADMIN_NAME}
    c.JupyterHub.authenticator_class = JhubNativeAuthenticator
    c.JhubNativeAuthenticator.bootstrap_admin_password = ADMIN_PASSWORD
    c.NativeAuthenticator.open_signup = OPEN_SIGNUP
    c.NativeAuthenticator.minimum_password_length = MIN_PASSWORD_LENGTH
    # Both have no effective default in NativeAuthenticator 1.3.0 (0 = no lockout): set them.
    c.NativeAuthenticator.allowed_failed_logins = 5
    c.NativeAuthenticator.seconds_before_next_try = 600
else:
    if not DUMMY_PASSWORD:
        fail(
            "AUTH_STRATEGY=dummy needs DUMMY_PASSWORD (else anyone logs in as anyone with no password)",
            "set DUMMY_PASSWORD, or use AUTH_STRATEGY=native",
        )
    # No admin: everyone who knows the one shared password could log in as `admin`. admin_users alone
    # only adds admins; the admin role with an exact, empty member list also takes the flag from users
    # who got it earlier (e.g. `admin` from a native-auth run on the same data volume).
    c.Authenticator.admin_users = set()
    ROLES.append({"name": "admin", "users": []})
    c.JupyterHub.authenticator_class = DummyAuthenticator
    c.DummyAuthenticator.password = DUMMY_PASSWORD
    if ADMIN_PASSWORD:
        print("warning: ADMIN_PASSWORD is ignored with AUTH_STRATEGY=dummy", file=sys.stderr)


# --------------------------------------------------------------------------------------------------------
# The hub process, the external proxy, the database


c.JupyterHub.bind_url = "http://0.0.0.0:8000"  # the public URL as the proxy serves it
c.JupyterHub.hub_bind_url = "http://0.0.0.0:8081"
c.JupyterHub.hub_connect_ip = "hub"  # the compose service name, resolvable on the stack network
c.JupyterHub.hub_connect_url = "http://hub:8081"
c.JupyterHub.db_url = f"sqlite:///{DB_FILE}"
c.JupyterHub.cookie_secret_file = COOKIE_SECRET_FILE
c.JupyterHub.pid_file = os.path.join(DATA_DIR, "jupyterhub.pid")
# The proxy runs in its own container (compose service "proxy"), so restarting the hub neither restarts
# the proxy nor stops user servers.
c.JupyterHub.cleanup_servers = False
c.JupyterHub.cleanup_proxy = False
# The hub (re)adds missing routes to the proxy in the same periodic task that collects activity: a
# restarted or recreated proxy starts with no routes, and users' servers answer again only after that
# check (every 300 s by default in JupyterHub 5.5.4). 30 s bounds the outage.
c.JupyterHub.last_activity_interval = 30
c.ConfigurableHTTPProxy.should_start = False
c.ConfigurableHTTPProxy.api_url = "http://proxy:8001"
c.ConfigurableHTTPProxy.auth_token = PROXY_TOKEN
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = NAMED_SERVER_LIMIT
# admin_access is deprecated since JupyterHub 2: the admin role already includes access:servers.

if TRUST_XHEADERS:
    # The hub's server always reads X-Forwarded-For; it skips only the entries of trusted downstream
    # proxies, from the right. Trusting CHP and the front proxy (addresses resolved now) makes the hub log
    # the client address the front proxy (nginx, TLS terminator) put there: nginx sends "client", CHP
    # appends nginx's address, and the hub's peer is CHP. JHUB_TRUSTED_PROXIES names those services
    # (stack/docker-compose.tls.yml sets "proxy nginx").
    trusted = set()
    for name in env_str("JHUB_TRUSTED_PROXIES", "proxy").split():
        try:
            trusted |= {a[4][0] for a in socket.getaddrinfo(name, None)}
        except OSError:
            print(f"warning: TRUST_XHEADERS: cannot resolve {name!r}; its forwarded addresses are not trusted", file=sys.stderr)
    c.JupyterHub.trusted_downstream_ips = sorted(trusted)


# --------------------------------------------------------------------------------------------------------
# Idle culler: stops servers idle for IDLE_CULL_TIMEOUT seconds (0 = never)

if IDLE_CULL_TIMEOUT > 0:
    c.JupyterHub.services = [
        {
            "name": "idle-culler",
            "command": [
                sys.executable,
                "-m",
                "jupyterhub_idle_culler",
                f"--timeout={IDLE_CULL_TIMEOUT}",
                f"--cull-every={max(60, min(600, IDLE_CULL_TIMEOUT // 4))}",
            ],
        }
    ]
    ROLES.append(
        {
            "name": "idle-culler",
            "description": "stop idle user servers",
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
            "services": ["idle-culler"],
        }
    )
c.JupyterHub.load_roles = ROLES
