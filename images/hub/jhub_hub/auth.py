"""NativeAuthenticator for jhub-docker: the `admin` account from ADMIN_PASSWORD, bcrypt off the event loop
at the configured cost, a lockout per name and client address, and no account change by a GET.

NativeAuthenticator 1.3.0 hashes with bcrypt (cost 12, about 0.3 CPU-s) inside `authenticate()`, in the
login page's failure path and at signup, all on the hub's event loop, so one login stalls every other
request meanwhile. Here every such hash runs on a bounded pool of threads at JHUB_BCRYPT_COST
(jhub_hub/passwords.py says why 10, and why bounded); what is checked, and in which order, stays
NativeAuthenticator's: lockout after `allowed_failed_logins` failures, the authorization flag, the 2FA
token, signup's password and name rules. A hash below the configured cost is made again at the next
successful login.

Its lockout counts failures per name, so five wrong passwords from anyone locked `admin` for everyone;
here it counts per (name, client address), and `cargo xtask unlock NAME` / `reset-password NAME` reach
it through request files (jhub_hub/accounts.py) applied at the name's next login attempt.

Its /hub/authorize/<name> and /hub/discard/<name> acted on a GET, so a link on any site opened by the
admin approved, unapproved or discarded an account; here they act on a POST only (which JupyterHub checks
for `_xsrf`), never on a cross-site one, and the authorization area's buttons post.
"""

import contextvars
import datetime
import os
import re

from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.handlers import (
    DiscardHandler,
    LocalBase,
    LoginHandler,
    SignUpHandler,
    ToggleAuthorizationHandler,
    admin_users_scope,
)
from nativeauthenticator.orm import UserInfo
from tornado import web
from tornado.escape import url_escape
from traitlets import Integer, Unicode

from jhub_hub import accounts, passwords
from jhub_hub.settings import ADMIN_NAME

# Templates that replace NativeAuthenticator's (JupyterHub.template_paths): the authorization area with
# buttons that POST.
TEMPLATE_DIR = os.path.join(os.path.dirname(__file__), "templates")

# The hash a signup request computed in a thread for its own password, read by create_user in the same
# request (a context variable is per task, so concurrent signups never see each other's).
_signup_hash = contextvars.ContextVar("jhub_signup_hash", default=None)


def client_address(handler):
    """The client address a login comes from, as the hub's forwarded-header rules decide it ("" unknown)."""
    request = getattr(handler, "request", None)
    return getattr(request, "remote_ip", None) or ""


def refuse_cross_site(handler):
    """403 for a request the browser marks as sent from another site (a form or script of another page)."""
    if handler.request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        raise web.HTTPError(403, "a page of another site cannot change accounts")


