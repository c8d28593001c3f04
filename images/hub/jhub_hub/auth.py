"""NativeAuthenticator for jhub-docker: the `admin` account from ADMIN_PASSWORD, and bcrypt off the event loop.

NativeAuthenticator 1.3.0 hashes with bcrypt (cost 12, about 0.3 CPU-s) inside `authenticate()`, in the
login page's failure path and at signup, all on the hub's event loop, so one login stalls every other
request meanwhile. Here every such hash runs in a worker thread (bcrypt >= 5 releases the GIL); what is
checked, and in which order, stays NativeAuthenticator's: lockout after `allowed_failed_logins`
failures, the authorization flag, the 2FA token, signup's password and name rules.
"""

import asyncio
import contextvars
import re

import bcrypt
from nativeauthenticator import NativeAuthenticator
from nativeauthenticator.handlers import LoginHandler, SignUpHandler
from nativeauthenticator.orm import UserInfo
from tornado import web
from traitlets import Unicode

from jhub_hub.settings import ADMIN_NAME

# The hash a signup request computed in a thread for its own password, read by create_user in the same
# request (a context variable is per task, so concurrent signups never see each other's).
_signup_hash = contextvars.ContextVar("jhub_signup_hash", default=None)


def hash_password(password):
    """A new bcrypt hash of `password` (blocking; about 0.3 CPU-s)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt())


def password_matches(password, hashed):
    """Whether `password` hashes to `hashed` (blocking), as UserInfo.is_valid_password decides it."""
    return bcrypt.checkpw(password.encode(), hashed)


class JhubNativeAuthenticator(NativeAuthenticator):
    """NativeAuthenticator that creates (or updates) the `admin` account from ADMIN_PASSWORD and hashes
    passwords in worker threads.

    JupyterHub 5 calls add_user for every user in its database during init_users, admin_users included
    (created there on first start), before the web server listens: the account exists before anyone can
    reach /hub/signup, so nobody can sign up as admin first.
    """

    bootstrap_admin_password = Unicode("", help="Password of the `admin` account (ADMIN_PASSWORD).").tag(config=True)

    def add_user(self, user):
        if user.name == ADMIN_NAME and self.bootstrap_admin_password:
            self.ensure_bootstrap_admin(self.bootstrap_admin_password)
        return super().add_user(user)

    def ensure_bootstrap_admin(self, password):
        """Create the `admin` account with `password`, authorized, or set that password if it changed."""
        info = UserInfo.find(self.db, ADMIN_NAME)
        if info is None:
            self.db.add(UserInfo(username=ADMIN_NAME, password=hash_password(password), is_authorized=True))
            self.log.info("created the %r account from ADMIN_PASSWORD", ADMIN_NAME)
        else:
            if not info.is_valid_password(password):
                info.password = hash_password(password)
                self.log.info("ADMIN_PASSWORD changed: updated the %r account's password", ADMIN_NAME)
            info.is_authorized = True
        self.db.commit()

    async def check_password(self, user_info, password):
        """`user_info.is_valid_password(password)`, computed in a worker thread."""
        return await asyncio.to_thread(password_matches, password, user_info.password)

    async def authenticate(self, handler, data):
        # NativeAuthenticator.authenticate with the bcrypt check awaited in a thread; the same checks in
        # the same order (the password is checked even for an unauthorized user, as upstream does).
        username = self.normalize_username(data["username"])
        password = data["password"]

        user = self.get_user(username)
        if not user:
            return None

        if self.allowed_failed_logins and self.is_blocked(username):
            return None

        validations = [user.is_authorized, await self.check_password(user, password)]
        if user.has_2fa:
            validations.append(user.is_valid_token(data.get("2fa")))

        if all(validations):
            self.successful_login(username)
            return username

        self.add_login_attempt(username)
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
        replacements = {LoginHandler: JhubLoginHandler, SignUpHandler: JhubSignUpHandler}
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
        hashed = await asyncio.to_thread(hash_password, password)
        token = _signup_hash.set((password, hashed))
        try:
            await super().post()
        finally:
            _signup_hash.reset(token)
