"""AUTH_STRATEGY=ldap: users log in with the institution's directory accounts (OpenLDAP, Active Directory).

`JhubLDAPAuthenticator` is jupyterhub-ldapauthenticator's `LDAPAuthenticator` with what a hub for a school
or a lab needs around it:
- settings from the environment (`LdapSettings`, read once with the other settings), the directory's CA
  certificate and the search account's password as files in the LDAP folder (stack/ldap/, mounted
  read-only at /srv/jupyterhub/ldap), never in `.env`;
- the user's groups read from the directory at each login (`LDAP_GROUP_SEARCH_BASE`): those the catalog
  declares become the user's JupyterHub groups (they choose images and limits), a member of
  `LDAP_ADMIN_GROUPS` is an admin and a user in none of `LDAP_ALLOWED_GROUPS` is turned away with a message
  saying so;
- the directory's blocking calls in a worker thread with timeouts, so a slow or absent directory never
  stalls the hub: the login page then says the directory cannot be reached (a 503 from `authenticate`,
  which JupyterHub shows on the login form), and users already logged in keep working (their session is
  the hub's cookie, not a directory lookup).
"""

import asyncio
import os
import re
import ssl
from dataclasses import dataclass

import ldap3
from ldap3.core.exceptions import LDAPBindError, LDAPException
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn
from ldapauthenticator import LDAPAuthenticator
from ldapauthenticator.ldapauthenticator import TlsStrategy
from tornado import web
from traitlets import Instance, Integer, List, Unicode

from jhub_hub.errors import ConfigError

# Where the hub finds the LDAP folder's files (stack/docker-compose.ldap.yml mounts it).
LDAP_DIR = "/srv/jupyterhub/ldap"
TLS_MODES = ("starttls", "ldaps", "none")
DEFAULT_PORTS = {"starttls": 389, "ldaps": 636, "none": 389}
GROUP_FILTER = "(|(member={userdn})(uniqueMember={userdn})(memberUid={username}))"


@dataclass(frozen=True)
class LdapSettings:
    """The LDAP_* variables, validated (AUTH_STRATEGY=ldap only)."""

    server: str  # LDAP_SERVER: the directory's host name (what its certificate names)
    port: int  # LDAP_PORT: default 389 (starttls, none) or 636 (ldaps)
    tls: str  # LDAP_TLS: starttls (default), ldaps, or none (plain text, a test directory only)
    ca_file: str  # LDAP_CA_FILE: the CA certificate in the LDAP folder; "": the system's CAs
    bind_dn_templates: (
        tuple  # LDAP_BIND_DN_TEMPLATE: e.g. uid={username},ou=people,dc=example,dc=org (";" between several)
    )
    user_search_base: str  # LDAP_USER_SEARCH_BASE: search mode: where people are looked up
    user_attribute: str  # LDAP_USER_ATTRIBUTE: search mode: the attribute holding the login name (uid, sAMAccountName)
    search_user: str  # LDAP_SEARCH_USER: search mode: the DN the hub binds as to look people up
    search_password_file: str  # LDAP_SEARCH_PASSWORD_FILE: its password, a file in the LDAP folder
    group_search_base: str  # LDAP_GROUP_SEARCH_BASE: where groups are; "": no groups read
    allowed_groups: tuple  # LDAP_ALLOWED_GROUPS: group names (cn) whose members may log in; none: every account
    admin_groups: tuple  # LDAP_ADMIN_GROUPS: group names (cn) whose members are admins


