"""Groups: images and profiles kept to groups, offered to their members only (a forged choice refused as an
unknown one), the groups' limits on their members' servers, and the hub's group settings."""

import asyncio
from types import SimpleNamespace

import pytest
from jupyterhub import orm
from tornado import web

from jhub_hub import config as config_module
from jhub_hub.spawner import JhubDockerSpawner, JhubProfilesSpawner, profile_groups, profiles_config

from conftest import spawner_config


@pytest.fixture
def config(view):
    c = spawner_config(view)
    c.JhubProfilesSpawner.profiles = profiles_config(view)
    c.JhubProfilesSpawner.jhub_profile_groups = profile_groups(view)
    return c


@pytest.fixture
def join(db):
    """Put a user into a group, as the admin panel or a directory login does (a row in the database)."""

    def join(user, name):
        group = db.query(orm.Group).filter_by(name=name).first() or orm.Group(name=name)
        db.add(group)
        user.orm_user.groups.append(group)
        db.commit()

    return join


def form_of(spawner):
    return spawner.options_form(spawner)


def test_a_user_sees_the_images_of_their_groups_and_membership_counts_at_once(config, make_user, join):
    alice = make_user("alice")
    spawner = JhubDockerSpawner(user=alice, config=config)
    assert "Physics 101" not in form_of(spawner)
    assert [image.name for image in spawner.offered_images()] == ["datascience", "minimal"]
    # Same spawner, the next visit of the spawn page: she was added to the course meanwhile.
    join(alice, "physics-101")
    assert "Physics 101" in form_of(spawner)
    assert spawner.image_for_choice("Physics 101").name == "physics"


@pytest.mark.parametrize("choice", ["physics", "Physics 101"])
def test_a_forged_hidden_image_is_refused_as_an_unknown_one(config, make_user, choice):
    spawner = JhubDockerSpawner(user=make_user("mallory"), config=config)
    refusals = []
    for forged in (choice, "no-such-image"):
        with pytest.raises(web.HTTPError) as caught:
            spawner.image_for_choice(forged)
        refusals.append((caught.value.status_code, caught.value.log_message.replace(repr(forged), "X")))
    assert refusals[0] == refusals[1] == (400, "unknown image X: choose one of 'datascience', 'minimal'")
    spawner.user_options = {"image": choice}
    with pytest.raises(web.HTTPError) as at_start:
        asyncio.run(spawner.start())  # refused before any container exists (DockerSpawner never runs)
    assert at_start.value.status_code == 400


def test_an_admin_is_offered_every_image(config, make_user):
    admin = make_user("admin")
    admin.orm_user.admin = True
    spawner = JhubDockerSpawner(user=admin, config=config)
    assert [image.name for image in spawner.offered_images()] == ["datascience", "minimal", "physics"]


def test_a_user_offered_nothing_is_told_why(config, make_user, view_data):
    from jhub_hub.view import parse

    for image in view_data["images"]:
        image["groups"] = ["staff"]
    config.JhubDockerSpawner.jhub_view = parse(view_data, "v")
    spawner = JhubDockerSpawner(user=make_user("carol"), config=config)
    with pytest.raises(web.HTTPError) as caught:
        spawner.image_for_choice(None)
    assert caught.value.status_code == 403
    assert "ask the admin to add you to your course's or team's group" in caught.value.log_message


def test_a_members_server_gets_the_groups_limits_and_loses_them_with_the_group(config, make_user, join, db):
    alice = make_user("alice")
    spawner = JhubDockerSpawner(user=alice, config=config)
    spawner.apply_catalog_image(spawner.image_for_choice("minimal"))
    assert (spawner.cpu_limit, spawner.mem_limit) == (2.0, 4 << 30), "the hub's own limits"
    join(alice, "physics-101")
    spawner.apply_catalog_image(spawner.image_for_choice("minimal"))
    assert (spawner.cpu_limit, spawner.mem_limit) == (1.5, 3 << 30), "the group's, for any image"
    alice.orm_user.groups.clear()
    db.commit()
    spawner.apply_catalog_image(spawner.image_for_choice("minimal"))
    assert (spawner.cpu_limit, spawner.mem_limit) == (2.0, 4 << 30), "back to the hub's"


