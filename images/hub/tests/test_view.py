"""Reading the resolved view: its version and shape, never the catalog's rules."""

import os

import pytest

from jhub_hub import ConfigError
from jhub_hub.view import VIEW_HINT, load

from conftest import IMAGE_ID_A, IMAGE_ID_B


def test_a_good_view_is_read_in_order(write_view, view_data):
    view = load(write_view(view_data))
    assert [i.name for i in view.images] == ["datascience", "minimal", "physics"]
    assert view.images[1].image_id == IMAGE_ID_B
    assert view.images[0].home == "/home/jovyan"
    assert [(p.name, p.image, p.cpu_limit, p.mem_limit) for p in view.profiles] == [
        ("datascience-small", "datascience", 1.0, "2G"),
        ("minimal-tiny", "minimal", 0.5, "512M"),
        ("physics-big", "physics", 2.0, "4G"),
    ]
    assert view.image_named("datascience").image_id == IMAGE_ID_A
    assert view.image_for_choice("Minimal: Python only").name == "minimal"
    assert view.image_for_choice("minimal").name == "minimal"
    assert view.image_for_choice("nope") is None


def test_profiles_may_be_empty_and_descriptions_absent(write_view, view_data):
    view_data["profiles"] = []
    del view_data["images"][0]["description"]
    view = load(write_view(view_data))
    assert view.profiles == ()
    assert view.images[0].description == ""


def test_extra_keys_are_ignored(write_view, view_data):
    view_data["generated_by"] = "xtask"
    view_data["images"][0]["parent"] = "base"
    assert len(load(write_view(view_data)).images) == 3


def expect_error(path, message):
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert caught.value.message == message
    assert caught.value.hint.endswith(VIEW_HINT)
    return caught.value


@pytest.mark.parametrize("version", [1, 2, 4, 0, "3", None, True, 3.0])
def test_another_version_is_refused(write_view, view_data, version):
    # Version 1 (before `placement`) too: an older xtask's view is refused, never half-read.
    view_data["version"] = version
    path = write_view(view_data)
    expect_error(path, f"view {path} has version {version!r}, this hub reads version 3 only")


def test_missing_version_is_refused(write_view, view_data):
    del view_data["version"]
    path = write_view(view_data)
    expect_error(path, f"view {path} has version None, this hub reads version 3 only")


def test_placement_is_read_and_optional(write_view, view_data):
    view_data["images"][0]["placement"] = ["node.labels.gpu==true", "node.role != manager"]
    del view_data["images"][1]["placement"]
    view = load(write_view(view_data))
    assert view.images[0].placement == ("node.labels.gpu==true", "node.role != manager")
    assert view.images[1].placement == ()


def test_groups_are_read_with_their_optional_limits(view):
    assert view.images[2].groups == ("physics-101",)
    assert view.images[0].groups == ()
    assert view.profiles[2].groups == ("physics-101", "staff")
    assert [(g.name, g.cpu_limit, g.mem_limit, g.named_server_limit) for g in view.groups] == [
        ("physics-101", 1.5, "3G", 1),
        ("staff", None, None, None),
    ]


def test_a_member_gets_the_largest_limit_of_their_groups(view_data, write_view):
    view_data["groups"][1].update(cpu_limit=4.0, mem_limit="1073741824", named_server_limit=None)
    view = load(write_view(view_data))
    assert view.limits_for([]) == {"cpu_limit": None, "mem_limit": None, "named_server_limit": None}
    assert view.limits_for(["physics-101"]) == {"cpu_limit": 1.5, "mem_limit": 3 << 30, "named_server_limit": 1}
    assert view.limits_for(["staff", "physics-101", "not-in-the-catalog"]) == {
        "cpu_limit": 4.0,
        "mem_limit": 3 << 30,
        "named_server_limit": 1,
    }


def test_an_image_kept_to_groups_is_offered_to_members_and_admins_only(view):
    physics = view.images[2]
    assert not physics.offered_to([])
    assert not physics.offered_to(["staff"])
    assert physics.offered_to(["staff", "physics-101"])
    assert physics.offered_to([], is_admin=True)
    assert view.images[0].offered_to([])


def edit(view_data, change):
    change(view_data)
    return view_data


