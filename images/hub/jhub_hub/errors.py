"""The one error type of the hub's configuration: a message and a hint, shown as `error:` / `hint:`."""


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
