"""The spawners: the escaped form, refusal of unknown images and profiles, what a spawn resolves to."""

import asyncio
import os
import subprocess
import sys

import pytest
from tornado import web

from jhub_hub.spawner import ARCHIVE_SCRIPT, JhubDockerSpawner, JhubProfilesSpawner, form_html, profiles_config
from jhub_hub.view import parse

from conftest import IMAGE_ID_A, IMAGE_ID_B, spawner_config


@pytest.fixture
def config(view):
    c = spawner_config(view)
    c.JhubProfilesSpawner.profiles = profiles_config(view)
    return c


@pytest.fixture
def docker_spawner(config, make_user):
    return JhubDockerSpawner(user=make_user("alice"), config=config)


@pytest.fixture
def profiles_spawner(config, make_user):
    return JhubProfilesSpawner(user=make_user("bob"), config=config)


def test_form_escapes_names_and_descriptions():
    form = form_html("image", "Pick <one>:", [('<script>alert("x")</script>', "It's <b>bold</b>", 'say "hi" & <go>')])
    assert "<script>" not in form
    assert "<b>" not in form
    assert 'value="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" selected' in form
    assert ">It&#x27;s &lt;b&gt;bold&lt;/b&gt;</option>" in form
    assert "<strong>It&#x27;s &lt;b&gt;bold&lt;/b&gt;</strong>: say &quot;hi&quot; &amp; &lt;go&gt;</li>" in form
    assert '<label for="jhub-image" class="form-label">Pick &lt;one&gt;:</label>' in form


def test_image_form_lists_the_view_in_order_escaped(config, view_data, make_user):
    view_data["images"][0]["display_name"] = "<script>alert('pwned')</script> \"quoted\""
    config.JhubDockerSpawner.jhub_view = parse(view_data, "v")
    spawner = JhubDockerSpawner(user=make_user(), config=config)
    form = spawner.options_form(spawner)
    assert "<script>" not in form
    first = "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt; &quot;quoted&quot;"
    assert f'<option value="{first}" selected>{first}</option>' in form
    assert form.index(first) < form.index("Minimal: Python only")
    assert "<li><strong>Minimal: Python only</strong>: JupyterLab on Python</li>" in form
    assert "['" not in form  # DockerSpawner 14's list repr does not leak in


def test_one_image_needs_no_form(config, view_data, make_user):
    view_data["images"] = view_data["images"][:1]
    view_data["profiles"] = view_data["profiles"][:1]
    config.JhubDockerSpawner.jhub_view = parse(view_data, "v")
    spawner = JhubDockerSpawner(user=make_user(), config=config)
    assert spawner.options_form(spawner) == ""


def test_profile_form_is_escaped(config, make_user, view_data):
    view_data["profiles"][0]["display_name"] = 'Big <img src=x onerror="alert(1)">'
    config.JhubProfilesSpawner.profiles = profiles_config(parse(view_data, "v"))
    spawner = JhubProfilesSpawner(user=make_user(), config=config)
    form = spawner.options_form(spawner)
    assert "<img" not in form
    assert (
        '<option value="datascience-small" selected>Big &lt;img src=x onerror=&quot;alert(1)&quot;&gt;</option>' in form
    )


@pytest.mark.parametrize(
    ("choice", "name"),
    [
        ("Minimal: Python only", "minimal"),  # what the form posts
        ("minimal", "minimal"),  # what a REST call may send
        ("", "datascience"),
        (None, "datascience"),
    ],
)
def test_images_are_chosen_by_display_name_or_name(docker_spawner, choice, name):
    assert docker_spawner.image_for_choice(choice).name == name


@pytest.mark.parametrize("choice", ["gpu", "Minimal", "sha256:" + "b" * 64, ["minimal"], 3])
def test_unknown_images_are_refused_with_400(docker_spawner, choice):
    with pytest.raises(web.HTTPError) as caught:
        docker_spawner.image_for_choice(choice)
    assert caught.value.status_code == 400
    assert caught.value.log_message.startswith(f"unknown image {str(choice)[:100]!r}: choose one of ")
    assert caught.value.log_message.endswith("'datascience', 'minimal'")


