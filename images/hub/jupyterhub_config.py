"""JupyterHub configuration of jhub-docker: one Docker container (or Swarm service) per user server, spawned by
DockerSpawner (JHUB_MODE=single) or its SwarmSpawner (JHUB_MODE=swarm).

Everything an admin may change comes from the environment (stack/.env.example documents each variable);
everything about images comes from the resolved view `cargo xtask up` writes from the catalog and the
lock ($JHUB_VIEW, default /srv/jhub/hub-view.json). This file never names an image by a hand-written
tag. The code behind these lines is the jhub_hub package (images/hub/jhub_hub/, tested in the image
build); bad input stops the hub here with one `error:` line and one `hint:` line.
"""

import os
import sys

from jupyterhub.auth import DummyAuthenticator

from jhub_hub import ConfigError, accounts, announcement, config, xheaders
from jhub_hub.auth import TEMPLATE_DIR, JhubNativeAuthenticator
from jhub_hub.ldap import JhubLDAPAuthenticator
from jhub_hub.settings import ADMIN_NAME, MIN_PASSWORD_LENGTH, warnings_for
from jhub_hub.spawner import JhubDockerSpawner, JhubProfilesSpawner, profile_groups, profiles_config
from jhub_hub.swarm import JhubSwarmSpawner

c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)

try:
    loaded = config.load(os.environ)
except ConfigError as e:
    raise SystemExit(e.exit_text()) from None
settings, view, state = loaded.settings, loaded.view, loaded.state
for warning in warnings_for(settings):
    print(warning, file=sys.stderr)

# ---- Spawner: one container per user server, from the images of the view

# JHUB_MODE=swarm: one Swarm service per server, on the node holding the user's home; single: containers here.
server_spawner = JhubSwarmSpawner if settings.mode == "swarm" else JhubDockerSpawner
# SPAWNER=profiles offers the view's profiles (image + CPU + memory); otherwise the images themselves.
c.JupyterHub.spawner_class = JhubProfilesSpawner if settings.spawner == "profiles" else server_spawner
# The images, their homes and default URLs, and the profiles, as `cargo xtask up` resolved them.
c.JhubDockerSpawner.jhub_view = view
# Names the io.jhub-docker.stack label that `xtask down` and the tests find containers by.
c.JhubDockerSpawner.jhub_stack_name = settings.stack_name
# Each user's named volume, mounted at the chosen image's home; it survives the container.
c.JhubDockerSpawner.jhub_user_volume_prefix = settings.user_volume_prefix
# Deleting a user copies their volume into an archive volume (a container of the hub's image), then removes it;
# in swarm mode the volume stays on its node (with a warning in the log): archiving there is not supported yet.
c.JhubDockerSpawner.jhub_archive_image = settings.hub_image
# The stack's network (in swarm mode an attachable overlay); the hub reaches each server by its internal IP
# there, in swarm mode by its service name (dnsrr: the name resolves to the task's address).
c.DockerSpawner.network_name = settings.network
c.DockerSpawner.use_internal_ip = True
# Removed on stop: image switching depends on it (dockerspawner #423); the named volume survives.
c.DockerSpawner.remove = True
# Single: never pulled, the images come from the lock and are on this engine. Swarm: the hub's engine is not
# where servers run; each node pulls the view's image id, a registry reference by digest.
c.DockerSpawner.pull_policy = "skip" if settings.mode == "swarm" else "never"
# Container names people read: <stack>-user-<user>, and <stack>-user-<user>--<server> for a named server.
c.DockerSpawner.prefix = f"{settings.stack_name}-user"
c.JhubDockerSpawner.name_template = "{prefix}-{username}{server_suffix}"
# The first image is the default; only the view's images may be spawned (each spawn resolves its own).
c.DockerSpawner.image = view.images[0].image_id
c.DockerSpawner.allowed_images = {i.display_name: i.image_id for i in view.images}
# Per-server limits (a profile sets its own CPU and memory).
c.DockerSpawner.mem_limit = settings.mem_limit
c.DockerSpawner.cpu_limit = settings.cpu_limit
# Every single-user image runs as uid 1000 and needs no privilege: no setuid escalation, no capabilities.
c.DockerSpawner.extra_host_config = {
    "pids_limit": settings.pids_limit,
    "security_opt": ["no-new-privileges:true"],
    "cap_drop": ["ALL"],
}
# Swarm services drop every capability too and take the pids limit; no-new-privileges has no service field
# (jhub_hub.swarm says where it goes instead).
c.JhubSwarmSpawner.jhub_pids_limit = settings.pids_limit
# Swarm: every server only on nodes meeting these (JHUB_SWARM_CONSTRAINTS), plus its image's own placement.
c.JhubSwarmSpawner.jhub_constraints = list(settings.swarm_constraints)
if settings.spawner == "profiles":
    # One choice per profile of the view: its image, CPU and memory, spawned by the mode's spawner.
    c.JhubProfilesSpawner.profiles = profiles_config(view, server_spawner)
    # A profile kept to groups (catalog `groups`) is offered to their members (and admins) only.
    c.JhubProfilesSpawner.jhub_profile_groups = profile_groups(view)
