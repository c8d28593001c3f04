#!/bin/sh
# The uv-code flavour's server: VS Code (code-server) alone, no JupyterLab. jupyter-standaloneproxy takes
# the place of jupyterhub-singleuser: it listens where the hub expects the server (JUPYTERHUB_SERVICE_URL),
# serves under the user's prefix, lets through only the user the hub says (HubOAuth), and starts
# code-server on the first authenticated request. Why each flag:
# - --timeout=60: code-server needs more than the proxy's default 5 s on a busy machine;
# - --activity-interval=0: the proxy would otherwise tell the hub "active now" every 5 minutes whether or
#   not anyone uses VS Code, and the idle culler could never stop the server; with it off, the hub counts
#   the traffic that passes its proxy, as for every other server;
# - code-server on 127.0.0.1 only: `--auth none` is safe because nothing but the proxy can reach it;
# - the home folder as the workspace, so the spawn lands in VS Code with the user's files;
# - --ignore-last-opened: code-server otherwise reopens the folder it last had open, which it remembers in
#   the user's home (~/.local/share/code-server/coder.json), and the home follows the user across images:
#   after VS Code in a jovyan image, this one would open /home/jovyan, which does not exist here.
# /usr/local/bin/code-server (from the parent image, images/code-server) seeds the user's settings and runs
# code-server on the image's Node; /etc/code-server/config.yaml turns telemetry, update checks and
# workspace trust off.
set -eu
exec jhub-start jupyter-standaloneproxy \
    --timeout=60 \
    --activity-interval=0 \
    -- code-server --auth=none --bind-addr=127.0.0.1:{port} --ignore-last-opened "$HOME"
