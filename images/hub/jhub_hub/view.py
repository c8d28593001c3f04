"""The resolved view: the single-user images (with their locked image ids) and the profiles users may spawn.

`cargo xtask up` writes it (JSON, `$JHUB_VIEW`, default /srv/jhub/hub-view.json) after validating the
catalog and the lock; the catalog's rules live there, once. This module checks only what it must to use
the file safely: its version and its shape (types, required keys, non-empty values, profiles naming
images of the view). Version 2 added each image's `placement` (Swarm constraints, used in swarm mode);
version 3 the groups: an image's or profile's `groups` (whose members are offered it; none: everyone) and
the catalog's groups with their optional limits.
"""

import json
from dataclasses import dataclass

from jhub_hub.errors import ConfigError
from jhub_hub.placement import constraint_problem

VIEW_VERSION = 3
VIEW_HINT = "run `cargo xtask up` (it writes the view)"


@dataclass(frozen=True)
class SingleUserImage:
    """An image in the spawn dropdown, with the id the hub spawns."""

    name: str
    display_name: str
    description: str
    home: str
    default_url: str
    image_id: str
    # Swarm constraints of the nodes that may run this image (e.g. "node.labels.gpu==true"); none: any node.
    placement: tuple = ()
    # The groups whose members are offered this image; none: everyone.
    groups: tuple = ()

    def offered_to(self, group_names, is_admin=False):
        """Whether a user in `group_names` (admin or not) is offered this image."""
        return offered(self.groups, group_names, is_admin)


@dataclass(frozen=True)
class Profile:
    """A choice of SPAWNER=profiles: an image of the view plus CPU and memory limits."""

    name: str
    display_name: str
    image: str
    cpu_limit: float
    mem_limit: str
    groups: tuple = ()

    def offered_to(self, group_names, is_admin=False):
        """Whether a user in `group_names` (admin or not) is offered this profile."""
        return offered(self.groups, group_names, is_admin)


@dataclass(frozen=True)
class Group:
    """A group of the catalog and the limits its members get (None: the group sets none)."""

    name: str
    cpu_limit: float | None = None
    mem_limit: str | None = None
    named_server_limit: int | None = None
    # ~/<group>/course: read-only for members, read-write for the instructors; ~/<group>/shared: read-write.
    course_folder: bool = False
    shared_folder: bool = False
    instructors: str | None = None


def offered(kept_to, group_names, is_admin):
    """An image or profile kept to the groups `kept_to` (none: everyone) is offered to their members; an
    admin is offered everything (to try a course's image before its students do)."""
    return not kept_to or is_admin or any(group in kept_to for group in group_names)


@dataclass(frozen=True)
class View:
    """The images in dropdown order (never empty) and the profiles (maybe none).

    An image's `description` may be absent or empty; every other field is required.
    """

    images: tuple
    profiles: tuple
    groups: tuple = ()

    def image_named(self, name):
        """The image called `name`; the view guarantees every profile's image exists."""
        return next(image for image in self.images if image.name == name)

    def limits_for(self, group_names):
        """The limits a member of `group_names` gets from their groups: for each of cpu_limit, mem_limit
        (in bytes, as an int) and named_server_limit the largest any of their groups sets, else None."""
        mine = [group for group in self.groups if group.name in set(group_names)]
        cpus = [group.cpu_limit for group in mine if group.cpu_limit is not None]
        memory = [memory_bytes(group.mem_limit) for group in mine if group.mem_limit is not None]
        servers = [group.named_server_limit for group in mine if group.named_server_limit is not None]
        return {
            "cpu_limit": max(cpus) if cpus else None,
            "mem_limit": max(memory) if memory else None,
            "named_server_limit": max(servers) if servers else None,
        }

    def folders_for(self, group_names):
        """The group folders a user in `group_names` gets: (group, kind, writable) for each folder of each
        group they are a member or an instructor of; kind is "course" or "shared". The course folder is
        writable for instructors only."""
        mine = set(group_names)
        folders = []
        for group in self.groups:
            member, instructor = group.name in mine, group.instructors is not None and group.instructors in mine
            if not (member or instructor):
                continue
            if group.course_folder:
                folders.append((group.name, "course", instructor))
            if group.shared_folder:
                folders.append((group.name, "shared", True))
        return folders

    def image_for_choice(self, choice):
        """The image a spawn request names by display name (what the form posts) or by name, else None."""
        for image in self.images:
            if choice in (image.display_name, image.name):
                return image
        return None


def load(path):
    """Read and check the view at `path`, or raise `ConfigError`."""
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"view {path} does not exist", f"mount it into the hub container; {VIEW_HINT}") from None
    except IsADirectoryError:
        raise ConfigError(
            f"view {path} is a directory (Docker creates one when the mounted file is missing)",
            f"remove the empty directory on the host, then {VIEW_HINT}",
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"view {path} is not valid JSON: {e}", VIEW_HINT) from None
    return parse(data, path)