def settings_from(env):
    """`LdapSettings` from the settings module's environment reader, or ConfigError naming the variable."""
    server = env.text("LDAP_SERVER", "")
    if not server:
        raise ConfigError(
            "AUTH_STRATEGY=ldap needs LDAP_SERVER",
            "set LDAP_SERVER to the directory's host name, e.g. ldap.example.org",
        )
    tls = env.choice("LDAP_TLS", "starttls", TLS_MODES)
    port = env.integer("LDAP_PORT", DEFAULT_PORTS[tls], minimum=1)
    templates = tuple(t.strip() for t in env.text("LDAP_BIND_DN_TEMPLATE", "").split(";") if t.strip())
    for template in templates:
        if "{username}" not in template:
            raise ConfigError(
                f"LDAP_BIND_DN_TEMPLATE={template!r} has no {{username}}",
                "write a person's DN with {username} where the login name goes, "
                "e.g. uid={username},ou=people,dc=example,dc=org",
            )
    user_search_base = env.text("LDAP_USER_SEARCH_BASE", "")
    search_user = env.text("LDAP_SEARCH_USER", "")
    if not templates and not (user_search_base and search_user):
        raise ConfigError(
            "AUTH_STRATEGY=ldap needs LDAP_BIND_DN_TEMPLATE, or LDAP_USER_SEARCH_BASE with LDAP_SEARCH_USER",
            "set LDAP_BIND_DN_TEMPLATE=uid={username},ou=people,dc=example,dc=org (README, 'Log in with the "
            "institution's accounts')",
        )
    allowed = tuple(env.text("LDAP_ALLOWED_GROUPS", "").split())
    admins = tuple(env.text("LDAP_ADMIN_GROUPS", "").split())
    group_search_base = env.text("LDAP_GROUP_SEARCH_BASE", "")
    if (allowed or admins) and not group_search_base:
        raise ConfigError(
            "LDAP_ALLOWED_GROUPS and LDAP_ADMIN_GROUPS need LDAP_GROUP_SEARCH_BASE",
            "set LDAP_GROUP_SEARCH_BASE to where the directory keeps groups, e.g. ou=groups,dc=example,dc=org",
        )
    return LdapSettings(
        server=server,
        port=port,
        tls=tls,
        ca_file=_folder_file(env.text("LDAP_CA_FILE", ""), "LDAP_CA_FILE"),
        bind_dn_templates=templates,
        user_search_base=user_search_base,
        user_attribute=env.text("LDAP_USER_ATTRIBUTE", "uid"),
        search_user=search_user,
        search_password_file=_folder_file(env.text("LDAP_SEARCH_PASSWORD_FILE", ""), "LDAP_SEARCH_PASSWORD_FILE"),
        group_search_base=group_search_base,
        allowed_groups=allowed,
        admin_groups=admins,
    )


def _folder_file(name, variable):
    """A file name inside the LDAP folder (no path: the folder is the one place the hub reads them)."""
    if name and (os.sep in name or name in (".", "..")):
        raise ConfigError(
            f"{variable}={name!r} is not a file name",
            "put the file in stack/ldap/ (or JHUB_LDAP_DIR) and give its name only, e.g. ca.pem",
        )
    return name


def warnings_for(ldap_settings):
    """Valid LDAP settings that leave passwords readable on the wire."""
    if ldap_settings.tls == "none":
        return [
            "warning: LDAP_TLS=none sends every password to the directory in plain text; "
            "use starttls or ldaps outside a test"
        ]
    return []


