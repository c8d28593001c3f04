"""The hub's code for jhub-docker: settings, the resolved view of the images, secrets, spawners, auth.

`jupyterhub_config.py` imports these modules and keeps only the `c.X = …` lines. No module does anything
at import beyond defining names, so pytest imports them freely.
"""

from jhub_hub.errors import ConfigError

__all__ = ["ConfigError"]
