"""Account requests from the host: `cargo xtask unlock NAME` and `cargo xtask reset-password NAME`.

The xtask runs `jhub-account` in the hub's container (an exec), a process of its own. It cannot reach the
hub's memory (where the lockouts are) and must not write the database under the hub's open session (which
keeps its rows cached), so it leaves a request file in the hub's data volume instead, and the hub's
authenticator applies it at that name's next login attempt, before anything else: the lockouts of the
name are forgotten, and a new password (only its bcrypt hash is in the file) replaces the old one.
"""

import contextlib
import os
import secrets
import sqlite3
import sys

from jhub_hub import passwords
from jhub_hub.errors import ConfigError, run_command
from jhub_hub.settings import ADMIN_NAME, from_environ

UNLOCK = "unlock"
PASSWORD = "password"


def requests_dir(data_dir):
    """Where the requests wait: on the hub's data volume (mode 700), never in an image."""
    return os.path.join(data_dir, "account-requests")


def request_path(directory, username, kind):
    """The request file for `username` (hex-encoded, so any name is a file name) of `kind`."""
    return os.path.join(directory, f"{username.encode().hex()}.{kind}")


def write_request(directory, username, kind, content=b""):
    """Write a request atomically (a temporary file renamed into place), mode 600."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = request_path(directory, username, kind)
    partial = f"{path}.partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(content)
    os.replace(partial, path)


def pending(directory):
    """Every complete request waiting in `directory`: (username, kind, content), oldest first."""
    try:
        names = sorted(os.listdir(directory), key=lambda name: os.stat(os.path.join(directory, name)).st_mtime)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        stem, _, kind = name.partition(".")
        if kind not in (UNLOCK, PASSWORD):
            continue
        try:
            username = bytes.fromhex(stem).decode()
        except ValueError:
            continue
        with open(os.path.join(directory, name), "rb") as file:
            found.append((username, kind, file.read()))
    return found


def remove_request(directory, username, kind):
    with contextlib.suppress(FileNotFoundError):
        os.remove(request_path(directory, username, kind))


def account_exists(db_file, username):
    """Whether NativeAuthenticator's table has `username` (read-only; the hub may be writing meanwhile)."""
    connection = sqlite3.connect(f"file:{db_file}?mode=ro", uri=True, timeout=30)
    try:
        row = connection.execute("SELECT 1 FROM users_info WHERE username = ?", (username,)).fetchone()
    finally:
        connection.close()
    return row is not None


def main(argv, environ=os.environ, out=sys.stdout):
    """`jhub-account unlock NAME` / `jhub-account reset-password NAME`; raises ConfigError for bad input."""
    if len(argv) != 2 or argv[0] not in ("unlock", "reset-password"):
        raise ConfigError(f"unknown command {' '.join(argv)!r}", "use: jhub-account unlock NAME | reset-password NAME")
    command, username = argv
    settings = from_environ(environ)
    if settings.auth_strategy != "native":
        raise ConfigError(
            f"AUTH_STRATEGY={settings.auth_strategy} has no accounts to {command}",
            "accounts exist with AUTH_STRATEGY=native",
        )
    db_file = os.path.join(settings.data_dir, "jupyterhub.sqlite")
    if not os.path.exists(db_file) or not account_exists(db_file, username):
        raise ConfigError(f"no account {username!r}", "names are case-sensitive; /hub/authorize lists every account")
    directory = requests_dir(settings.data_dir)
    if command == "unlock":
        write_request(directory, username, UNLOCK)
        print(f"lockouts of {username!r} are lifted at its next login attempt", file=out)
        return 0
    if username == ADMIN_NAME and settings.admin_password:
        raise ConfigError(
            f"the password of {ADMIN_NAME!r} comes from ADMIN_PASSWORD (set again at every hub start)",
            "change ADMIN_PASSWORD in stack/.env and run `cargo xtask up`",
        )
    password = secrets.token_urlsafe(12)
    write_request(directory, username, PASSWORD, passwords.hash_password(password, settings.bcrypt_cost))
    write_request(directory, username, UNLOCK)
    print(f"new password: {password}", file=out)
    print(f"(shown once; {username!r} can change it at /hub/change-password)", file=out)
    return 0


def run():
    """The `jhub-account` command: one `error:` and one `hint:` line on bad input."""
    return run_command(main)