class JhubLDAPAuthenticator(LDAPAuthenticator):
    """LDAPAuthenticator configured from `LdapSettings`, with the user's groups from the directory, admins
    from its admin groups, and its blocking calls off the event loop (see the module's docstring)."""

    jhub_ldap = Instance(LdapSettings, allow_none=True, help="The LDAP_* settings.").tag(config=True)
    jhub_ldap_dir = Unicode(LDAP_DIR, help="Where the CA and password files are.").tag(config=True)
    jhub_catalog_groups = List(
        Unicode(), help="The catalog's groups: the directory's groups of these names become the user's."
    ).tag(config=True)
    jhub_timeout = Integer(
        5, min=1, help="Whole seconds to connect to, and to wait for each answer of, the directory."
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.jhub_ldap is not None:
            self.apply_settings(self.jhub_ldap)

    def apply_settings(self, ldap_settings):
        """Set LDAPAuthenticator's own options from the LDAP_* settings."""
        self.server_address = ldap_settings.server
        self.server_port = ldap_settings.port
        self.tls_strategy = {
            "starttls": TlsStrategy.before_bind,
            "ldaps": TlsStrategy.on_connect,
            "none": TlsStrategy.insecure,
        }[ldap_settings.tls]
        tls_kwargs = {"validate": ssl.CERT_REQUIRED}
        if ldap_settings.ca_file:
            tls_kwargs["ca_certs_file"] = os.path.join(self.jhub_ldap_dir, ldap_settings.ca_file)
        self.tls_kwargs = tls_kwargs
        if ldap_settings.bind_dn_templates:
            self.bind_dn_template = list(ldap_settings.bind_dn_templates)
        else:
            self.lookup_dn = True
            self.user_search_base = ldap_settings.user_search_base
            self.user_attribute = ldap_settings.user_attribute
            # The attribute the lookup reads back from the person found (ldapauthenticator has no default).
            self.lookup_dn_user_dn_attribute = ldap_settings.user_attribute
            self.lookup_dn_search_user = ldap_settings.search_user
            self.lookup_dn_search_password = self.read_search_password(ldap_settings)

    def read_search_password(self, ldap_settings):
        if not ldap_settings.search_password_file:
            return ""
        path = os.path.join(self.jhub_ldap_dir, ldap_settings.search_password_file)
        try:
            with open(path) as file:
                return file.read().strip()
        except OSError as e:
            raise ConfigError(
                f"cannot read LDAP_SEARCH_PASSWORD_FILE {path}: {e.strerror}",
                "put the search account's password in that file of stack/ldap/ (mode 600)",
            ) from None

    def get_connection(self, userdn, password):
        """LDAPAuthenticator's connection with timeouts: a directory that does not answer fails the login
        in `jhub_timeout` seconds instead of holding it."""
        use_ssl = self.tls_strategy == TlsStrategy.on_connect
        auto_bind = (
            ldap3.AUTO_BIND_TLS_BEFORE_BIND if self.tls_strategy == TlsStrategy.before_bind else ldap3.AUTO_BIND_NO_TLS
        )
        server = ldap3.Server(
            self.server_address,
            port=self.server_port,
            use_ssl=use_ssl,
            tls=ldap3.Tls(**self.tls_kwargs),
            connect_timeout=self.jhub_timeout,
        )
        try:
            return ldap3.Connection(
                # ldap3 packs receive_timeout into SO_RCVTIMEO as whole seconds: an int, not a float.
                server,
                user=userdn,
                password=password,
                auto_bind=auto_bind,
                receive_timeout=self.jhub_timeout,
            )
        except LDAPBindError:
            return None

    def user_dns(self, username):
        """The DNs to try binding `username` as: the templates', or the one the search account finds."""
        if self.lookup_dn:
            _, dn = self.resolve_username(username)
            return [dn] if dn else []
        return [template.format(username=escape_rdn(username)) for template in self.bind_dn_template]

    def group_names(self, conn, userdn, username):
        """The names (cn) of the directory's groups under LDAP_GROUP_SEARCH_BASE that `userdn` belongs to."""
        if not self.jhub_ldap.group_search_base:
            return []
        conn.search(
            search_base=self.jhub_ldap.group_search_base,
            search_scope=ldap3.SUBTREE,
            search_filter=GROUP_FILTER.format(
                userdn=escape_filter_chars(userdn), username=escape_filter_chars(username)
            ),
            attributes=["cn"],
        )
        return sorted({str(name) for entry in conn.entries for name in entry.cn.values})

    def authenticate_blocking(self, username, password):
        """The whole login against the directory (blocking): None for a wrong name or password, else the
        auth model with the user's groups and admin flag. Raises HTTPError 403 for a user in no allowed
        group, and LDAPException when the directory cannot be reached."""
        if not re.match(self.valid_username_regex, username):
            return None
        if not password or not password.strip():
            return None
        for userdn in self.user_dns(username):
            conn = self.get_connection(userdn, password)
            if conn is None:
                continue
            try:
                groups = self.group_names(conn, userdn, username)
            finally:
                conn.unbind()
            allowed = self.jhub_ldap.allowed_groups
            if allowed and not set(allowed) & set(groups):
                self.log.warning("LDAP login of %r refused: in none of LDAP_ALLOWED_GROUPS %s", username, allowed)
                raise web.HTTPError(
                    403,
                    f"your account {username!r} is in none of the directory groups allowed on this hub "
                    f"({', '.join(allowed)}): ask the admin to add you",
                )
            is_admin = bool(set(self.jhub_ldap.admin_groups) & set(groups))
            catalog_groups = [name for name in groups if name in set(self.jhub_catalog_groups)]
            self.log.info("LDAP login of %r: groups %s, admin %s", username, catalog_groups, is_admin)
            return {"name": username, "groups": catalog_groups, "admin": is_admin}
        self.log.warning("LDAP login of %r failed: no such account or a wrong password", username)
        return None

    async def authenticate(self, handler, data):
        try:
            return await asyncio.to_thread(self.authenticate_blocking, data["username"], data["password"])
        except LDAPException as e:
            self.log.error("the directory %s:%s cannot be reached: %s", self.server_address, self.server_port, e)
            raise web.HTTPError(
                503,
                "the directory (LDAP) that checks passwords cannot be reached right now; "
                "try again in a few minutes, and tell the admin if it lasts",
            ) from None

    async def check_allowed(self, username, auth_model):
        # Who may log in was decided against the directory in authenticate (LDAP_ALLOWED_GROUPS).
        return True
