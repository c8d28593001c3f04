"""jupyterhub_config.py itself, loaded as JupyterHub loads it, with a sample view and temporary volumes."""

import os
import stat
import sys
from pathlib import Path

import pytest
from traitlets.config.loader import PyFileConfigLoader

from jhub_hub import config as hub_config
from jhub_hub.auth import JhubNativeAuthenticator
from jhub_hub.settings import from_environ
from jhub_hub.spawner import JhubDockerSpawner, JhubProfilesSpawner
from jhub_hub.swarm import JhubSwarmSpawner

from conftest import IMAGE_ID_A

CONFIG_FILE = Path(__file__).resolve().parent.parent / "jupyterhub_config.py"


@pytest.fixture
def environment(tmp_path, write_view, view_data, monkeypatch, restore_umask):
    """The hub's environment as compose sets it, with the volumes as temporary folders."""
    data_dir = tmp_path / "data"
    token_dir = tmp_path / "proxy"
    data_dir.mkdir()
    token_dir.mkdir()
    for name in [n for n in os.environ if n.startswith(("JHUB_", "AUTH_", "ADMIN_", "DUMMY_", "SPAWNER"))]:
        monkeypatch.delenv(name)
    env = {
        "JHUB_VIEW": write_view(view_data),
        "JHUB_DATA_DIR": str(data_dir),
        "JHUB_PROXY_TOKEN_FILE": str(token_dir / "proxy_auth_token"),
        "ADMIN_PASSWORD": "an admin password",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def load_config():
    loader = PyFileConfigLoader(CONFIG_FILE.name, path=str(CONFIG_FILE.parent))
    return loader.load_config()


def test_the_config_loads_with_a_view(environment, tmp_path):
    c = load_config()
    assert c.JupyterHub.spawner_class is JhubDockerSpawner
    assert c.JhubDockerSpawner.jhub_view.images[0].image_id == IMAGE_ID_A
    assert c.DockerSpawner.image == IMAGE_ID_A
    assert c.DockerSpawner.allowed_images == {
        "Full stack: Lab + VS Code + marimo": IMAGE_ID_A,
        "Minimal: Python only": "sha256:" + "b" * 64,
        "Physics 101": "sha256:" + "c" * 64,  # the spawners offer it to the group's members only
    }
    assert c.JupyterHub.load_groups == {"physics-101": {}, "staff": {}}
    assert callable(c.JupyterHub.named_server_limit_per_user)
    assert callable(c.JupyterHub.template_vars["announcement"])
    assert c.DockerSpawner.pull_policy == "never"
    assert c.DockerSpawner.remove is True
    assert c.DockerSpawner.network_name == "jupyterhub-net"
    assert c.DockerSpawner.extra_host_config == {
        "pids_limit": 2048,
        "security_opt": ["no-new-privileges:true"],
        "cap_drop": ["ALL"],
    }
    assert c.JupyterHub.authenticator_class is JhubNativeAuthenticator
    assert c.Authenticator.admin_users == {"admin"}
    assert c.JhubNativeAuthenticator.bootstrap_admin_password == "an admin password"
    assert c.NativeAuthenticator.allowed_failed_logins == 5
    assert c.JupyterHub.cleanup_servers is False
    assert c.ConfigurableHTTPProxy.should_start is False
    assert c.ConfigurableHTTPProxy.api_url == "http://proxy-api:8001"
    token_file = Path(environment["JHUB_PROXY_TOKEN_FILE"])
    assert c.ConfigurableHTTPProxy.auth_token == token_file.read_text().strip()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    cookie_secret = Path(c.JupyterHub.cookie_secret_file)
    assert stat.S_IMODE(cookie_secret.stat().st_mode) == 0o600
    assert c.JupyterHub.db_url == f"sqlite:///{tmp_path / 'data' / 'jupyterhub.sqlite'}"
    assert os.umask(0o077) == 0o077  # the hub's later files are private
    assert "trusted_downstream_ips" not in c.JupyterHub
    assert c.JupyterHub.tornado_settings == {"cookie_options": {"samesite": "Lax"}}
    assert c.JhubNativeAuthenticator.account_requests_dir == str(tmp_path / "data" / "account-requests")
    assert Path(c.JupyterHub.template_paths[0], "authorization-area.html").is_file()
    (culler,) = c.JupyterHub.services
    assert culler["command"] == [sys.executable, "-m", "jupyterhub_idle_culler", "--timeout=3600", "--cull-every=600"]
    assert c.JupyterHub.load_roles == [
        {
            "name": "idle-culler",
            "description": "stop idle user servers",
            "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
            "services": ["idle-culler"],
        }
    ]


def test_profiles_dummy_auth_no_culler_and_trusted_proxy(environment, monkeypatch, capsys):
    monkeypatch.setenv("SPAWNER", "profiles")
    monkeypatch.setenv("AUTH_STRATEGY", "dummy")
    monkeypatch.setenv("DUMMY_PASSWORD", "shared")
    monkeypatch.setenv("IDLE_CULL_TIMEOUT", "0")
    monkeypatch.setenv("TRUST_XHEADERS", "true")
    c = load_config()
    assert c.JupyterHub.spawner_class is JhubProfilesSpawner
    assert [p[1] for p in c.JhubProfilesSpawner.profiles] == ["datascience-small", "minimal-tiny", "physics-big"]
    assert c.JhubProfilesSpawner.jhub_profile_groups == {"physics-big": ["physics-101", "staff"]}
    assert c.JupyterHub.authenticator_class.__name__ == "DummyAuthenticator"
    assert c.DummyAuthenticator.password == "shared"
    assert c.Authenticator.admin_users == set()
    assert c.JupyterHub.load_roles == [{"name": "admin", "users": []}]
    assert c.JupyterHub.services == []
    # Forwarded headers are read by jhub_hub.xheaders, not by tornado's trusted_downstream rules.
    assert "trusted_downstream_ips" not in c.JupyterHub
    assert "warning: ADMIN_PASSWORD is ignored with AUTH_STRATEGY=dummy" in capsys.readouterr().err


def without_folders(view_data, write_view, monkeypatch):
    """The sample view with no group folders (a swarm refuses them), as the hub's view."""
    for group in view_data["groups"]:
        group.update(course_folder=False, shared_folder=False, instructors=None)
    monkeypatch.setenv("JHUB_VIEW", write_view(view_data, "no-folders.json"))


def test_a_swarm_refuses_group_folders(environment, monkeypatch, capsys):
    monkeypatch.setenv("JHUB_MODE", "swarm")
    with pytest.raises(SystemExit) as stopped:
        load_config()
    assert str(stopped.value).startswith("error: group folders (physics-101) need one host")


def test_swarm_mode_spawns_services_with_the_platforms_constraints(environment, monkeypatch, view_data, write_view):
    without_folders(view_data, write_view, monkeypatch)
    monkeypatch.setenv("JHUB_MODE", "swarm")
    monkeypatch.setenv("JHUB_NETWORK", "jhub-overlay")
    monkeypatch.setenv("JHUB_SWARM_CONSTRAINTS", "node.labels.jhub.users==true")
    c = load_config()
    assert c.JupyterHub.spawner_class is JhubSwarmSpawner
    assert c.DockerSpawner.network_name == "jhub-overlay"
    assert c.DockerSpawner.pull_policy == "skip", "the nodes pull by digest; the hub's engine is not asked"
    assert c.JhubSwarmSpawner.jhub_constraints == ["node.labels.jhub.users==true"]
    assert c.JhubSwarmSpawner.jhub_pids_limit == 2048


def test_swarm_mode_profiles_build_swarm_children(environment, monkeypatch, view_data, write_view):
    without_folders(view_data, write_view, monkeypatch)
    monkeypatch.setenv("JHUB_MODE", "swarm")
    monkeypatch.setenv("SPAWNER", "profiles")
    c = load_config()
    assert c.JupyterHub.spawner_class is JhubProfilesSpawner
    assert {p[2] for p in c.JhubProfilesSpawner.profiles} == {JhubSwarmSpawner}


def test_single_mode_profiles_build_container_children(environment, monkeypatch):
    monkeypatch.setenv("SPAWNER", "profiles")
    c = load_config()
    assert {p[2] for p in c.JhubProfilesSpawner.profiles} == {JhubDockerSpawner}


def test_behind_the_tls_front_cookies_are_secure(environment, monkeypatch):
    monkeypatch.setenv("JHUB_TLS_FRONT", "true")
    c = load_config()
    assert c.JupyterHub.tornado_settings == {"cookie_options": {"samesite": "Lax", "secure": True}}


def test_a_config_error_stops_the_hub_with_error_and_hint(environment, monkeypatch):
    monkeypatch.setenv("JHUB_MEM_LIMIT", "lots")
    with pytest.raises(SystemExit) as caught:
        load_config()
    assert str(caught.value) == (
        "error: JHUB_MEM_LIMIT 'lots' is not a memory size\nhint: set JHUB_MEM_LIMIT to e.g. 4G or 512M"
    )


def test_a_missing_view_stops_the_hub(environment, monkeypatch, tmp_path):
    monkeypatch.setenv("JHUB_VIEW", str(tmp_path / "none.json"))
    with pytest.raises(SystemExit) as caught:
        load_config()
    assert str(caught.value).startswith(f"error: view {tmp_path / 'none.json'} does not exist\nhint: ")


def test_profiles_without_profiles_in_the_view(environment, write_view, view_data, monkeypatch):
    view_data["profiles"] = []
    monkeypatch.setenv("JHUB_VIEW", write_view(view_data, "no-profiles.json"))
    monkeypatch.setenv("SPAWNER", "profiles")
    with pytest.raises(SystemExit) as caught:
        load_config()
    assert "error: SPAWNER=profiles but view " in str(caught.value)


def test_missing_volumes_are_named(environment, tmp_path, restore_umask):
    settings = from_environ({**environment, "JHUB_DATA_DIR": str(tmp_path / "nope")})
    with pytest.raises(hub_config.ConfigError) as caught:
        hub_config.prepare_state(settings)
    assert caught.value.message == f"data directory {tmp_path / 'nope'} does not exist"
    settings = from_environ({**environment, "JHUB_PROXY_TOKEN_FILE": str(tmp_path / "nope" / "token")})
    with pytest.raises(hub_config.ConfigError) as caught:
        hub_config.prepare_state(settings)
    assert caught.value.message == f"proxy token directory {tmp_path / 'nope'} does not exist"


def test_an_old_world_readable_database_is_made_private(environment, tmp_path, restore_umask):
    db_file = tmp_path / "data" / "jupyterhub.sqlite"
    db_file.write_bytes(b"")
    db_file.chmod(0o644)
    hub_config.prepare_state(from_environ(environment))
    assert stat.S_IMODE(db_file.stat().st_mode) == 0o600


def test_a_readable_proxy_token_is_refused(environment, restore_umask):
    token = Path(environment["JHUB_PROXY_TOKEN_FILE"])
    token.write_text("x" * 64 + "\n")
    token.chmod(0o644)
    with pytest.raises(hub_config.ConfigError) as caught:
        hub_config.prepare_state(from_environ(environment))
    assert caught.value.message == f"{token} has mode 644, readable by others"


@pytest.mark.parametrize(("timeout", "every"), [(100, 60), (3600, 600), (1200, 300)])
def test_the_culler_checks_a_quarter_of_its_timeout_within_bounds(timeout, every):
    settings = from_environ({"IDLE_CULL_TIMEOUT": str(timeout)})
    (service,) = hub_config.culler_services(settings)
    assert service["command"][-1] == f"--cull-every={every}"


def test_ldap_logs_in_against_the_directory_with_its_groups(environment, monkeypatch):
    monkeypatch.setenv("AUTH_STRATEGY", "ldap")
    monkeypatch.setenv("LDAP_SERVER", "ldap.school.example")
    monkeypatch.setenv("LDAP_BIND_DN_TEMPLATE", "uid={username},ou=people,dc=school,dc=example")
    monkeypatch.setenv("LDAP_GROUP_SEARCH_BASE", "ou=groups,dc=school,dc=example")
    monkeypatch.setenv("LDAP_ADMIN_GROUPS", "hub-admins")
    c = load_config()
    assert c.JupyterHub.authenticator_class.__name__ == "JhubLDAPAuthenticator"
    assert c.JhubLDAPAuthenticator.jhub_ldap.server == "ldap.school.example"
    assert c.JhubLDAPAuthenticator.jhub_catalog_groups == ["physics-101", "staff"]
    assert c.Authenticator.manage_groups is True
    assert c.Authenticator.admin_users == set()
    assert "load_groups" not in c.JupyterHub, "JupyterHub refuses load_groups when the authenticator manages groups"
