"""Forwarded headers count only as the stack's proxies write them: a user's container cannot forge them."""

import socket

import pytest
from tornado import httpserver
from tornado.httputil import HTTPHeaders

from jhub_hub import xheaders

PROXY = "172.20.0.2"
NGINX = "172.20.0.3"
USER_CONTAINER = "172.20.0.7"
ADDRESSES = {"proxy": {PROXY}, "proxy-api": {"172.21.0.2"}, "nginx": {NGINX}}


class FakeSocket:
    family = socket.AF_INET


class FakeStream:
    socket = FakeSocket()


def context_from(address):
    return httpserver._HTTPRequestContext(FakeStream(), (address, 40000), "http")


def peers(fronts=()):
    return xheaders.Peers(front_names=fronts, resolve=lambda name: ADDRESSES.get(name, set()))


def applied(peer_set, peer, headers):
    xheaders.install(peer_set)
    try:
        context = context_from(peer)
        context._apply_xheaders(HTTPHeaders(headers))
        return context.remote_ip, context.protocol
    finally:
        xheaders.restore()


# What CHP makes of a request a user's container sends it with forged headers: it appends its own peer
# to X-Forwarded-For and its own scheme to X-Forwarded-Proto, and passes everything else through.
FORGED_THROUGH_CHP = {
    "X-Real-Ip": "203.0.113.7",
    "X-Scheme": "https",
    "Forwarded": "for=203.0.113.9;proto=https",
    "X-Forwarded-For": f"203.0.113.8,{USER_CONTAINER}",
    "X-Forwarded-Proto": "https,http",
}


def test_forged_headers_through_the_proxy_give_the_real_peer_and_scheme():
    assert applied(peers(), PROXY, FORGED_THROUGH_CHP) == (USER_CONTAINER, "http")


def test_with_tls_a_user_container_that_skips_nginx_is_still_itself():
    assert applied(peers(["proxy", "nginx"]), PROXY, FORGED_THROUGH_CHP) == (USER_CONTAINER, "http")


def test_through_nginx_the_client_and_https_count():
    # nginx overwrites X-Forwarded-For and -Proto with one entry each; CHP appends nginx's address.
    headers = {
        "X-Real-Ip": "203.0.113.7",
        "X-Forwarded-For": f"198.51.100.23,{NGINX}",
        "X-Forwarded-Proto": "https,http",
    }
    assert applied(peers(["proxy", "nginx"]), PROXY, headers) == ("198.51.100.23", "https")


def test_nginx_is_not_a_front_unless_trusted():
    headers = {"X-Forwarded-For": f"198.51.100.23,{NGINX}", "X-Forwarded-Proto": "https,http"}
    assert applied(peers(), PROXY, headers) == (NGINX, "http")


def test_headers_from_anyone_but_the_proxy_are_ignored():
    assert applied(peers(["nginx"]), USER_CONTAINER, FORGED_THROUGH_CHP) == (USER_CONTAINER, "http")
    assert applied(peers(["nginx"]), NGINX, FORGED_THROUGH_CHP) == (NGINX, "http")


def test_the_proxy_api_alias_is_the_proxy_too():
    assert applied(peers(), "172.21.0.2", {"X-Forwarded-For": "10.0.0.5"}) == ("10.0.0.5", "http")


def test_x_real_ip_alone_counts_for_nothing():
    assert applied(peers(), PROXY, {"X-Real-Ip": "203.0.113.7", "X-Scheme": "https"}) == (PROXY, "http")


def test_ipv4_mapped_addresses_match():
    headers = {"X-Forwarded-For": f"::ffff:{USER_CONTAINER}", "X-Forwarded-Proto": "http"}
    assert applied(peers(), f"::ffff:{PROXY}", headers) == (USER_CONTAINER, "http")


def test_a_scheme_that_is_neither_http_nor_https_is_ignored():
    assert applied(peers(), PROXY, {"X-Forwarded-For": USER_CONTAINER, "X-Forwarded-Proto": "gopher"}) == (
        USER_CONTAINER,
        "http",
    )


def test_peers_are_resolved_again_after_the_ttl_together():
    answers = iter([{"10.0.0.1"}, {"10.0.0.2"}, {"10.0.0.9"}, {"10.0.0.8"}])
    now = [0.0]
    found = xheaders.Peers(["proxy"], ["nginx"], ttl=30, resolve=lambda name: next(answers), clock=lambda: now[0])
    assert found.is_proxy("10.0.0.1")
    assert found.is_front("10.0.0.2")
    now[0] = 10.0
    assert not found.is_proxy("10.0.0.9"), "within the ttl the old answer holds"
    now[0] = 31.0
    assert found.is_proxy("10.0.0.9"), "a recreated proxy is followed"
    assert found.is_front("10.0.0.8"), "and the fronts in the same pass"
    assert not found.is_proxy("10.0.0.1")


def test_an_unresolvable_name_trusts_nobody():
    found = xheaders.Peers(["no-such-host"], resolve=lambda name: set())
    assert not found.is_proxy("172.20.0.2")


@pytest.mark.parametrize("name", ["proxy", "proxy-api"])
def test_the_proxy_is_never_also_a_front(name):
    assert xheaders.Peers(front_names=[name, "nginx"]).front_names == ("nginx",)
