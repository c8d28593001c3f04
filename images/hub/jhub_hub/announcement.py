"""The hub-wide announcement: a message the admin sets (`cargo xtask announce "…" --for 2h`) that every hub page
shows until it expires or is cleared.

`cargo xtask announce` runs `jhub-announce` in the hub's container, which writes `announcement.json` on the
hub's data volume (atomically); the hub reads that file at each page it renders, through the `announcement`
template variable JupyterHub's page.html already shows, so a change needs no restart. The text is plain:
it is HTML-escaped here, since the page inserts the variable as HTML.
"""

import datetime
import html
import json
import os
import sys

from jhub_hub.errors import ConfigError, run_command
from jhub_hub.settings import from_environ

FILE_NAME = "announcement.json"
MAX_LENGTH = 500


def path(data_dir):
    return os.path.join(data_dir, FILE_NAME)


def utc_now():
    return datetime.datetime.now(datetime.UTC)


def check_text(text):
    """The announcement as it will be shown, or ConfigError: one line of 1 to MAX_LENGTH characters."""
    text = text.strip()
    if not text:
        raise ConfigError("the announcement is empty", 'give its text: cargo xtask announce "Maintenance at 18:00"')
    if "\n" in text or "\r" in text:
        raise ConfigError("the announcement spans lines", "an announcement is one line of the page's banner")
    if len(text) > MAX_LENGTH:
        raise ConfigError(
            f"the announcement has {len(text)} characters, more than {MAX_LENGTH}",
            "say it shorter, or link to a page that says the rest",
        )
    return text


def write(data_dir, text, seconds, now=None):
    """Set the announcement to `text` for `seconds` from `now`, replacing any other; returns its expiry."""
    text = check_text(text)
    if seconds <= 0:
        raise ConfigError(
            f"the announcement would last {seconds} seconds", "give --for a duration such as 30m, 2h or 3d"
        )
    expires = (now or utc_now()) + datetime.timedelta(seconds=seconds)
    record = {"text": text, "expires": expires.isoformat(timespec="seconds")}
    target = path(data_dir)
    partial = f"{target}.partial"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(record, file)
    os.replace(partial, target)
    return expires


def clear(data_dir):
    """Remove the announcement; whether there was one."""
    try:
        os.remove(path(data_dir))
    except FileNotFoundError:
        return False
    return True


def current(data_dir, now=None):
    """(text, expiry) of the announcement in force at `now`, or None: none set, expired, or unreadable (a
    page must render whatever the file holds)."""
    try:
        with open(path(data_dir)) as file:
            record = json.load(file)
        text, expires = record["text"], datetime.datetime.fromisoformat(record["expires"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(text, str) or not text or expires <= (now or utc_now()):
        return None
    return text, expires


def template_var(data_dir):
    """`JupyterHub.template_vars["announcement"]`: a callable JupyterHub asks at each page (with the user, or
    None on the login page), giving the escaped text in force, else ""."""

    def announcement(_user):
        found = current(data_dir)
        return html.escape(found[0]) if found else ""

    return announcement


def main(argv, environ=os.environ, out=sys.stdout):
    """`jhub-announce set SECONDS TEXT` | `clear` | `show`; raises ConfigError for bad input."""
    data_dir = from_environ(environ).data_dir
    if len(argv) == 3 and argv[0] == "set":
        try:
            seconds = int(argv[1])
        except ValueError:
            raise ConfigError(
                f"{argv[1]!r} is not a number of seconds", "use: jhub-announce set SECONDS TEXT"
            ) from None
        expires = write(data_dir, argv[2], seconds)
        print(f"announced until {expires.isoformat(timespec='minutes')}: {check_text(argv[2])}", file=out)
        return 0
    if argv == ["clear"]:
        print("announcement cleared" if clear(data_dir) else "there was no announcement", file=out)
        return 0
    if argv == ["show"]:
        found = current(data_dir)
        if found:
            print(f"until {found[1].isoformat(timespec='minutes')}: {found[0]}", file=out)
        else:
            print("no announcement", file=out)
        return 0
    raise ConfigError(f"unknown command {' '.join(argv)!r}", "use: jhub-announce set SECONDS TEXT | clear | show")


def run():
    """The `jhub-announce` command: one `error:` and one `hint:` line on bad input."""
    return run_command(main)