SHAPE_ERRORS = [
    (lambda d: d.pop("images"), " has no 'images' list"),
    (lambda d: d.pop("profiles"), " has no 'profiles' list"),
    (lambda d: d.update(images={}), ": 'images' is not a list of objects"),
    (lambda d: d.update(images=["datascience"]), ": 'images' is not a list of objects"),
    (lambda d: d.update(profiles=None), ": 'profiles' is not a list of objects"),
    (lambda d: d.update(images=[]), " lists no single-user image"),
    (lambda d: d["images"][0].pop("image_id"), ": images[0]: 'image_id' must be a non-empty string, got missing"),
    (lambda d: d["images"][1].update(home=""), ": images[1]: 'home' must be a non-empty string, got ''"),
    (lambda d: d["images"][0].update(name=7), ": images[0]: 'name' must be a non-empty string, got 7"),
    (lambda d: d["images"][0].update(description=None), ": images[0]: 'description' must be a string, got None"),
    (lambda d: d["images"][0].pop("default_url"), ": images[0]: 'default_url' must be a non-empty string, got missing"),
    (
        lambda d: d["images"][1].update(placement="node.labels.gpu==true"),
        ": images[1]: 'placement' must be a list of strings, got 'node.labels.gpu==true'",
    ),
    (lambda d: d["images"][1].update(placement=[1]), ": images[1]: 'placement' must be a list of strings, got [1]"),
    (
        lambda d: d["images"][0].update(placement=["gpu"]),
        ": images[0]: 'placement' holds 'gpu', not a Swarm constraint: it has no == or != between a key and a value",
    ),
    (lambda d: d["profiles"][0].update(cpu_limit="1"), ": profiles[0]: 'cpu_limit' must be a positive number, got '1'"),
    (
        lambda d: d["profiles"][0].update(cpu_limit=True),
        ": profiles[0]: 'cpu_limit' must be a positive number, got True",
    ),
    (lambda d: d["profiles"][1].update(cpu_limit=0), ": profiles[1]: 'cpu_limit' must be a positive number, got 0"),
    (lambda d: d["profiles"][1].update(mem_limit=2), ": profiles[1]: 'mem_limit' must be a non-empty string, got 2"),
    (
        lambda d: d["profiles"][0].pop("display_name"),
        ": profiles[0]: 'display_name' must be a non-empty string, got missing",
    ),
    (
        lambda d: d["profiles"][0].update(image="gpu"),
        ": profiles[0] names image 'gpu', which the view does not list",
    ),
    (lambda d: d.pop("groups"), " has no 'groups' list"),
    (
        lambda d: d["images"][2].update(groups="physics-101"),
        ": images[2]: 'groups' must be a list of group names, got 'physics-101'",
    ),
    (lambda d: d["images"][2].update(groups=[""]), ": images[2]: 'groups' must be a list of group names, got ['']"),
    (
        lambda d: d["images"][2].update(groups=["chemistry"]),
        ": images[2] is kept to 'chemistry', a group the view does not list",
    ),
    (
        lambda d: d["profiles"][2].update(groups=["nobody"]),
        ": profiles[2] is kept to 'nobody', a group the view does not list",
    ),
    (lambda d: d["groups"][0].pop("name"), ": groups[0]: 'name' must be a non-empty string, got missing"),
    (lambda d: d["groups"][0].update(cpu_limit=0), ": groups[0]: 'cpu_limit' must be a positive number, got 0"),
    (
        lambda d: d["groups"][0].update(mem_limit="lots"),
        ": groups[0]: 'mem_limit' must be a size such as 2G or bytes, got 'lots'",
    ),
    (
        lambda d: d["groups"][0].update(named_server_limit=-1),
        ": groups[0]: 'named_server_limit' must be a whole number of 0 or more, got -1",
    ),
]


@pytest.mark.parametrize(("change", "suffix"), SHAPE_ERRORS, ids=[s for _, s in SHAPE_ERRORS])
def test_missing_or_ill_typed_keys_are_refused(write_view, view_data, change, suffix):
    path = write_view(edit(view_data, change))
    expect_error(path, f"view {path}{suffix}")


def test_not_an_object(write_view):
    path = write_view([1, 2])
    expect_error(path, f"view {path} is not a JSON object")


def test_a_missing_file(tmp_path):
    path = str(tmp_path / "absent.json")
    error = expect_error(path, f"view {path} does not exist")
    assert error.hint == "mount it into the hub container; run `cargo xtask up` (it writes the view)"


def test_a_directory_where_the_file_should_be(tmp_path):
    # What Docker leaves when it bind-mounts a file that does not exist on the host.
    path = tmp_path / "hub-view.json"
    os.mkdir(path)
    error = expect_error(str(path), f"view {path} is a directory (Docker creates one when the mounted file is missing)")
    assert error.hint.startswith("remove the empty directory on the host, then ")


def test_invalid_json(tmp_path):
    path = tmp_path / "hub-view.json"
    path.write_text('{"version": 1,')
    with pytest.raises(ConfigError) as caught:
        load(str(path))
    assert caught.value.message.startswith(f"view {path} is not valid JSON: ")
    assert caught.value.hint == VIEW_HINT
