#!/bin/sh
# The uv-marimo flavour's server: marimo alone, no JupyterLab. jupyter-standaloneproxy takes the place of
# jupyterhub-singleuser: it listens where the hub expects the server (JUPYTERHUB_SERVICE_URL), serves under
# the user's prefix, lets through only the user the hub says (HubOAuth), and starts marimo on the first
# authenticated request. Why each flag:
# - --absolute-url with marimo's --base-url={base_url}: marimo sees the full path and builds its links and
#   websocket URLs under the user's prefix ({base_url} is that prefix without a trailing slash, as marimo
#   requires);
# - --timeout=60: marimo needs about 5 s to start, the proxy's default timeout;
# - --activity-interval=0: the proxy would otherwise tell the hub "active now" every 5 minutes whether or
#   not anyone uses marimo, and the idle culler could never stop the server; with it off, the hub counts
#   the traffic that passes its proxy, as for every other server;
# - marimo on 127.0.0.1 with --no-token: nothing but the proxy, which checks the hub's OAuth, reaches it;
# - --headless, --skip-update-check, --no-sandbox, -y: no browser, no call to the internet, no prompts, and
#   notebooks use the image's venv instead of making one each.
set -eu
exec jhub-start jupyter-standaloneproxy \
    --absolute-url \
    --timeout=60 \
    --activity-interval=0 \
    -- marimo -y edit --headless --host=127.0.0.1 --port={port} --base-url={base_url} \
        --no-token --skip-update-check --no-sandbox