def test_refusal_happens_before_any_container(docker_spawner):
    # The form handler and apply_user_options both refuse; start() refuses before DockerSpawner runs.
    with pytest.raises(web.HTTPError) as by_form:
        docker_spawner.options_from_form({"image": ["<script>"]})
    assert by_form.value.status_code == 400
    assert docker_spawner.options_from_form({"image": ["minimal"]}) == {"image": "Minimal: Python only"}
    with pytest.raises(web.HTTPError) as by_rest:
        docker_spawner.apply_user_options(docker_spawner, {"image": "nope"})
    assert by_rest.value.status_code == 400
    docker_spawner.user_options = {"image": "nope"}
    with pytest.raises(web.HTTPError) as at_start:
        asyncio.run(docker_spawner.start())
    assert at_start.value.status_code == 400
    with pytest.raises(web.HTTPError) as checked:
        asyncio.run(docker_spawner.check_allowed("nope"))
    assert checked.value.status_code == 400
    assert asyncio.run(docker_spawner.check_allowed("minimal")) == IMAGE_ID_B


def test_a_spawn_resolves_its_image_volume_url_and_labels(docker_spawner):
    docker_spawner.user_options = {"image": "Minimal: Python only"}
    docker_spawner.apply_catalog_image(docker_spawner.catalog_image)
    assert docker_spawner.image == IMAGE_ID_B
    assert docker_spawner.default_url == "/tree"
    assert docker_spawner.volumes == {"testvol-{username}": {"bind": "/home/user", "mode": "rw"}}
    assert docker_spawner.object_name == "teststack-user-alice"
    assert docker_spawner.extra_create_kwargs["labels"] == {
        "io.jhub-docker.stack": "teststack",
        "io.jhub-docker.user": "alice",
        "io.jhub-docker.image": "minimal",
    }


def test_the_user_volume_is_named_as_mounted_and_labelled_with_the_stack(docker_spawner):
    docker_spawner.apply_catalog_image(docker_spawner.catalog_image)
    name, labels = docker_spawner.user_volume()
    assert name in docker_spawner.volume_binds, "the volume created is the volume mounted"
    assert name == "testvol-alice"
    assert labels == {
        "io.jhub-docker.stack": "teststack",
        "io.jhub-docker.user": "alice",
        "io.jhub-docker.account-created": docker_spawner.user.created.isoformat(),
    }


def test_labels_keep_braces_of_user_names(config, make_user):
    spawner = JhubDockerSpawner(user=make_user("a{b}"), config=config)
    spawner.apply_catalog_image(spawner.image_for_choice("datascience"))
    # DockerSpawner formats these strings once more with its template namespace.
    assert spawner.extra_create_kwargs["labels"]["io.jhub-docker.user"] == "a{{b}}"


def test_unknown_profiles_are_refused_with_400(profiles_spawner):
    for choice in ("huge", "Full stack, 1 CPU, 2 GB", ["datascience-small"]):
        with pytest.raises(web.HTTPError) as caught:
            profiles_spawner.profile_for_choice(choice)
        assert caught.value.status_code == 400
        assert "choose one of 'datascience-small', 'minimal-tiny'" in caught.value.log_message
    with pytest.raises(web.HTTPError):
        profiles_spawner.options_from_form({"profile": ["huge"]})
    with pytest.raises(web.HTTPError):
        profiles_spawner.apply_user_options(profiles_spawner, {"profile": "huge"})
    profiles_spawner.user_options = {"profile": "huge"}
    with pytest.raises(web.HTTPError) as at_start:
        profiles_spawner.start()
    assert at_start.value.status_code == 400
    assert profiles_spawner.options_from_form({"profile": ["minimal-tiny"]}) == {"profile": "minimal-tiny"}