# Shared by the profiles wrapper and its child (both are Spawners).
c.Spawner.environment = {"JUPYTERHUB_SINGLEUSER_APP": "jupyter_server.serverapp.ServerApp"}
c.Spawner.default_url = view.images[0].default_url  # each spawn sets its image's own
# At most JHUB_CONCURRENT_STARTS servers start at once on this host (one per core by default; swarm mode
# spreads them over nodes instead); the others wait in arrival order, told their place on the spawn page
# (jhub_hub/start_queue.py). The hub's limit then covers the wait plus the start, so it is wide; the start
# itself, once its turn comes, has 120 s (cold starts of the full image on 2 cores take tens of seconds).
queued = settings.mode == "single" and settings.concurrent_starts > 0
c.JhubDockerSpawner.concurrent_starts = settings.concurrent_starts if queued else 0
c.JhubDockerSpawner.start_limit = 120
c.Spawner.start_timeout = 900 if queued else 120
c.Spawner.http_timeout = 90
# Spawns pending at once (the queue's included) before the hub answers "too many users, try again" (429):
# JupyterHub's default of 100 would turn the 101st student of a class away instead of queueing them.
c.JupyterHub.concurrent_spawn_limit = 500

# ---- Authentication

# Everyone who can log in may use the hub; NativeAuthenticator decides who can log in.
c.Authenticator.allow_all = True
if settings.auth_strategy == "native":
    # Accounts with bcrypt hashes in the hub's database; `admin` is made from ADMIN_PASSWORD at start.
    c.JupyterHub.authenticator_class = JhubNativeAuthenticator
    c.Authenticator.admin_users = {ADMIN_NAME}
    c.JhubNativeAuthenticator.bootstrap_admin_password = settings.admin_password
    # bcrypt at JHUB_BCRYPT_COST (10, OWASP's least, by default; jhub_hub/passwords.py says why).
    c.JhubNativeAuthenticator.bcrypt_cost = settings.bcrypt_cost
    # Open signup: users log in at once; closed: the admin authorizes each at /hub/authorize.
    c.NativeAuthenticator.open_signup = settings.open_signup
    c.NativeAuthenticator.minimum_password_length = MIN_PASSWORD_LENGTH
    # Both have no effective default in NativeAuthenticator 1.3.0 (0 = no lockout): set them.
    c.NativeAuthenticator.allowed_failed_logins = 5
    c.NativeAuthenticator.seconds_before_next_try = 600
    # `cargo xtask unlock` / `reset-password` leave their requests here, on the hub's data volume.
    c.JhubNativeAuthenticator.account_requests_dir = accounts.requests_dir(settings.data_dir)
    # The authorization area with buttons that POST (NativeAuthenticator's links changed accounts on a GET).
    c.JupyterHub.template_paths = [TEMPLATE_DIR]
elif settings.auth_strategy == "ldap":
    # The institution's directory checks passwords; its groups (those the catalog declares) become the users'
    # groups at each login, LDAP_ADMIN_GROUPS makes admins, LDAP_ALLOWED_GROUPS says who may log in.
    c.JupyterHub.authenticator_class = JhubLDAPAuthenticator
    c.JhubLDAPAuthenticator.jhub_ldap = settings.ldap
    c.JhubLDAPAuthenticator.jhub_catalog_groups = [group.name for group in view.groups]
    c.Authenticator.manage_groups = True
    c.Authenticator.admin_users = set()
