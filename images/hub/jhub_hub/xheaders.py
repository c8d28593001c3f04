"""Forwarded headers (X-Forwarded-For, X-Forwarded-Proto, X-Real-Ip) believed from the proxy only.

JupyterHub runs tornado with `xheaders=True`, and tornado applies those headers from any peer: a user's
container, which reaches the hub's port 8081 directly, could forge the client address the hub logs and
the scheme it sees. `trust_only(names)` makes tornado apply them only on connections from the addresses
the proxy's service names resolve to (re-resolved every `ttl` seconds, so a recreated proxy is followed).
"""

import socket
import time

from tornado import httpserver


class TrustedPeers:
    """The addresses of `names`, resolved at most every `ttl` seconds; unresolvable names add nothing."""

    def __init__(self, names, ttl=30.0, resolve=None, clock=time.monotonic):
        self.names = tuple(names)
        self.ttl = ttl
        self.resolve = resolve or _resolve
        self.clock = clock
        self.addresses = frozenset()
        self.resolved_at = None

    def __contains__(self, address):
        now = self.clock()
        if self.resolved_at is None or now - self.resolved_at > self.ttl:
            found = set()
            for name in self.names:
                found.update(self.resolve(name))
            self.addresses = frozenset(found)
            self.resolved_at = now
        return address in self.addresses


def _resolve(name):
    try:
        return {info[4][0] for info in socket.getaddrinfo(name, None)}
    except OSError:
        return set()


_original_apply = httpserver._HTTPRequestContext._apply_xheaders


def trust_only(peers):
    """Patch tornado so forwarded headers count only on connections from `peers` (a container of addresses)."""

    def apply_from_trusted_peers_only(context, headers):
        if context.remote_ip in peers:
            _original_apply(context, headers)

    httpserver._HTTPRequestContext._apply_xheaders = apply_from_trusted_peers_only


def restore():
    """Undo `trust_only` (for tests)."""
    httpserver._HTTPRequestContext._apply_xheaders = _original_apply