@pytest.mark.parametrize(
    ("profile", "image_id", "cpus", "mem_bytes", "home"),
    [
        ("datascience-small", IMAGE_ID_A, 1.0, 2 * 1024**3, "/home/jovyan"),
        ("minimal-tiny", IMAGE_ID_B, 0.5, 512 * 1024**2, "/home/user"),
    ],
)
def test_the_child_gets_the_profiles_image_and_limits(profiles_spawner, profile, image_id, cpus, mem_bytes, home):
    profiles_spawner.user_options = {"profile": profile}
    child = profiles_spawner.construct_child()
    assert isinstance(child, JhubDockerSpawner)
    assert profiles_spawner.child_profile == profile
    assert (child.cpu_limit, child.mem_limit) == (cpus, mem_bytes)
    # The child shares the wrapper's user and database row, and takes the stack's settings from config.
    assert child.user is profiles_spawner.user
    assert child.orm_spawner is profiles_spawner.orm_spawner
    assert (child.ip, child.port) == ("0.0.0.0", 8888)  # DockerSpawner's, not the base Spawner's
    child.apply_catalog_image(child.catalog_image)
    assert child.image == image_id
    assert child.volumes == {"testvol-{username}": {"bind": home, "mode": "rw"}}
    assert child.extra_create_kwargs["labels"]["io.jhub-docker.stack"] == "teststack"
    # A profile spawns its own image only: naming another one is refused.
    with pytest.raises(web.HTTPError) as caught:
        child.image_for_choice("minimal")
    assert caught.value.log_message == "this hub offers profiles: choose a profile, not an image"


def test_user_options_reach_the_child_and_stale_profiles_fall_back(profiles_spawner):
    profiles_spawner.user_options = {"profile": "gone-since-last-start"}
    child = profiles_spawner.construct_child()
    assert profiles_spawner.child_profile == "datascience-small"
    profiles_spawner.user_options = {"profile": "minimal-tiny"}
    assert child.user_options == {"profile": "minimal-tiny"}  # forwarded by the directional link


def test_profiles_config_lists_every_profile(view):
    assert [key for _, key, _, _ in profiles_config(view)] == ["datascience-small", "minimal-tiny", "physics-big"]
    assert profiles_config(view)[:2] == [
        (
            "Full stack, 1 CPU, 2 GB",
            "datascience-small",
            JhubDockerSpawner,
            {"jhub_image_entry": "datascience", "cpu_limit": 1.0, "mem_limit": "2G"},
        ),
        (
            "Minimal, half a CPU, 512 MB",
            "minimal-tiny",
            JhubDockerSpawner,
            {"jhub_image_entry": "minimal", "cpu_limit": 0.5, "mem_limit": "512M"},
        ),
    ]


def test_a_spawner_without_a_view_says_so(make_user):
    spawner = JhubDockerSpawner(user=make_user())
    with pytest.raises(RuntimeError, match="jhub_view is not configured"):
        spawner.image_for_choice("x")


def test_docker_api_calls_run_in_parallel_on_one_shared_pool(docker_spawner, config, make_user):
    other = JhubDockerSpawner(user=make_user("carol"), config=config)
    assert docker_spawner.executor is other.executor
    assert docker_spawner.client_kwargs == {"max_pool_size": docker_spawner.docker_api_threads}
    # Three calls that each wait for the other two: they finish only if they run at the same time.
    import threading

    barrier = threading.Barrier(3, timeout=5)

    class Client:
        def stop_container(self, name):
            barrier.wait()
            return name

    for spawner in (docker_spawner, other):
        spawner.__class__._client = Client()

    async def three_stops():
        return await asyncio.gather(
            *(s.docker("stop_container", n) for s, n in ((docker_spawner, "a"), (other, "b"), (docker_spawner, "c")))
        )

    try:
        assert asyncio.run(three_stops()) == ["a", "b", "c"]
    finally:
        JhubDockerSpawner._client = None