class JhubNativeAuthenticator(NativeAuthenticator):
    """NativeAuthenticator that creates (or updates) the `admin` account from ADMIN_PASSWORD and hashes
    passwords in worker threads.

    JupyterHub 5 calls add_user for every user in its database during init_users, admin_users included
    (created there on first start), before the web server listens: the account exists before anyone can
    reach /hub/signup, so nobody can sign up as admin first.
    """

    bootstrap_admin_password = Unicode("", help="Password of the `admin` account (ADMIN_PASSWORD).").tag(config=True)
    bcrypt_cost = Integer(
        passwords.MIN_COST,
        min=passwords.MIN_COST,
        max=passwords.MAX_COST,
        help="bcrypt's cost for new hashes (JHUB_BCRYPT_COST); lower ones are made again at the next login.",
    ).tag(config=True)
    account_requests_dir = Unicode(
        "", help="Folder of the requests `jhub-account` leaves (unlock, new password hash): jhub_hub/accounts.py."
    ).tag(config=True)

    # NativeAuthenticator keeps `login_attempts` in memory, keyed by what add_login_attempt, is_blocked and
    # successful_login are given; here that key is (name, client address), so a stranger's failures lock
    # only the stranger's address out.

    def apply_account_requests(self, username):
        """Apply what `jhub-account` asked for `username`: forget its lockouts, set the new password hash."""
        if not self.account_requests_dir:
            return
        for name, kind, content in accounts.pending(self.account_requests_dir):
            if name != username:
                continue
            if kind == accounts.PASSWORD:
                info = UserInfo.find(self.db, username)
                if info is not None and content:
                    info.password = content
                    self.db.commit()
                    self.log.info("the password of %r was reset from the host", username)
            else:
                for key in [key for key in self.login_attempts if key[0] == username]:
                    del self.login_attempts[key]
                self.log.info("the lockouts of %r were lifted from the host", username)
            accounts.remove_request(self.account_requests_dir, username, kind)

    def forget_old_attempts(self):
        """Drop failure counts older than the lockout period, so strangers' addresses do not pile up."""
        horizon = datetime.datetime.now() - datetime.timedelta(seconds=max(self.seconds_before_next_try, 1))
        for key in [key for key, value in self.login_attempts.items() if value["time"] < horizon]:
            del self.login_attempts[key]

    def add_user(self, user):
        if user.name == ADMIN_NAME and self.bootstrap_admin_password:
            self.ensure_bootstrap_admin(self.bootstrap_admin_password)
        return super().add_user(user)

    def ensure_bootstrap_admin(self, password):
        """Create the `admin` account with `password`, authorized, or set that password if it changed."""
        info = UserInfo.find(self.db, ADMIN_NAME)
        if info is None:
            self.db.add(UserInfo(username=ADMIN_NAME, password=self.hash_password(password), is_authorized=True))
            self.log.info("created the %r account from ADMIN_PASSWORD", ADMIN_NAME)
        else:
            if not info.is_valid_password(password):
                info.password = self.hash_password(password)
                self.log.info("ADMIN_PASSWORD changed: updated the %r account's password", ADMIN_NAME)
            info.is_authorized = True
        self.db.commit()

    def hash_password(self, password):
        """A new hash of `password` at the configured cost (blocking)."""
        return passwords.hash_password(password, self.bcrypt_cost)

    def change_password(self, username, new_password):
        # NativeAuthenticator.change_password line by line, with the hash at the configured cost (upstream
        # uses bcrypt's default, 12). Its handlers call it without awaiting: one hash on the loop, as before.
        user = self.get_user(username)
        if user is None or not self.is_password_strong(new_password):
            return None
        user.password = self.hash_password(new_password)
        self.db.commit()
        return True

    async def check_password(self, user_info, password):
        """`user_info.is_valid_password(password)`, computed on the hashing pool."""
        return await passwords.off_the_loop(passwords.password_matches, password, user_info.password)

    async def rehash_if_cheaper(self, user_info, password):
        """After a successful login: a hash made at a lower cost than the configured one is made again."""
        cost = passwords.cost_of(user_info.password)
        if cost is not None and cost < self.bcrypt_cost:
            user_info.password = await passwords.off_the_loop(self.hash_password, password)
            self.db.commit()
            self.log.info(
                "the password hash of %r was made again at cost %d (was %d)", user_info.username, self.bcrypt_cost, cost
            )

    async def authenticate(self, handler, data):
        # NativeAuthenticator.authenticate with the bcrypt check awaited in a thread; the same checks in
        # the same order (the password is checked even for an unauthorized user, as upstream does).
        username = self.normalize_username(data["username"])
        password = data["password"]

        user = self.get_user(username)
        if not user:
            return None

        self.apply_account_requests(username)
        key = (username, client_address(handler))
        if self.allowed_failed_logins and self.is_blocked(key):
            return None

        validations = [user.is_authorized, await self.check_password(user, password)]
        if user.has_2fa:
            validations.append(user.is_valid_token(data.get("2fa")))

        if all(validations):
            self.successful_login(key)
            await self.rehash_if_cheaper(user, password)
            return username

        self.forget_old_attempts()
        self.add_login_attempt(key)
        return None

    def create_user(self, username, password, **kwargs):
        # NativeAuthenticator.create_user, with the hash the signup handler made in a thread when there
        # is one (any other caller, e.g. the FirstUse import at start, hashes here as upstream does).
        prehashed = _signup_hash.get()
        if prehashed is None or prehashed[0] != password:
            return super().create_user(username, password, **kwargs)
        return self._create_user_with_hash(username, password, prehashed[1], **kwargs)

    def _create_user_with_hash(self, username, password, encoded_password, **kwargs):
        # Upstream's create_user line by line, except that the hash is given.
        username = self.normalize_username(username)

        if self.user_exists(username) or not self.validate_username(username):
            return None

        if not self.is_password_strong(password):
            return None

        if not self.enable_signup:
            return None

        infos = {"username": username, "password": encoded_password}
        infos.update(kwargs)

        # Pre-authorized users (admins, or any users during open signup)
        pre_authorized = self.open_signup or username in self.get_authed_users()
        if pre_authorized:
            infos.update({"is_authorized": True})

        try:
            user_info = UserInfo(**infos)
        except AssertionError:
            return None

        # Don't send authorization emails to pre-authorized users.
        if (
            self.allow_self_approval_for
            and not pre_authorized
            and re.match(self.allow_self_approval_for, user_info.email)
        ):
            url = self.generate_approval_url(username)
            self.send_approval_email(user_info.email, url)
            user_info.login_email_sent = True

        self.db.add(user_info)
        self.db.commit()
        return user_info

    def get_handlers(self, app):
        replacements = {
            LoginHandler: JhubLoginHandler,
            SignUpHandler: JhubSignUpHandler,
            ToggleAuthorizationHandler: JhubToggleAuthorizationHandler,
            DiscardHandler: JhubDiscardHandler,
        }
        return [(pattern, replacements.get(handler, handler)) for pattern, handler in super().get_handlers(app)]


