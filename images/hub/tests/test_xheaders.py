"""Forwarded headers count only on connections from the proxy: a user's container cannot forge them."""

import socket

import pytest
from tornado import httpserver
from tornado.httputil import HTTPHeaders

from jhub_hub import xheaders


class FakeSocket:
    family = socket.AF_INET


class FakeStream:
    socket = FakeSocket()


def context_from(address):
    return httpserver._HTTPRequestContext(FakeStream(), (address, 40000), "http")


FORGED = HTTPHeaders({"X-Forwarded-For": "203.0.113.99", "X-Forwarded-Proto": "https"})


@pytest.fixture
def proxy_only():
    peers = xheaders.TrustedPeers(["proxy"], resolve=lambda name: {"172.20.0.2"} if name == "proxy" else set())
    xheaders.trust_only(peers)
    yield peers
    xheaders.restore()


def test_headers_from_the_proxy_are_applied(proxy_only):
    context = context_from("172.20.0.2")
    context._apply_xheaders(FORGED)
    assert context.remote_ip == "203.0.113.99"
    assert context.protocol == "https"


def test_headers_from_anyone_else_are_ignored(proxy_only):
    context = context_from("172.20.0.7")  # a user's container on the stack network
    context._apply_xheaders(FORGED)
    assert context.remote_ip == "172.20.0.7"
    assert context.protocol == "http"


def test_peers_are_resolved_again_after_the_ttl():
    answers = iter([{"10.0.0.1"}, {"10.0.0.9"}])
    now = [0.0]
    peers = xheaders.TrustedPeers(["proxy"], ttl=30, resolve=lambda name: next(answers), clock=lambda: now[0])
    assert "10.0.0.1" in peers
    now[0] = 10.0
    assert "10.0.0.9" not in peers, "within the ttl the old answer holds"
    now[0] = 31.0
    assert "10.0.0.9" in peers, "a recreated proxy is followed"
    assert "10.0.0.1" not in peers


def test_an_unresolvable_name_trusts_nobody():
    peers = xheaders.TrustedPeers(["no-such-host"], resolve=lambda name: set())
    assert "172.20.0.2" not in peers
