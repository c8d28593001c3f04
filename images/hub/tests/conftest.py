"""Shared fixtures of the hub's unit tests: a sample view, a real JupyterHub user in an in-memory database."""

import json
import os

import pytest
from jupyterhub import orm
from jupyterhub.user import User

from jhub_hub.view import parse

IMAGE_ID_A = "sha256:" + "a" * 64
IMAGE_ID_B = "sha256:" + "b" * 64


def sample_view_data():
    """A view as `cargo xtask up` writes it: two images, two profiles."""
    return {
        "version": 2,
        "images": [
            {
                "name": "datascience",
                "display_name": "Full stack: Lab + VS Code + marimo",
                "description": "JupyterLab, VS Code and marimo",
                "home": "/home/jovyan",
                "default_url": "/lab",
                "image_id": IMAGE_ID_A,
            },
            {
                "name": "minimal",
                "display_name": "Minimal: Python only",
                "description": "JupyterLab on Python",
                "home": "/home/user",
                "default_url": "/tree",
                "image_id": IMAGE_ID_B,
                "placement": ["node.labels.small==true"],
            },
        ],
        "profiles": [
            {
                "name": "datascience-small",
                "display_name": "Full stack, 1 CPU, 2 GB",
                "image": "datascience",
                "cpu_limit": 1.0,
                "mem_limit": "2G",
            },
            {
                "name": "minimal-tiny",
                "display_name": "Minimal, half a CPU, 512 MB",
                "image": "minimal",
                "cpu_limit": 0.5,
                "mem_limit": "512M",
            },
        ],
    }


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
