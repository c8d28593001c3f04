"""The spawners: one Docker container per user server, from an image (or a profile) of the resolved view.

Both take the view through configuration (`c.JhubDockerSpawner.jhub_view = view`), never from a global,
and refuse an unknown image or profile with a 400 before any container exists. When a user is deleted,
`delete_forever` moves their volume out of the way (into an archive volume), so a new account of the same
name starts with an empty home; a volume labelled for another account of that name is never mounted.
"""

import asyncio
import datetime
import html
from concurrent.futures import ThreadPoolExecutor

import docker.errors
from dockerspawner import DockerSpawner
from tornado import web
from traitlets import Callable, Dict, Float, Instance, Integer, Unicode, Union, default, directional_link
from wrapspawner import ProfilesSpawner

from jhub_hub.start_queue import StartQueue
from jhub_hub.view import View, offered


def form_html(select_name, label, choices):
    """The spawn form: a <select> of (value, text, description) choices, everything HTML-escaped.

    DockerSpawner 14's own form pastes a Python list repr between the options and does not escape the
    names; wrapspawner's does not escape either.
    """
    options = "\n".join(
        f'    <option value="{html.escape(value)}"{" selected" if i == 0 else ""}>{html.escape(text)}</option>'
        for i, (value, text, _) in enumerate(choices)
    )
    descriptions = "\n".join(
        f"    <li><strong>{html.escape(text)}</strong>: {html.escape(description)}</li>"
        for _, text, description in choices
        if description
    )
    return f"""
<div class="form-group mb-3">
  <label for="jhub-{select_name}" class="form-label">{html.escape(label)}</label>
  <select id="jhub-{select_name}" class="form-control form-select" name="{select_name}" required autofocus>
{options}
  </select>
  <ul class="form-text list-unstyled mt-2">
{descriptions}
  </ul>
</div>
"""


def first_form_value(formdata, key):
    """The first value of `key` in a form post (JupyterHub passes lists of strings), or ""."""
    values = formdata.get(key) or [""]
    return values[0] if isinstance(values[0], str) else ""


# Labels of the volumes: the account a user volume was made for (its creation time tells two accounts of
# one name apart), and for an archive the deleted account and when it was archived.
ACCOUNT_LABEL = "io.jhub-docker.account-created"
# Labels of a group folder's volume: the group, and which of its folders ("course" or "shared").
GROUP_LABEL = "io.jhub-docker.group"
FOLDER_LABEL = "io.jhub-docker.group-folder"
ARCHIVED_USER_LABEL = "io.jhub-docker.archived-user"
ARCHIVED_AT_LABEL = "io.jhub-docker.archived-at"

# `python3 -c ARCHIVE_SCRIPT FROM TO`, run in a throwaway container with the user's volume at /from
# (read-only) and the new archive at /to: copies everything (owners, modes, links, special files), then
# compares both trees entry by entry (type, mode, owner, size and sha256 of each file, link targets) and
# fails on any difference.
ARCHIVE_SCRIPT = r"""
import hashlib, os, stat, subprocess, sys

source, target = sys.argv[1], sys.argv[2]
subprocess.run(["cp", "-a", source + "/.", target + "/"], check=True)

def tree(root):
    entries = {}
    for folder, folders, files in os.walk(root):
        for name in folders + files:
            path = os.path.join(folder, name)
            info = os.lstat(path)
            entry = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)
            if stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256()
                with open(path, "rb") as file:
                    for chunk in iter(lambda: file.read(1 << 20), b""):
                        digest.update(chunk)
                entry += (info.st_size, digest.hexdigest())
            elif stat.S_ISLNK(info.st_mode):
                entry += (os.readlink(path),)
            entries[os.path.relpath(path, root)] = entry
    return entries

original, copy = tree(source), tree(target)
if original != copy:
    differ = sorted(name for name in set(original) | set(copy) if original.get(name) != copy.get(name))
    print(f"the copy differs in {len(differ)} entries, e.g. {differ[:5]}", file=sys.stderr)
    sys.exit(1)
print(f"archived and verified {len(original)} entries")
"""


