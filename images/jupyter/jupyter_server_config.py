# System-wide Jupyter server settings every JupyterLab image of the catalog shares (the shared Jupyter
# layer, images/jupyter), installed as /etc/jupyter/jupyter_server_config.py, so they apply to
# `jupyterhub-singleuser` and `jupyter lab` alike and do not live in the user's home (the named volume
# mounted there would hide them). An image adds its own in /usr/local/etc/jupyter/ (datascience: marimo).

c = get_config()  # noqa: F821 (injected by traitlets when the file is loaded)

# jupyter_lsp (a dependency of jupyterlab) spends about 0.8 CPU-seconds at every server start looking for
# language servers, and the image installs none, so it would serve nothing. Set here, the choice wins
# over the jupyter_server_config.d file that enables it in the venv. notebook_shim (also a dependency of
# jupyterlab) only reads the classic notebook server's extensions and settings, and no image has any: off,
# it saves about 0.03 CPU-seconds of every start.
c.ServerApp.jpserver_extensions = {"jupyter_lsp": False, "notebook_shim": False}

# Offline: these sites are often air-gapped, so JupyterLab neither fetches its news feed nor checks for a
# newer release (both call the internet and pop up a notification). The announcements plugin that asks
# about news is also disabled in /etc/jupyter/labconfig/page_config.json.
c.LabApp.news_url = None
c.LabApp.check_for_updates_class = "jupyterlab.NeverCheckForUpdate"