async def free_port():
    """A loopback port nothing listens on (bound once by the OS, then released)."""
    probe = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    return port


def test_start_returns_as_soon_as_the_server_listens(docker_spawner):
    async def scenario():
        loop = asyncio.get_running_loop()
        # A port that is free now and starts listening 0.5 s later, as a server does after its start.
        port = await free_port()
        servers = []

        async def listen_later():
            await asyncio.sleep(0.5)
            servers.append(await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port))

        started = loop.time()
        listener = asyncio.ensure_future(listen_later())
        listening = await docker_spawner.wait_until_listening("127.0.0.1", port)
        waited = loop.time() - started
        await listener
        servers[0].close()
        return listening, waited

    listening, waited = asyncio.run(scenario())
    assert listening
    assert 0.5 <= waited < 0.9


def test_waiting_for_a_server_ends_when_its_container_exited(docker_spawner, monkeypatch):
    async def exited():
        return 1

    monkeypatch.setattr(docker_spawner, "poll", exited)

    async def scenario():
        loop = asyncio.get_running_loop()
        port = await free_port()
        started = loop.time()
        listening = await docker_spawner.wait_until_listening("127.0.0.1", port)
        return listening, loop.time() - started

    listening, waited = asyncio.run(scenario())
    assert not listening
    assert waited < 2.0


def test_deleting_a_user_archives_then_removes_the_volume(docker_spawner, engine):
    client = engine({"testvol-alice": {"io.jhub-docker.stack": "teststack"}})
    asyncio.run(docker_spawner.delete_forever())
    (archive,) = [name for name in client.volumes if name != "testvol-alice"]
    assert "testvol-alice" not in client.volumes, "the user's volume is gone once the copy is verified"
    assert archive.startswith("teststack-archive-alice-")
    labels = client.volumes[archive]
    assert labels["io.jhub-docker.stack"] == "teststack"
    assert labels["io.jhub-docker.archived-user"] == "alice"
    assert labels["io.jhub-docker.archived-at"].endswith("Z")
    assert labels["io.jhub-docker.archived-from"] == "testvol-alice"
    binds = {"testvol-alice": {"bind": "/from", "mode": "ro"}, archive: {"bind": "/to", "mode": "rw"}}
    assert [call[0] for call in client.calls] == [
        "inspect_volume",
        "create_volume",
        "create_container",
        "start",
        "remove_container",
        "remove_volume",
    ]
    assert ("create_container", binds) in client.calls


def test_a_failed_copy_keeps_the_volume(docker_spawner, engine):
    client = engine({"testvol-alice": {}}, copy_status=1)
    with pytest.raises(RuntimeError, match="the copy differs"):
        asyncio.run(docker_spawner.delete_forever())
    assert "testvol-alice" in client.volumes
    assert ("remove_container", "c0ffee") in client.calls, "the throwaway container is removed either way"


def test_deleting_a_named_server_keeps_the_shared_volume(docker_spawner, config, engine):
    client = engine({"testvol-alice": {}})
    user = docker_spawner.user
    named = JhubDockerSpawner(user=user, config=config, orm_spawner=user._new_orm_spawner("lab"))
    assert named.name == "lab"
    asyncio.run(named.delete_forever())
    assert client.calls == []
    assert "testvol-alice" in client.volumes


def test_a_user_without_a_volume_has_nothing_to_archive(docker_spawner, engine):
    client = engine({})
    asyncio.run(docker_spawner.delete_forever())
    assert client.calls == [("inspect_volume", "testvol-alice")]


def test_a_volume_of_an_earlier_account_of_the_name_is_refused(docker_spawner, engine):
    engine({"testvol-alice": {"io.jhub-docker.account-created": "2020-01-01T00:00:00"}})
    with pytest.raises(web.HTTPError) as refused:
        asyncio.run(docker_spawner.ensure_own_volume())
    assert refused.value.status_code == 409
    assert "earlier account named 'alice'" in refused.value.log_message