def user_groups(user):
    """The names of the groups `user` (JupyterHub's User) belongs to now: the admin panel's or REST API's
    changes and the directory's at each login are in the database, which the hub's User reads through."""
    return [group.name for group in getattr(user, "groups", None) or []]


def user_standing(user):
    """What decides the images and profiles `user` is offered: their groups' names, and whether an admin."""
    return user_groups(user), bool(getattr(user, "admin", False))


NOTHING_OFFERED = (
    "no image is offered to you: the images of this hub are kept to groups you are not in; "
    "ask the admin to add you to your course's or team's group"
)


def waiting_message(ahead, slots):
    """What a user waiting in the start queue reads."""
    servers = "1 server starts" if slots == 1 else f"{slots} servers start"
    if ahead == 0:
        return f"Many people are starting servers: yours is next ({servers} at a time here)"
    people = "1 person is" if ahead == 1 else f"{ahead} people are"
    return f"Many people are starting servers: {people} ahead of you ({servers} at a time here)"


def utc_now():
    return datetime.datetime.now(datetime.UTC)


def escape_braces(text):
    """Double the braces of `text`: DockerSpawner formats every string of extra_create_kwargs with its
    template namespace, and a user name like "a{b}" must arrive unchanged."""
    return text.replace("{", "{{").replace("}", "}}")