else:
    # One shared password for every name: a test setup. No admin, not even one from an earlier run.
    c.JupyterHub.authenticator_class = DummyAuthenticator
    c.DummyAuthenticator.password = settings.dummy_password
    c.Authenticator.admin_users = set()

# ---- The hub process, the external proxy, the database

c.JupyterHub.bind_url = "http://0.0.0.0:8000"  # the public URL as the proxy serves it
c.JupyterHub.hub_bind_url = "http://0.0.0.0:8081"
c.JupyterHub.hub_connect_ip = "hub"  # the compose service name, resolvable on the stack network
c.JupyterHub.hub_connect_url = "http://hub:8081"
# State on the jupyterhub_data volume, private to the hub (mode 600, umask 077).
c.JupyterHub.db_url = state.db_url
c.JupyterHub.cookie_secret_file = state.cookie_secret_file
c.JupyterHub.pid_file = state.pid_file
# The proxy runs in its own container (compose service "proxy"): restarting the hub neither restarts the
# proxy nor stops user servers.
c.JupyterHub.cleanup_servers = False
c.JupyterHub.cleanup_proxy = False
c.ConfigurableHTTPProxy.should_start = False
# The proxy's API listens only on the hub-only network, where the proxy is called proxy-api.
c.ConfigurableHTTPProxy.api_url = "http://proxy-api:8001"
c.ConfigurableHTTPProxy.auth_token = state.proxy_token  # on a volume shared with the proxy alone
# A recreated proxy starts with no routes; the hub re-adds them in this periodic check (300 s by default).
c.JupyterHub.last_activity_interval = 30
# Per-user origins (JHUB_SUBDOMAINS): each user's server at https://<user>.HOST, so a page a user serves
# cannot read hub pages or call the hub's API as whoever opens it; the proxy routes by host.
if settings.subdomain_host:
    c.JupyterHub.subdomain_host = settings.subdomain_host
c.JupyterHub.allow_named_servers = True
# JHUB_NAMED_SERVER_LIMIT, or the largest a user's groups set (catalog [[group]] named_server_limit).
c.JupyterHub.named_server_limit_per_user = config.named_server_limit(view, settings.named_server_limit)
# The catalog's groups exist from the start (an image kept to a group shows to its members only; the
# group's CPU and memory limits apply to their servers of an image); members come from the admin panel.
# With LDAP the directory manages groups (JupyterHub then refuses load_groups): they appear at logins.
if settings.auth_strategy != "ldap":
    c.JupyterHub.load_groups = config.catalog_groups(view)
# Forwarded headers count only as the stack's proxies write them: on connections from the proxy, whose
# own X-Forwarded-For entry names the client, or, with TRUST_XHEADERS, the entry before it when that one is
# a front named in JHUB_TRUSTED_PROXIES (the TLS overlay: nginx, which overwrites them). X-Real-Ip and
# X-Scheme never count: a user's container cannot forge the address the hub logs nor the scheme it sees.
xheaders.install(xheaders.Peers(front_names=settings.trusted_proxies if settings.trust_xheaders else ()))
# The admin's announcement (`cargo xtask announce "…" --for 2h`), read from the data volume at each page and
# shown by JupyterHub's page.html on every hub page until it expires.
c.JupyterHub.template_vars = {"announcement": announcement.template_var(settings.data_dir)}
# SameSite=Lax on every hub cookie (`_xsrf` too), and Secure behind the TLS front door.
c.JupyterHub.tornado_settings = {"cookie_options": config.cookie_options(settings)}

# ---- Services and roles

# The idle culler stops servers idle for IDLE_CULL_TIMEOUT seconds (0 = never), with only the scopes it needs.
c.JupyterHub.services = config.culler_services(settings)
# The culler's role; with dummy auth also an empty admin role, which takes the flag from earlier admins.
c.JupyterHub.load_roles = config.roles(settings)