def parse(data, path):
    """Check the decoded JSON `data` of the view at `path` and build the `View`."""
    where = f"view {path}"
    if not isinstance(data, dict):
        raise ConfigError(f"{where} is not a JSON object", VIEW_HINT)
    version = data.get("version")
    if type(version) is not int or version != VIEW_VERSION:
        raise ConfigError(f"{where} has version {version!r}, this hub reads version {VIEW_VERSION} only", VIEW_HINT)
    images = tuple(
        SingleUserImage(
            name=_text(entry, "name", f"{where}: images[{i}]"),
            display_name=_text(entry, "display_name", f"{where}: images[{i}]"),
            description=_optional_text(entry, "description", f"{where}: images[{i}]"),
            home=_text(entry, "home", f"{where}: images[{i}]"),
            default_url=_text(entry, "default_url", f"{where}: images[{i}]"),
            image_id=_text(entry, "image_id", f"{where}: images[{i}]"),
            placement=_constraints(entry, "placement", f"{where}: images[{i}]"),
            groups=_names(entry, "groups", f"{where}: images[{i}]"),
        )
        for i, entry in enumerate(_objects(data, "images", where))
    )
    if not images:
        raise ConfigError(f"{where} lists no single-user image", VIEW_HINT)
    names = {image.name for image in images}
    profiles = []
    for i, entry in enumerate(_objects(data, "profiles", where)):
        at = f"{where}: profiles[{i}]"
        profile = Profile(
            name=_text(entry, "name", at),
            display_name=_text(entry, "display_name", at),
            image=_text(entry, "image", at),
            cpu_limit=_number(entry, "cpu_limit", at),
            mem_limit=_text(entry, "mem_limit", at),
            groups=_names(entry, "groups", at),
        )
        if profile.image not in names:
            raise ConfigError(f"{at} names image {profile.image!r}, which the view does not list", VIEW_HINT)
        profiles.append(profile)
    groups = []
    for i, entry in enumerate(_objects(data, "groups", where)):
        at = f"{where}: groups[{i}]"
        mem_limit = _optional(entry, "mem_limit", at, _text)
        if mem_limit is not None and memory_bytes(mem_limit) is None:
            raise ConfigError(f"{at}: 'mem_limit' must be a size such as 2G or bytes, got {mem_limit!r}", VIEW_HINT)
        groups.append(
            Group(
                name=_text(entry, "name", at),
                cpu_limit=_optional(entry, "cpu_limit", at, _number),
                mem_limit=mem_limit,
                named_server_limit=_optional(entry, "named_server_limit", at, _count),
                course_folder=_flag(entry, "course_folder", at),
                shared_folder=_flag(entry, "shared_folder", at),
                instructors=_optional(entry, "instructors", at, _text),
            )
        )
    declared = {group.name for group in groups}
    for i, group in enumerate(groups):
        if group.instructors is not None and group.instructors not in declared:
            raise ConfigError(
                f"{where}: groups[{i}] names instructors {group.instructors!r}, a group the view does not list",
                VIEW_HINT,
            )
    for kind, entries in (("images", images), ("profiles", profiles)):
        for i, entry in enumerate(entries):
            unknown = [name for name in entry.groups if name not in declared]
            if unknown:
                raise ConfigError(
                    f"{where}: {kind}[{i}] is kept to {unknown[0]!r}, a group the view does not list", VIEW_HINT
                )
    return View(images=images, profiles=tuple(profiles), groups=tuple(groups))


def memory_bytes(size):
    """The bytes a size stands for: a number of bytes, or a number with K, M, G or T (powers of 1024, as
    Docker reads them); None if it is neither."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    number, factor = (size[:-1], units[size[-1]]) if size and size[-1] in units else (size, 1)
    try:
        value = float(number)
    except ValueError:
        return None
    return int(value * factor) if value > 0 else None


def _objects(data, key, where):
    if key not in data:
        raise ConfigError(f"{where} has no {key!r} list", VIEW_HINT)
    items = data[key]
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise ConfigError(f"{where}: {key!r} is not a list of objects", VIEW_HINT)
    return items


def _optional_text(entry, key, where):
    value = entry.get(key, "")
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {key!r} must be a string, got {value!r}", VIEW_HINT)
    return value


def _constraints(entry, key, where):
    """An optional list of Swarm placement constraints (absent: none), each checked like JHUB_SWARM_CONSTRAINTS."""
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{where}: {key!r} must be a list of strings, got {value!r}", VIEW_HINT)
    for item in value:
        problem = constraint_problem(item)
        if problem:
            raise ConfigError(f"{where}: {key!r} holds {item!r}, not a Swarm constraint: {problem}", VIEW_HINT)
    return tuple(value)


def _names(entry, key, where):
    """An optional list of group names (absent: none)."""
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ConfigError(f"{where}: {key!r} must be a list of group names, got {value!r}", VIEW_HINT)
    return tuple(value)


def _optional(entry, key, where, read):
    """`read(entry, key, where)` when the key holds a value, None when it is absent or null."""
    return None if entry.get(key) is None else read(entry, key, where)


def _flag(entry, key, where):
    """An optional boolean (absent: false)."""
    value = entry.get(key, False)
    if type(value) is not bool:
        raise ConfigError(f"{where}: {key!r} must be true or false, got {value!r}", VIEW_HINT)
    return value


def _count(entry, key, where):
    value = entry.get(key)
    if type(value) is not int or value < 0:
        raise ConfigError(f"{where}: {key!r} must be a whole number of 0 or more, got {value!r}", VIEW_HINT)
    return value


def _text(entry, key, where):
    value = entry.get(key)
    if not isinstance(value, str) or not value:
        got = "missing" if key not in entry else f"{value!r}"
        raise ConfigError(f"{where}: {key!r} must be a non-empty string, got {got}", VIEW_HINT)
    return value


def _number(entry, key, where):
    value = entry.get(key)
    if type(value) not in (int, float) or not value > 0:
        got = "missing" if key not in entry else f"{value!r}"
        raise ConfigError(f"{where}: {key!r} must be a positive number, got {got}", VIEW_HINT)
    return float(value)
