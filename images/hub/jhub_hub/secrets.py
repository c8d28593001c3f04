"""Secret files of the hub (cookie secret, proxy API token): created once, atomically, mode 600.

A reader never sees a half-written file, two processes creating the same file at once keep one of
the two contents (the proxy's start script `jhub-proxy` races the hub for the token and plays by the
same rules), and a file that others can read is refused rather than used.
"""

import os
import re
import secrets as random_tokens

from jhub_hub.errors import ConfigError


def new_token():
    """64 hex digits (256 bits), the form of both the cookie secret and the proxy token."""
    return random_tokens.token_hex(32)


def ensure_secret_file(path, make_text=new_token):
    """Create `path` with mode 600 holding `make_text()` if it does not exist; return whether this call did.

    The text goes to a private temporary file in the same folder first, which is then hard-linked into
    place: the link fails if another process created `path` meanwhile, and that process's file stays.
    """
    if os.path.exists(path):
        return False
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.{random_tokens.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(make_text() + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(tmp)


def read_secret_file(path, pattern):
    """The stripped text of `path` if only its owner can read it and it matches `pattern`, else ConfigError."""
    mode = os.stat(path).st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(
            f"{path} has mode {mode:03o}, readable by others", f"run `chmod 600 {path}` in the hub container"
        )
    with open(path) as f:
        text = f.read().strip()
    if not re.fullmatch(pattern, text):
        raise ConfigError(
            f"{path} does not hold a valid secret", f"delete {path} and restart the stack to generate a new one"
        )
    return text
