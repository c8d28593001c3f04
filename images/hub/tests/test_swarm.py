"""The swarm spawner without a swarm: the service it would create, its mounts and labels, the refusals that
come before any Docker call, the profiles wrapper's child. What the engine does with all that is proven by
the cluster test, not here."""

import asyncio

import pytest
from tornado import web

from jhub_hub.placement import home_label_key
from jhub_hub.spawner import JhubDockerSpawner, JhubProfilesSpawner, profiles_config
from jhub_hub.swarm import JhubSwarmSpawner, is_version_conflict, volume_mount

from conftest import IMAGE_ID_A, IMAGE_ID_B, spawner_config


@pytest.fixture
def config(view):
    c = spawner_config(view)
    c.DockerSpawner.network_name = "jhub-overlay"
    c.DockerSpawner.use_internal_ip = True
    c.JhubSwarmSpawner.jhub_pids_limit = 512
    c.JhubSwarmSpawner.jhub_constraints = ["node.labels.jhub.users==true"]
    c.JhubProfilesSpawner.profiles = profiles_config(view, JhubSwarmSpawner)
    return c


@pytest.fixture
def spawner(config, make_user):
    return JhubSwarmSpawner(user=make_user("alice"), config=config)


def prepared(spawner, choice):
    """The spawner as start() leaves it before the first Docker call: the image applied."""
    spawner.user_options = {"image": choice}
    image = spawner.catalog_image
    spawner.apply_catalog_image(image)
    return image


def test_the_service_runs_the_views_image_with_limits_labels_and_dnsrr(spawner):
    image = prepared(spawner, "minimal")
    spec = spawner.service_spec(image, ["node.labels.jhub.users==true"], None, {"JUPYTERHUB_API_TOKEN": "t"})
    labels = {"io.jhub-docker.stack": "teststack", "io.jhub-docker.user": "alice", "io.jhub-docker.image": "minimal"}
    assert spec["name"] == "teststack-user-alice"
    assert spec["labels"] == labels
    assert spec["endpoint_spec"] == {"Mode": "dnsrr"}
    task = spec["task_template"]
    container = task["ContainerSpec"]
    assert container["Image"] == IMAGE_ID_B
    assert container["Args"] is None, "no Args: the node runs the image's own CMD"
    assert container["Env"] == ["JUPYTERHUB_API_TOKEN=t"]
    assert container["Labels"] == labels
    assert container["CapabilityDrop"] == ["ALL"]
    assert task["Resources"] == {"Limits": {"NanoCPUs": 2_000_000_000, "MemoryBytes": 4 * 1024**3, "Pids": 512}}
    assert task["RestartPolicy"]["Condition"] == "none"
    assert task["Placement"] == {"Constraints": ["node.labels.jhub.users==true"]}
    assert task["Networks"] == [{"Target": "jhub-overlay"}]


def test_the_home_is_a_labelled_named_volume_not_a_bind(spawner):
    prepared(spawner, "datascience")
    (mount,) = spawner.mounts
    assert mount == {
        "Target": "/home/jovyan",
        "Source": "testvol-alice",
        "Type": "volume",
        "ReadOnly": False,
        "VolumeOptions": {
            "Labels": {
                "io.jhub-docker.stack": "teststack",
                "io.jhub-docker.user": "alice",
                "io.jhub-docker.account-created": spawner.user.created.isoformat(),
            }
        },
    }
    assert spawner.service_spec(spawner.catalog_image, [], None, {})["task_template"]["ContainerSpec"]["Mounts"] == [
        mount
    ]


def test_host_paths_stay_binds_and_other_volumes_carry_no_labels():
    assert volume_mount("/srv/data", "/data", True) == {
        "Target": "/data",
        "Source": "/srv/data",
        "Type": "bind",
        "ReadOnly": True,
    }
    assert volume_mount("shared", "/shared", False) == {
        "Target": "/shared",
        "Source": "shared",
        "Type": "volume",
        "ReadOnly": False,
    }