def test_a_profile_keeps_its_own_limits_for_a_member(config, make_user, join):
    bob = make_user("bob")
    join(bob, "physics-101")
    wrapper = JhubProfilesSpawner(user=bob, config=config)
    wrapper.user_options = {"profile": "minimal-tiny"}
    child = wrapper.construct_child()
    child.apply_catalog_image(child.catalog_image)
    assert (child.cpu_limit, child.mem_limit) == (0.5, 512 << 20)


def test_profiles_kept_to_groups_are_offered_to_members_only(config, make_user, join):
    bob = make_user("bob")
    wrapper = JhubProfilesSpawner(user=bob, config=config)
    assert "physics-big" not in form_of(wrapper)
    with pytest.raises(web.HTTPError) as caught:
        wrapper.profile_for_choice("physics-big")
    assert caught.value.status_code == 400
    assert caught.value.log_message.endswith("choose one of 'datascience-small', 'minimal-tiny'")
    join(bob, "staff")
    assert "physics-big" in form_of(wrapper)
    assert wrapper.profile_for_choice("physics-big") == "physics-big"


def test_the_hub_creates_the_catalogs_groups_without_members(view):
    assert config_module.catalog_groups(view) == {"physics-101": {}, "staff": {}}


def test_the_named_server_limit_is_the_largest_of_a_users_groups(view, make_user, join):
    limit = config_module.named_server_limit(view, 3)
    alice = make_user("alice")
    handler = SimpleNamespace(current_user=alice)
    assert limit(handler) == 3
    join(alice, "staff")  # sets no limit
    assert limit(handler) == 3
    join(alice, "physics-101")
    assert limit(handler) == 1


def mounts(spawner):
    spawner.apply_catalog_image(spawner.image_for_choice("datascience"))
    return {bind["bind"]: (volume, bind["mode"]) for volume, bind in spawner.volumes.items()}


def test_members_get_the_course_read_only_and_instructors_read_write(config, make_user, join):
    alice, carol, bob = make_user("alice"), make_user("carol"), make_user("bob")
    join(alice, "physics-101")
    join(carol, "staff")  # physics-101's instructors
    student, instructor, outsider = (JhubDockerSpawner(user=u, config=config) for u in (alice, carol, bob))
    assert mounts(student) == {
        "/home/jovyan": ("testvol-{username}", "rw"),
        "/home/jovyan/physics-101/course": ("teststack-group-physics-101-course", "ro"),
        "/home/jovyan/physics-101/shared": ("teststack-group-physics-101-shared", "rw"),
    }
    assert mounts(instructor)["/home/jovyan/physics-101/course"] == ("teststack-group-physics-101-course", "rw")
    assert mounts(instructor)["/home/jovyan/physics-101/shared"] == ("teststack-group-physics-101-shared", "rw")
    assert mounts(outsider) == {"/home/jovyan": ("testvol-{username}", "rw")}


def test_a_group_folder_is_made_once_owned_by_the_users_uid(config, make_user, join, engine):
    alice = make_user("alice")
    join(alice, "physics-101")
    spawner = JhubDockerSpawner(user=alice, config=config)
    client = engine({"teststack-group-physics-101-shared": {}})
    folders = spawner.apply_catalog_image(spawner.image_for_choice("minimal"))
    assert [(group, kind) for group, kind, _ in folders] == [("physics-101", "course"), ("physics-101", "shared")]
    asyncio.run(spawner.ensure_group_folders(folders))
    course = "teststack-group-physics-101-course"
    assert client.volumes[course] == {
        "io.jhub-docker.stack": "teststack",
        "io.jhub-docker.group": "physics-101",
        "io.jhub-docker.group-folder": "course",
    }
    assert ("create_container", {course: {"bind": "/folder", "mode": "rw"}}) in client.calls
    made = [call for call in client.calls if call[0] == "create_volume"]
    assert made == [("create_volume", course)], "the shared folder existed: left alone"
    client.calls.clear()
    asyncio.run(spawner.ensure_group_folders(folders))
    assert [call[0] for call in client.calls] == ["inspect_volume", "inspect_volume"], "nothing made twice"


def test_a_folder_whose_preparation_failed_is_removed_for_the_next_spawn(config, make_user, join, engine):
    alice = make_user("alice")
    join(alice, "physics-101")
    client = engine({}, copy_status=1)
    spawner = JhubDockerSpawner(user=alice, config=config)
    folders = spawner.apply_catalog_image(spawner.image_for_choice("minimal"))
    with pytest.raises(RuntimeError):
        asyncio.run(spawner.ensure_group_folders(folders))
    assert client.volumes == {}
