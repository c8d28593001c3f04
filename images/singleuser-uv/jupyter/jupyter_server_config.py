# System-wide Jupyter server settings of the uv Lab flavour (Dockerfile.jupyterlab), installed as
# /etc/jupyter/jupyter_server_config.py, so they apply to `jupyterhub-singleuser` and `jupyter lab` alike
# and do not live in the user's home (the named volume mounted there would hide them).
import importlib.util
import os

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


def _marimo_icon():
    # The launcher shows marimo's own icon; find_spec locates the package without importing it, which
    # keeps server start-up fast.
    spec = importlib.util.find_spec("marimo")
    if spec is None or not spec.submodule_search_locations:
        return ""
    icon = os.path.join(spec.submodule_search_locations[0], "_static", "apple-touch-icon.png")
    return icon if os.path.exists(icon) else ""


# marimo behind jupyter-server-proxy. Why each flag:
# - no `bash -lc` wrapper: a login shell resets PATH, and `bash -c` runs only its first word;
# - --host=127.0.0.1: only the Jupyter server (which checks the hub's token) can reach marimo, which is
#   also why --no-token is acceptable;
# - --base-url plus absolute_url: marimo builds its links and websocket URLs under the proxy path;
# - --headless, --skip-update-check, --no-sandbox, -y: no browser, no network calls, no prompts, and it
#   uses the image's venv instead of creating one per notebook.
# marimo needs more than the proxy's default 5 s to start on a busy machine, hence the timeout.
c.ServerProxy.servers = {
    "marimo": {
        "command": [
            "/opt/venv/bin/marimo",
            "-y",
            "edit",
            "--headless",
            "--host=127.0.0.1",
            "--port={port}",
            "--base-url={base_url}marimo",
            "--no-token",
            "--skip-update-check",
            "--no-sandbox",
        ],
        # Node (kept off the image's PATH, see images/code-server/Dockerfile) for marimo's language
        # server and Copilot completions.
        "environment": {"PATH": os.environ.get("PATH", "/usr/bin:/bin") + ":/opt/node/bin"},
        "absolute_url": True,
        "timeout": 60,
        "new_browser_tab": True,
        "launcher_entry": {
            "enabled": True,
            "title": "Marimo",
            "icon_path": _marimo_icon(),
        },
    },
}

# VS Code is registered by jupyter-vscode-proxy's entry point, not here: a second "vscode" entry in
# ServerProxy.servers would be listed twice in the launcher. Its start-up timeout is already 300 s in
# jupyter-vscode-proxy 0.7 (hard-coded, not configurable), above the 60 s we need. It starts
# `code-server --auth none`, which /usr/local/bin/code-server and /etc/code-server/config.yaml keep on
# 127.0.0.1.