def test_labels_keep_user_names_as_they_are(config, make_user):
    # Unlike DockerSpawner's create_container, nothing formats the service's labels: no doubled braces.
    spawner = JhubSwarmSpawner(user=make_user("a{b}"), config=config)
    image = prepared(spawner, "datascience")
    assert spawner.service_spec(image, [], None, {})["labels"]["io.jhub-docker.user"] == "a{b}"


def test_the_home_label_is_the_volumes_escaped_name(config, make_user):
    spawner = JhubSwarmSpawner(user=make_user("bob.smith@x"), config=config)
    volume, _ = spawner.user_volume()
    assert volume == "testvol-bob-2esmith-40x"
    assert spawner.home_label == "io.jhub-docker.home.teststack.bob-2esmith-40x"
    assert spawner.home_label == home_label_key("teststack", volume.removeprefix("testvol-"))


def test_the_command_is_cmd_and_args_or_nothing(spawner):
    assert asyncio.run(spawner.get_command()) is None
    spawner.cmd = ["jupyterhub-singleuser"]
    spawner.args = ["--debug"]
    assert asyncio.run(spawner.get_command()) == ["jupyterhub-singleuser", "--debug"]


def test_an_unknown_or_forged_image_is_refused_before_any_service(spawner):
    # No Docker client exists in this test: a call to the engine would fail differently.
    for choice in ("gpu", IMAGE_ID_A, "registry:5000/jhub/minimal@sha256:" + "c" * 64):
        spawner.user_options = {"image": choice}
        with pytest.raises(web.HTTPError) as refused:
            asyncio.run(spawner.start())
        assert refused.value.status_code == 400
        assert refused.value.log_message.startswith("unknown image ")


def test_all_servers_of_one_user_share_one_start_lock(spawner, config, make_user):
    user = spawner.user
    named = JhubSwarmSpawner(user=user, config=config, orm_spawner=user._new_orm_spawner("lab"))
    other = JhubSwarmSpawner(user=make_user("bob"), config=config)
    assert named.start_lock(user.name) is spawner.start_lock(user.name)
    assert other.start_lock("bob") is not spawner.start_lock(user.name)


def test_named_servers_get_their_own_service(spawner, config):
    user = spawner.user
    named = JhubSwarmSpawner(user=user, config=config, orm_spawner=user._new_orm_spawner("lab"))
    prepared(named, "minimal")
    assert named.service_name == "teststack-user-alice--lab"
    assert named.home_label == spawner.home_label, "one home, one pin, whichever server starts"


def test_the_profiles_child_is_a_swarm_spawner_with_the_profiles_limits(config, make_user):
    wrapper = JhubProfilesSpawner(user=make_user("carol"), config=config)
    wrapper.user_options = {"profile": "minimal-tiny"}
    child = wrapper.construct_child()
    assert type(child) is JhubSwarmSpawner
    assert isinstance(child, JhubDockerSpawner)
    image = child.catalog_image
    child.apply_catalog_image(image)
    assert image.placement == ("node.labels.small==true",)
    resources = child.service_spec(image, [], None, {})["task_template"]["Resources"]
    assert resources["Limits"] == {"NanoCPUs": 500_000_000, "MemoryBytes": 512 * 1024**2, "Pids": 512}
    assert child.jhub_constraints == ["node.labels.jhub.users==true"]


def test_a_swarm_spawner_keeps_servers_removed_and_skips_local_pulls(spawner):
    assert spawner.remove is True
    assert spawner.pull_policy == "skip"  # SwarmSpawner's default; the config file sets it too


class FakeAPIError(Exception):
    """The two attributes of docker.errors.APIError that is_version_conflict reads."""

    def __init__(self, status_code, explanation):
        super().__init__(explanation)
        self.status_code = status_code
        self.explanation = explanation


def test_node_update_conflicts_are_recognised():
    assert is_version_conflict(FakeAPIError(500, "rpc error: code = Unknown desc = update out of sequence"))
    assert is_version_conflict(FakeAPIError(409, "conflict"))
    assert not is_version_conflict(FakeAPIError(500, "node not found"))
