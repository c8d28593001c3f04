"""Forwarded headers believed only as far as the stack's own proxies set them: the edge decides.

JupyterHub runs tornado with `xheaders=True`, and tornado believes `X-Real-Ip` and `X-Scheme` from any
peer, and prefers them to `X-Forwarded-For` / `X-Forwarded-Proto`. configurable-http-proxy (CHP) passes
both through untouched and appends its own peer to `X-Forwarded-For` (and `http` to
`X-Forwarded-Proto`), so a user's container that sent `X-Real-Ip: 203.0.113.7` to the proxy made the hub
log that address, and `X-Scheme: https` made it set Secure cookies over plain HTTP.

Here one object, `Peers`, resolves the service names of the proxy (the hub's only direct peer for user
traffic) and of the fronts before it (nginx with TLS), every `ttl` seconds, and `client_of` reads the
forwarded headers the way those proxies write them:

- on a connection from anyone but the proxy, no forwarded header counts (a user's container reaches the
  hub's port 8081 directly);
- `X-Real-Ip`, `X-Scheme` and `Forwarded` never count: neither CHP nor nginx (which overwrites them)
  vouches for them;
- the client is the rightmost `X-Forwarded-For` entry that is not a trusted front. CHP appended that
  entry itself (its own peer); only when that peer is a front (nginx, which overwrites
  `X-Forwarded-For` and `X-Forwarded-Proto` with one entry each) does the entry before it count, and the
  scheme is the `X-Forwarded-Proto` entry in the same position.
"""

import ipaddress
import socket
import time

from tornado import httpserver, netutil

# The proxy's service name on the stack network, and its alias on the hub-only network.
PROXY_NAMES = ("proxy", "proxy-api")


def _resolve(name):
    try:
        return {normalize(info[4][0]) for info in socket.getaddrinfo(name, None)}
    except OSError:
        return set()


def normalize(address):
    """`address` as one spelling: an IPv4-mapped IPv6 address (`::ffff:172.18.0.5`) as IPv4, stripped."""
    address = address.strip()
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    mapped = getattr(parsed, "ipv4_mapped", None)
    return str(mapped or parsed)


class Peers:
    """The addresses of the proxy and of the trusted fronts, resolved together at most every `ttl` seconds
    (a recreated container gets a new address); a name that does not resolve adds nothing."""

    def __init__(self, proxy_names=PROXY_NAMES, front_names=(), ttl=30.0, resolve=None, clock=time.monotonic):
        self.proxy_names = tuple(proxy_names)
        self.front_names = tuple(name for name in front_names if name not in self.proxy_names)
        self.ttl = ttl
        self.resolve = resolve or _resolve
        self.clock = clock
        self.proxies = frozenset()
        self.fronts = frozenset()
        self.resolved_at = None

    def _refresh(self):
        now = self.clock()
        if self.resolved_at is not None and now - self.resolved_at <= self.ttl:
            return
        proxies, fronts = set(), set()
        for name in self.proxy_names:
            proxies.update(self.resolve(name))
        for name in self.front_names:
            fronts.update(self.resolve(name))
        self.proxies, self.fronts, self.resolved_at = frozenset(proxies), frozenset(fronts), now

    def is_proxy(self, address):
        self._refresh()
        return normalize(address) in self.proxies

    def is_front(self, address):
        self._refresh()
        return normalize(address) in self.fronts


def _entries(value):
    return [entry.strip() for entry in (value or "").split(",") if entry.strip()]


def client_of(peers, peer, headers):
    """The (client address, scheme) the forwarded headers of a request from `peer` vouch for, or None
    when they vouch for nothing (the peer is not the proxy, or there is no X-Forwarded-For). The scheme
    is None when the matching X-Forwarded-Proto entry is missing or neither http nor https."""
    if not peers.is_proxy(peer):
        return None
    hops = [normalize(entry) for entry in _entries(headers.get("X-Forwarded-For"))]
    if not hops:
        return None
    schemes = [entry.lower() for entry in _entries(headers.get("X-Forwarded-Proto"))]
    index = len(hops) - 1
    while index > 0 and peers.is_front(hops[index]):
        index -= 1
    from_right = len(hops) - 1 - index
    scheme = schemes[len(schemes) - 1 - from_right] if from_right < len(schemes) else None
    return hops[index], scheme if scheme in ("http", "https") else None


_original_apply = httpserver._HTTPRequestContext._apply_xheaders


def install(peers):
    """Make tornado read forwarded headers with `client_of(peers, …)` instead of its own rules."""

    def apply_from_the_edge(context, headers):
        peer = getattr(context, "_orig_remote_ip", None) or context.remote_ip
        found = client_of(peers, peer, headers)
        if found is None:
            return
        address, scheme = found
        if netutil.is_valid_ip(address):
            context.remote_ip = address
        if scheme is not None:
            context.protocol = scheme

    httpserver._HTTPRequestContext._apply_xheaders = apply_from_the_edge


def restore():
    """Undo `install` (for tests)."""
    httpserver._HTTPRequestContext._apply_xheaders = _original_apply