class JhubLoginHandler(LoginHandler):
    """NativeAuthenticator's /hub/login, whose failure path checks the password in a worker thread too."""

    async def post(self):
        data = {}
        for arg in self.request.arguments:
            data[arg] = self.get_argument(arg, strip=False)

        auth_timer = self.statsd.timer("login.authenticate").start()
        user = await self.login_user(data)
        auth_timer.stop(send=False)

        if user:
            self._jupyterhub_user = user
            self.redirect(self.get_next_url(user))
            return

        error = "Invalid username or password."
        # Tell a user with the right password that only the admin's authorization is missing.
        username = data["username"]
        user_info = self.authenticator.get_user(username)
        if (
            user_info is not None
            and not user_info.is_authorized
            and await self.authenticator.check_password(user_info, data["password"])
        ):
            error = f"User {username} has not been authorized by an administrator yet."

        html = await self._render(login_error=error, username=username)
        self.finish(html)


class JhubSignUpHandler(SignUpHandler):
    """NativeAuthenticator's /hub/signup, with the new password hashed in a worker thread beforehand."""

    async def post(self):
        if not self.authenticator.enable_signup:
            raise web.HTTPError(404)
        password = self.get_body_argument("signup_password", strip=False)
        hashed = await passwords.off_the_loop(self.authenticator.hash_password, password)
        token = _signup_hash.set((password, hashed))
        try:
            await super().post()
        finally:
            _signup_hash.reset(token)


class JhubToggleAuthorizationHandler(LocalBase):
    """/hub/authorize/<name>: toggles the account's authorization on a POST from the authorization area's
    button (JupyterHub checks its `_xsrf`); a GET (a link, from wherever) only shows the area."""

    @admin_users_scope
    async def get(self, slug):
        self.redirect(self.hub.base_url + "authorize")

    @admin_users_scope
    async def post(self, slug):
        refuse_cross_site(self)
        if UserInfo.find(self.db, slug) is None:
            raise web.HTTPError(404, f"no account {slug!r}")
        UserInfo.change_authorization(self.db, slug)
        self.redirect(self.hub.base_url + "authorize#" + url_escape(slug, plus=False))


class JhubDiscardHandler(LocalBase):
    """/hub/discard/<name>: deletes an account that was never authorized, on a POST only (as above)."""

    @admin_users_scope
    async def get(self, user_name):
        self.redirect(self.hub.base_url + "authorize")

    @admin_users_scope
    async def post(self, user_name):
        refuse_cross_site(self)
        user = self.authenticator.get_user(user_name)
        if user is not None and not user.is_authorized:
            # NativeAuthenticator's DiscardHandler: its table's row, then the hub's user if there is one.
            self.authenticator.delete_user(type("User", (), {"name": user_name}))
            if self.users.get(user_name) is not None:
                self.users.delete(user_name)
        self.redirect(self.hub.base_url + "authorize")
