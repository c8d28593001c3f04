#!/bin/sh
# Your image's own build steps, run once at build time as root in the final image, after your packages
# are installed into /opt/venv and before the image switches to the user `ewn`. Empty in the template.
#
# What works here: Debian packages over apt (the mirror is plain http), e.g.
#     apt-get update && apt-get install -y --no-install-recommends graphviz && rm -rf /var/lib/apt/lists/*
# and anything that needs no network. HTTPS downloads do not: the build CA of the machine's intercepting
# proxy stays in the build stage, on purpose. Python packages belong in requirements.in, where they are
# hash-locked, not here.
set -eu
