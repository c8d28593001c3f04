"""Shared fixtures of the hub's unit tests: a sample view, a real JupyterHub user in an in-memory database, and
a recording stand-in for the Docker engine."""

import json
import os
from pathlib import Path

import docker.errors
import pytest
from jupyterhub import orm
from jupyterhub.user import User

from jhub_hub.view import parse

# The sample view is the file Rust's `HubView::resolve` writes for a small catalog (the test
# `view::tests::the_hubs_test_fixture_is_what_resolve_writes` in src/view.rs keeps it): the hub's reader is
# tested on the writer's real output, never on a second, hand-written sample.
VIEW_FIXTURE = Path(__file__).parent / "fixtures" / "hub-view.json"


def sample_view_data():
    """A view as `cargo xtask up` writes it: two images, two profiles (a fresh copy each time)."""
    return json.loads(VIEW_FIXTURE.read_text())


IMAGE_ID_A = sample_view_data()["images"][0]["image_id"]
IMAGE_ID_B = sample_view_data()["images"][1]["image_id"]


@pytest.fixture
def view_data():
    return sample_view_data()


@pytest.fixture
def view(view_data):
    return parse(view_data, "test-view.json")


@pytest.fixture
def write_view(tmp_path):
    """Write a view (any JSON value) to a file and return its path."""

    def write(data, name="hub-view.json"):
        path = tmp_path / name
        path.write_text(json.dumps(data))
        return str(path)

    return write


def spawner_config(view):
    """The spawners' configuration the tests share: the view, a stack of its own, its volume prefix and
    container names, 2 CPUs and 4G per server."""
    from traitlets.config import Config

    c = Config()
    c.JhubDockerSpawner.jhub_view = view
    c.JhubDockerSpawner.jhub_stack_name = "teststack"
    c.JhubDockerSpawner.jhub_user_volume_prefix = "testvol-"
    c.DockerSpawner.prefix = "teststack-user"
    c.JhubDockerSpawner.name_template = "{prefix}-{username}{server_suffix}"
    c.DockerSpawner.cpu_limit = 2.0
    c.DockerSpawner.mem_limit = "4G"
    return c


@pytest.fixture
def db():
    """A JupyterHub database (schema made by JupyterHub itself) in memory."""
    session = orm.new_session_factory("sqlite://")()
    yield session
    session.close()


@pytest.fixture
def make_user(db):
    """Real JupyterHub users (orm row + User wrapper), as the hub hands them to spawners."""

    def make(name="alice"):
        orm_user = orm.User(name=name)
        db.add(orm_user)
        db.commit()
        return User(orm_user, settings={"db": db})

    return make


@pytest.fixture
def restore_umask():
    """Put back the process umask that configuration code changes."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


class RecordingClient:
    """A stand-in for docker-py's APIClient that records the spawner's calls and answers as the engine
    does; `volumes` maps the volumes that exist to their labels."""

    def __init__(self, volumes, copy_status=0):
        self.volumes = dict(volumes)
        self.copy_status = copy_status
        self.calls = []

    def create_host_config(self, **kwargs):
        return kwargs

    def inspect_volume(self, name):
        self.calls.append(("inspect_volume", name))
        if name not in self.volumes:
            raise docker.errors.NotFound(f"no such volume: {name}")
        return {"Name": name, "Labels": self.volumes[name]}

    def create_volume(self, name, labels=None):
        self.calls.append(("create_volume", name))
        self.volumes.setdefault(name, labels or {})
        return {"Name": name, "Labels": self.volumes[name]}

    def remove_volume(self, name):
        self.calls.append(("remove_volume", name))
        del self.volumes[name]

    def create_container(self, **kwargs):
        self.calls.append(("create_container", kwargs["host_config"]["binds"]))
        return {"Id": "c0ffee"}

    def start(self, container):
        self.calls.append(("start", container))

    def wait(self, container, timeout=None):
        return {"StatusCode": self.copy_status}

    def logs(self, container):
        return b"archived and verified 3 entries" if self.copy_status == 0 else b"the copy differs"

    def remove_container(self, container, force=False):
        self.calls.append(("remove_container", container))


@pytest.fixture
def engine():
    """Install a RecordingClient as every JhubDockerSpawner's engine client; removed after the test."""
    from jhub_hub.spawner import JhubDockerSpawner

    def install(volumes, copy_status=0):
        client = RecordingClient(volumes, copy_status)
        JhubDockerSpawner._client = client
        return client

    yield install
    JhubDockerSpawner._client = None
