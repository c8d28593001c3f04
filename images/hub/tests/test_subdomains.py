"""Per-user origins: JHUB_SUBDOMAIN_HOST (set by `cargo xtask up` from JHUB_SUBDOMAINS) becomes
JupyterHub's subdomain_host, and anything but an https origin with a host name is refused."""

import pytest
from test_config_file import environment, load_config  # noqa: F401 (environment is a fixture)

from jhub_hub import ConfigError
from jhub_hub.settings import from_environ


def test_off_unless_set():
    assert from_environ({}).subdomain_host == ""
    assert from_environ({"JHUB_SUBDOMAIN_HOST": " "}).subdomain_host == ""


@pytest.mark.parametrize(
    "origin", ["https://hub.localhost:8443", "https://hub.example.org", "https://a-b.c.example.org:443"]
)
def test_https_origins_are_kept(origin):
    assert from_environ({"JHUB_SUBDOMAIN_HOST": origin}).subdomain_host == origin


@pytest.mark.parametrize(
    "origin",
    ["hub.example.org", "http://hub.example.org", "https://localhost", "https://hub.example.org/", "https://10.0.0.1"],
)
def test_other_values_are_refused(origin):
    with pytest.raises(ConfigError) as refused:
        from_environ({"JHUB_SUBDOMAIN_HOST": origin})
    assert refused.value.message == f"JHUB_SUBDOMAIN_HOST={origin!r} is not an https origin with a host name"
    assert "cargo xtask up sets it" in refused.value.hint


def test_the_config_sets_subdomain_host(environment, monkeypatch):  # noqa: F811
    assert "subdomain_host" not in load_config().JupyterHub
    monkeypatch.setenv("JHUB_SUBDOMAIN_HOST", "https://hub.localhost:8443")
    assert load_config().JupyterHub.subdomain_host == "https://hub.localhost:8443"