class JhubDockerSpawner(DockerSpawner):
    """DockerSpawner that resolves the chosen image of the view at start: its image id, the user's volume
    at that image's home, its default_url, and the io.jhub-docker.* labels."""

    jhub_view = Instance(View, allow_none=True, help="The resolved view: images and profiles.").tag(config=True)
    jhub_stack_name = Unicode("jhub", help="The stack's name, for the io.jhub-docker.stack label.").tag(config=True)
    jhub_user_volume_prefix = Unicode(
        "jupyterhub-user-", help="Each user's named volume is <prefix><escaped user name>."
    ).tag(config=True)
    jhub_image_entry = Unicode(
        "",
        help="Image of the view to spawn regardless of user_options (set per profile by SPAWNER=profiles).",
    ).tag(config=True)
    docker_api_threads = Integer(
        8,
        min=1,
        help="Docker API calls that may run at once, for all users together. DockerSpawner runs every call "
        "(create, start, each poll, stop, remove) on one shared thread, so under a burst a user's stop waits "
        "behind everybody's spawns; the engine itself serves calls in parallel.",
    ).tag(config=True)

    jhub_archive_image = Unicode(
        "",
        help="Image of the throwaway container that copies a deleted user's volume into its archive (the hub's "
        "own image; its python3 and cp run as root there). Empty: the view's first image.",
    ).tag(config=True)

    ready_poll_interval = Float(
        0.1,
        help="Seconds between two TCP connection attempts while waiting for a new server to listen.",
    ).tag(config=True)
    ready_wait_limit = Float(
        20.0,
        help="Seconds start() waits for the server to listen before handing over to the hub's own check.",
    ).tag(config=True)

    concurrent_starts = Integer(
        0,
        min=0,
        help="Servers that may start at once on this host (0: no limit); the others wait their turn in the "
        "start queue, told their place by the spawn page's progress messages.",
    ).tag(config=True)
    start_limit = Float(
        120.0,
        help="Seconds a start may take once its turn in the queue has come (Spawner.start_timeout then covers "
        "the wait as well).",
    ).tag(config=True)

    # One pool for every JhubDockerSpawner (and the profile children, which are JhubDockerSpawners too).
    _jhub_executor = None
    # One start queue for them all, made at the first start (None: no limit).
    _jhub_start_queue = None
    # This spawner's start: None when none is under way, "waiting" for its turn, "starting" once it has it.
    _jhub_start_stage = None

    @property
    def executor(self):
        if JhubDockerSpawner._jhub_executor is None:
            JhubDockerSpawner._jhub_executor = ThreadPoolExecutor(
                self.docker_api_threads, thread_name_prefix="docker-api"
            )
        return JhubDockerSpawner._jhub_executor

    @default("client_kwargs")
    def _default_client_kwargs(self):
        # docker-py keeps at most max_pool_size connections to the engine (default 10); as many as threads.
        return {"max_pool_size": self.docker_api_threads}

    @property
    def view(self):
        if self.jhub_view is None:
            raise RuntimeError("JhubDockerSpawner.jhub_view is not configured")
        return self.jhub_view

    def template_namespace(self):
        namespace = super().template_namespace()
        # "--<server>" for a named server, "" for the default one, so that one name_template covers both.
        namespace["server_suffix"] = f"--{namespace['servername']}" if namespace["raw_servername"] else ""
        return namespace

    @property
    def catalog_image(self):
        """The image this spawn runs: the profile's, else the one user_options names (400 if unknown)."""
        if self.jhub_image_entry:
            return self.view.image_named(self.jhub_image_entry)
        return self.image_for_choice(self.user_options.get("image"))

    def offered_images(self):
        """The view's images this spawner's user is offered now: those kept to none of the catalog's groups,
        those kept to a group the user is in, and for an admin all of them."""
        groups, is_admin = user_standing(self.user)
        return [image for image in self.view.images if image.offered_to(groups, is_admin)]

    def image_for_choice(self, choice):
        """The image a spawn request names (display name or name; none = the first offered), or a 400. An
        image kept to groups the user is not in is refused exactly as one the hub does not have, naming
        only the images the user is offered."""
        if self.jhub_image_entry and choice not in (None, ""):
            raise web.HTTPError(400, "this hub offers profiles: choose a profile, not an image")
        offered_images = self.offered_images()
        if not offered_images:
            raise web.HTTPError(403, NOTHING_OFFERED)
        if choice is None or choice == "":
            return offered_images[0]
        image = self.view.image_for_choice(choice) if isinstance(choice, str) else None
        if image is None or image not in offered_images:
            known = ", ".join(repr(i.name) for i in offered_images)
            raise web.HTTPError(400, f"unknown image {str(choice)[:100]!r}: choose one of {known}")
        return image

    def apply_group_limits(self):
        """CPU and memory for a server of an image (not a profile, which carries its own): the largest any
        of the user's groups sets, else the hub's JHUB_CPU_LIMIT / JHUB_MEM_LIMIT. The hub's values are kept
        from the first spawn, so a user who leaves a group gets them back at the next."""
        if not hasattr(self, "_jhub_hub_limits"):
            self._jhub_hub_limits = (self.cpu_limit, self.mem_limit)
        cpu_limit, mem_limit = self._jhub_hub_limits
        limits = self.view.limits_for(user_groups(self.user))
        self.cpu_limit = limits["cpu_limit"] if limits["cpu_limit"] is not None else cpu_limit
        self.mem_limit = limits["mem_limit"] if limits["mem_limit"] is not None else mem_limit

    @default("options_form")
    def _default_options_form(self):
        # A callable, asked at each visit of the spawn page: group membership changes while the spawner lives.
        def image_form(spawner):
            images = spawner.offered_images()
            if len(images) < 2:
                return ""
            choices = [(i.display_name, i.display_name, i.description) for i in images]
            return form_html("image", "Select an image:", choices)

        return image_form

    @default("options_from_form")
    def _default_options_from_form(self):
        def options_from_form(formdata):
            # Refuse an unknown choice here, before any spawn starts: the form comes back with a 400.
            choice = first_form_value(formdata, "image")
            return {"image": self.image_for_choice(choice).display_name}

        return options_from_form

    @default("apply_user_options")
    def _default_apply_user_options(self):
        # JupyterHub 5.3+ runs this before start(), for form and REST spawns alike: refuse early.
        def apply_user_options(spawner, user_options):
            spawner.image_for_choice(user_options.get("image"))

        return apply_user_options

    async def check_allowed(self, image):
        # Called by DockerSpawner.start with user_options["image"]: same resolution, same 400 errors.
        return self.image_for_choice(image).image_id

    def apply_catalog_image(self, image):
        """Point this spawner at `image`: its id, default URL, the user's volume at its home, the labels,
        and (unless a profile sets them) the CPU and memory of the user's groups. Returns the group folders
        it mounts, read once here so that the ones ensure_group_folders prepares are exactly those."""
        self.image = image.image_id
        folders = self.view.folders_for(user_groups(self.user))
        # The container name comes from name_template at this start, not from whatever an earlier trait
        # change rendered (DockerSpawner re-renders it when `image` changes, even during __init__, before
        # the config's prefix is loaded).
        self.object_name = self._object_name_default()
        self.default_url = image.default_url
        self.volumes = {
            f"{self.jhub_user_volume_prefix}{{username}}": {"bind": image.home, "mode": "rw"},
            **{
                escape_braces(self.group_volume_name(group, kind)): {
                    "bind": escape_braces(f"{image.home}/{group}/{kind}"),
                    "mode": "rw" if writable else "ro",
                }
                for group, kind, writable in folders
            },
        }
        extra = dict(self.extra_create_kwargs) if isinstance(self.extra_create_kwargs, dict) else {}
        extra["labels"] = {
            **extra.get("labels", {}),
            "io.jhub-docker.stack": escape_braces(self.jhub_stack_name),
            "io.jhub-docker.user": escape_braces(self.user.name),
            "io.jhub-docker.image": escape_braces(image.name),
        }
        self.extra_create_kwargs = extra
        if not self.jhub_image_entry:
            self.apply_group_limits()
        return folders

    def group_volume_name(self, group, kind):
        """The volume of `group`'s folder `kind` ("course" or "shared"), named by the stack."""
        return f"{self.jhub_stack_name}-group-{group}-{kind}"

    async def ensure_group_folders(self, folders):
        """Create each of `folders` (what apply_catalog_image mounts) that does not exist yet as a volume, its
        top owned by uid 1000 (every user runs as uid 1000; Docker makes a new volume root's) with mode 2775.
        What keeps a student from changing the course folder is the read-only mount, not these modes. A
        volume whose preparation failed is removed again, so the next spawn prepares it anew."""
        for group, kind, _ in folders:
            volume = self.group_volume_name(group, kind)
            try:
                await self.docker("inspect_volume", volume)
                continue
            except docker.errors.NotFound:
                pass
            labels = {"io.jhub-docker.stack": self.jhub_stack_name, GROUP_LABEL: group, FOLDER_LABEL: kind}
            await self.docker("create_volume", name=volume, labels=labels)
            try:
                await self.run_helper(
                    {volume: {"bind": "/folder", "mode": "rw"}},
                    ["sh", "-c", "chown 1000:100 /folder && chmod 2775 /folder"],
                    purpose="group-folder",
                )
            except Exception:
                await self.docker("remove_volume", volume)
                raise
            self.log.info("group %r: volume %s made for its %s folder", group, volume, kind)

    def account_id(self):
        """What tells this account from an earlier one of the same name: its creation time in the hub."""
        created = getattr(self.user, "created", None)
        return created.isoformat() if created else ""

    def user_volume(self):
        """The user's named volume, as DockerSpawner names it for this spawn, and the labels it gets."""
        name = self.format_volume_name(f"{self.jhub_user_volume_prefix}{{username}}", self)
        labels = {"io.jhub-docker.stack": self.jhub_stack_name, "io.jhub-docker.user": self.user.name}
        if self.account_id():
            labels[ACCOUNT_LABEL] = self.account_id()
        return name, labels

    async def ensure_own_volume(self):
        """Create the user's volume (labelled with the stack and the account), or check that the existing one
        is this account's: one left by an earlier account of the same name (its archiving failed) is refused
        rather than handed over."""
        volume, labels = self.user_volume()
        # Docker returns an existing volume as it is, labels included.
        created = await self.docker("create_volume", name=volume, labels=labels)
        owner = ((created or {}).get("Labels") or {}).get(ACCOUNT_LABEL)
        if owner and self.account_id() and owner != self.account_id():
            self.log.error("volume %s belongs to an earlier account %r (created %s)", volume, self.user.name, owner)
            raise web.HTTPError(
                409,
                f"the volume {volume} holds the files of an earlier account named {self.user.name!r}: "
                "ask the admin to archive it (`cargo xtask archives` lists archives)",
            )
        return volume

    def archive_volume_name(self, stamp):
        """The archive of this user's volume: named by the stack, never with the user-volume prefix."""
        return f"{self.jhub_stack_name}-archive-{self.escaped_name}-{stamp}"

    async def delete_forever(self):
        """Called by JupyterHub for each of a deleted user's spawners (servers stopped), and for a named server
        deleted on its own: for the default server's spawner (which a user's deletion always has: the API
        handler touches it first), copy the user's volume into an archive volume, verify the copy, then
        remove the volume. Named servers share that volume with the user's other servers, so deleting one
        of them leaves it alone. An error is logged by JupyterHub and leaves the volume where it is, where
        ensure_own_volume keeps it from a new account of the name."""
        if self.name:
            return
        volume, _ = self.user_volume()
        try:
            await self.docker("inspect_volume", volume)
        except docker.errors.NotFound:
            return
        now = utc_now()
        archive = self.archive_volume_name(now.strftime("%Y%m%dT%H%M%SZ"))
        labels = {
            "io.jhub-docker.stack": self.jhub_stack_name,
            ARCHIVED_USER_LABEL: self.user.name,
            ARCHIVED_AT_LABEL: now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "io.jhub-docker.archived-from": volume,
        }
        await self.docker("create_volume", name=archive, labels=labels)
        await self.copy_into_archive(volume, archive)
        await self.docker("remove_volume", volume)
        self.log.info("deleted user %r: volume %s archived as %s, then removed", self.user.name, volume, archive)

    async def copy_into_archive(self, volume, archive):
        """Run ARCHIVE_SCRIPT in a throwaway container (no network); raise with its output if it failed."""
        binds = {volume: {"bind": "/from", "mode": "ro"}, archive: {"bind": "/to", "mode": "rw"}}
        try:
            output = await self.run_helper(binds, ["python3", "-c", ARCHIVE_SCRIPT, "/from", "/to"], purpose="archive")
        except RuntimeError as e:
            raise RuntimeError(f"copying volume {volume} into {archive} failed: {e}") from None
        self.log.info("%s → %s: %s", volume, archive, output)

    async def run_helper(self, binds, argv, purpose):
        """Run `argv` as root in a throwaway container of the hub's image (no network) with `binds`; return
        its output, or raise RuntimeError with it if it failed."""
        image = self.jhub_archive_image or self.view.images[0].image_id
        host_config = self.client.create_host_config(
            binds=binds, network_mode="none", security_opt=["no-new-privileges:true"]
        )
        container = await self.docker(
            "create_container",
            image=image,
            entrypoint=argv,
            user="0:0",
            network_disabled=True,
            labels={"io.jhub-docker.stack": self.jhub_stack_name, "io.jhub-docker.purpose": purpose},
            host_config=host_config,
        )
        try:
            await self.docker("start", container["Id"])
            result = await self.docker("wait", container["Id"], timeout=3600)
            output = (await self.docker("logs", container["Id"])).decode(errors="replace").strip()
        finally:
            await self.docker("remove_container", container["Id"], force=True)
        if result.get("StatusCode") != 0:
            raise RuntimeError(output)
        return output

    @property
    def start_queue(self):
        """The hub's one start queue, or None when starts are not limited."""
        if self.concurrent_starts and JhubDockerSpawner._jhub_start_queue is None:
            JhubDockerSpawner._jhub_start_queue = StartQueue(self.concurrent_starts)
        return JhubDockerSpawner._jhub_start_queue if self.concurrent_starts else None

    async def start(self):
        image = self.catalog_image  # raises a 400 before any container exists
        queue = self.start_queue
        if queue is None:
            return await self.start_container(image)
        self._jhub_start_stage = "waiting"
        try:
            async with queue.slot(self):
                self._jhub_start_stage = "starting"
                return await asyncio.wait_for(self.start_container(image), self.start_limit)
        finally:
            self._jhub_start_stage = None

    async def progress(self):
        """The spawn page's messages while this start waits for its turn: how many are ahead, each time that
        changes, then that its turn has come. (The hub stops reading once the server is up or failed.)"""
        queue = self.start_queue
        if queue is None:
            return
        shown = None
        while True:
            stage = self._jhub_start_stage
            if stage == "starting" or (stage is None and shown is not None):
                break
            ahead = queue.place(self) - 1
            if stage == "waiting" and ahead >= 0 and ahead != shown:
                shown = ahead
                yield {"progress": 10, "message": waiting_message(ahead, queue.slots)}
            await asyncio.sleep(0.5)
        if shown is not None:
            yield {"progress": 40, "message": "Your turn: starting your server"}

    async def start_container(self, image):
        """Creates and starts this user's container of catalog image `image`; returns once it listens."""
        folders = self.apply_catalog_image(image)
        # Created here, labelled with the stack, so `xtask down --volumes` deletes this stack's volumes and
        # never another deployment's, and with the account, so a namesake never gets an earlier one's.
        await self.ensure_own_volume()
        await self.ensure_group_folders(folders)
        self.log.info(
            "spawning %s with catalog image %r (%s), volume %s at %s",
            self._log_name,
            image.name,
            image.image_id[:19],
            f"{self.jhub_user_volume_prefix}{self.escaped_name}",
            image.home,
        )
        ip, port = await super().start()
        await self.wait_until_listening(ip, port)
        return ip, port

    async def wait_until_listening(self, ip, port):
        """Returns once the new server accepts TCP connections (True), or has exited, or `ready_wait_limit`
        passed (False); the hub then checks it over HTTP at once.

        The hub's own check backs off exponentially with jitter (up to 0.2 s, then doubling), so a server
        that listens 1.1 s after its start was often seen only after 2-3 s (measured: one user's spawns of
        one image took either about 1.2 s or about 2.5 s). A TCP connection attempt every 0.1 s costs the
        hub next to nothing; the container's state is asked once a second, so a server that crashed does
        not keep the spawn waiting.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_wait_limit
        next_state_check = loop.time() + 1.0
        while loop.time() < deadline:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout=1.0)
            except OSError:  # TimeoutError is an OSError
                pass
            else:
                writer.close()
                return True
            if loop.time() >= next_state_check:
                if await self.poll() is not None:
                    return False
                next_state_check = loop.time() + 1.0
            await asyncio.sleep(self.ready_poll_interval)
        return False

    async def pull_image(self, image):
        try:
            await super().pull_image(image)
        except docker.errors.NotFound:
            # pull_policy "never": say which image of the view is missing instead of a 500 traceback.
            raise web.HTTPError(
                503,
                f"image {self.catalog_image.name!r} ({image[:19]}) is not in the Docker engine: "
                "ask the admin to run `cargo xtask build-images`",
            ) from None


def profile_groups(view):
    """`JhubProfilesSpawner.jhub_profile_groups`: each profile's key and the groups it is kept to."""
    return {p.name: list(p.groups) for p in view.profiles if p.groups}