def test_the_accounts_own_volume_and_unlabelled_ones_are_used(docker_spawner, engine):
    engine({"testvol-alice": {"io.jhub-docker.account-created": docker_spawner.user.created.isoformat()}})
    assert asyncio.run(docker_spawner.ensure_own_volume()) == "testvol-alice"
    engine({"testvol-alice": {"io.jhub-docker.stack": "teststack"}})  # made before accounts were labelled
    assert asyncio.run(docker_spawner.ensure_own_volume()) == "testvol-alice"
    client = engine({})
    assert asyncio.run(docker_spawner.ensure_own_volume()) == "testvol-alice"
    assert client.volumes["testvol-alice"]["io.jhub-docker.account-created"] == docker_spawner.user.created.isoformat()


def test_the_archive_script_copies_and_verifies_a_home(tmp_path):
    home, archive = tmp_path / "home", tmp_path / "archive"
    (home / "sub").mkdir(parents=True)
    archive.mkdir()
    (home / "diary.txt").write_text("dear diary")
    (home / "sub" / "data.bin").write_bytes(os.urandom(3000))
    (home / "private").write_text("mine")
    (home / "private").chmod(0o600)
    (home / "link").symlink_to("sub/data.bin")
    (home / "dangling").symlink_to("nowhere")
    done = subprocess.run(
        [sys.executable, "-c", ARCHIVE_SCRIPT, str(home), str(archive)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "archived and verified 6 entries"
    assert (archive / "diary.txt").read_text() == "dear diary"
    assert os.readlink(archive / "dangling") == "nowhere"
    assert (archive / "private").stat().st_mode & 0o777 == 0o600


def test_a_start_waits_its_turn_and_its_progress_says_where_it_stands(config, make_user, monkeypatch):
    # One start at a time: the second user's start waits for the first's and its progress events say how
    # many are ahead, then that its turn came. No container is made: start_container is the stand-in.
    config.JhubDockerSpawner.concurrent_starts = 1
    monkeypatch.setattr(JhubDockerSpawner, "_jhub_start_queue", None)
    first, second = (JhubDockerSpawner(user=make_user(name), config=config) for name in ("ann", "bob"))
    for spawner in (first, second):
        spawner.user_options = {}
    first_may_finish = asyncio.Event()
    started = []

    async def stand_in(self, image):
        started.append(self.user.name)
        if self is first:
            await first_may_finish.wait()
        return ("127.0.0.1", 8888)

    monkeypatch.setattr(JhubDockerSpawner, "start_container", stand_in)

    async def scenario():
        first_start = asyncio.create_task(first.start())
        await asyncio.sleep(0)
        second_start = asyncio.create_task(second.start())
        await asyncio.sleep(0)
        messages = []

        async def read_progress():
            async for event in second.progress():
                messages.append(event["message"])

        reading = asyncio.create_task(read_progress())
        await asyncio.sleep(0.1)
        assert started == ["ann"], "bob waits while ann starts"
        first_may_finish.set()
        results = await asyncio.gather(first_start, second_start)
        await asyncio.wait_for(reading, 2)
        return results, messages

    results, messages = asyncio.run(scenario())
    assert results == [("127.0.0.1", 8888)] * 2
    assert started == ["ann", "bob"]
    assert messages[0] == "Many people are starting servers: yours is next (1 server starts at a time here)"
    assert messages[-1] == "Your turn: starting your server"


def test_waiting_messages_count_people_and_slots():
    from jhub_hub.spawner import waiting_message

    assert (
        waiting_message(1, 2)
        == "Many people are starting servers: 1 person is ahead of you (2 servers start at a time here)"
    )
    assert waiting_message(7, 2).startswith("Many people are starting servers: 7 people are ahead of you")
