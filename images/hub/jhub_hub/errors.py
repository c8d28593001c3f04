"""The one error type of the hub's configuration: a message and a hint, shown as `error:` / `hint:`."""

import sys


class ConfigError(Exception):
    """Bad input that must stop the hub before it serves anything.

    `jupyterhub_config.py` turns it into `SystemExit("error: <message>\\nhint: <hint>")`.
    """

    def __init__(self, message, hint):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def exit_text(self):
        """The two lines the hub prints on stderr before it exits with status 1."""
        return f"error: {self.message}\nhint: {self.hint}"


def run_command(main):
    """Run a command of the hub's container (`jhub-account`, `jhub-announce`): `main(argv)` returns its exit
    status; bad input (ConfigError) prints one `error:` and one `hint:` line on stderr and exits with 1."""
    try:
        return main(sys.argv[1:])
    except ConfigError as e:
        print(e.exit_text(), file=sys.stderr)
        return 1