def profiles_config(view, spawner_class=None):
    """`ProfilesSpawner.profiles` for the view: one child spawner per profile, with its image and limits.

    The child is a JhubDockerSpawner, or `spawner_class` (JhubSwarmSpawner in swarm mode): the wrapper builds
    each spawn's child from this class (`construct_child`).
    """
    return [
        (
            p.display_name,
            p.name,
            spawner_class or JhubDockerSpawner,
            {"jhub_image_entry": p.image, "cpu_limit": p.cpu_limit, "mem_limit": p.mem_limit},
        )
        for p in view.profiles
    ]


# Traits JupyterHub sets on the spawner it holds at run time; with SPAWNER=profiles that is the
# wrapper, so they are forwarded to the child. Everything else the child takes from its own config:
# wrapspawner's link-everything default would overwrite DockerSpawner's ip (0.0.0.0) and port (8888)
# with the base Spawner's defaults.
FORWARDED_TRAITS = (
    "api_token",
    "admin_access",
    "cert_paths",
    "user_options",
    "oauth_client_id",
    "oauth_access_scopes",
    "oauth_client_allowed_scopes",
    "oauth_roles",
)


class JhubProfilesSpawner(ProfilesSpawner):
    """ProfilesSpawner with an escaped form, refusal of unknown profiles, and a child spawner built for
    JupyterHub 5 (orm_spawner, so named servers get their own container names) from the profile chosen
    for this very spawn."""

    # wrapspawner declares options_form a plain string; JupyterHub's Spawner takes a callable too, which is
    # what a form that follows group membership needs.
    options_form = Union([Unicode(), Callable()]).tag(config=True)

    jhub_profile_groups = Dict(
        help="Profile key -> the groups whose members are offered it; a profile not listed is offered to all."
    ).tag(config=True)

    def offered_profiles(self):
        """The profiles this user is offered now (kept to no group, or to one of theirs; all for an admin)."""
        groups, is_admin = user_standing(self.user)
        return [p for p in self.profiles if offered(self.jhub_profile_groups.get(p[1], ()), groups, is_admin)]

    @default("options_form")
    def _default_options_form(self):
        # A callable, asked at each visit of the spawn page: group membership changes while the spawner lives.
        def profile_form(spawner):
            choices = [(key, display, "") for display, key, _cls, _conf in spawner.offered_profiles()]
            return form_html("profile", "Select a profile:", choices)

        return profile_form

    def profile_for_choice(self, choice):
        """The profile key a spawn request names (none = the first offered), or a 400; one kept to groups
        the user is not in is refused exactly as an unknown one."""
        keys = [p[1] for p in self.offered_profiles()]
        if not keys:
            raise web.HTTPError(403, NOTHING_OFFERED.replace("no image is", "no profile is"))
        if choice is None or choice == "":
            return keys[0]
        if not isinstance(choice, str) or choice not in keys:
            known = ", ".join(repr(k) for k in keys)
            raise web.HTTPError(400, f"unknown profile {str(choice)[:100]!r}: choose one of {known}")
        return choice

    def options_from_form(self, formdata):
        return {"profile": self.profile_for_choice(first_form_value(formdata, "profile"))}

    @default("apply_user_options")
    def _default_apply_user_options(self):
        def apply_user_options(spawner, user_options):
            spawner.profile_for_choice(user_options.get("profile"))

        return apply_user_options

    def construct_child(self):
        if self.child_spawner is None:
            # No 400 here: JupyterHub also builds the child when it loads state, from user_options it
            # stored, maybe refused ones; a stale or unknown profile falls back to the first. start()
            # checks this spawn's choice strictly before calling this.
            profile = self.user_options.get("profile") or self.child_profile
            keys = [p[1] for p in self.profiles]
            self.child_profile = profile if profile in keys else keys[0]
            self.select_profile(self.child_profile)
            self.child_spawner = self.child_class(
                user=self.user,
                orm_spawner=self.orm_spawner,
                hub=self.hub,
                authenticator=self.authenticator,
                config=self.config,
                proxy_spec=self.proxy_spec,
                cookie_options=self.cookie_options,
                cookie_host_prefix_enabled=self.cookie_host_prefix_enabled,
                trusted_alt_names=self.trusted_alt_names,
                _deprecated_db_session=self._deprecated_db_session,
                **self.child_config,
            )
            self.child_spawner.clear_state()
            if self.child_state:
                self.child_spawner.load_state(self.child_state)
            for trait in FORWARDED_TRAITS:
                if self.has_trait(trait) and self.child_spawner.has_trait(trait):
                    directional_link((self, trait), (self.child_spawner, trait))
        return self.child_spawner

    def start(self):
        # JupyterHub loads state (building a child) when it creates the spawner, before this spawn's
        # user_options exist: build the child again from them. start() only runs for a stopped server.
        self.profile_for_choice(self.user_options.get("profile"))  # 400 before anything else
        self.child_spawner = None
        self.child_state = {}
        self.child_profile = ""
        return self.construct_child().start()

    async def delete_forever(self):
        # The user's volume is the same whatever the profile: the child archives it.
        await self.construct_child().delete_forever()
