"""The swarm-mode spawner (JHUB_MODE=swarm): one Docker Swarm service per user server, homes pinned to a node.

`JhubSwarmSpawner` keeps everything `JhubDockerSpawner` decides (the view's images, the 400 on an unknown or
forged image before any service exists, the io.jhub-docker.* labels, default_url, the wait until the server
listens) and runs it through dockerspawner's `SwarmSpawner`, fixing what that gets wrong here: named volumes
are mounted as volumes (upstream mounts every volume as a bind, dockerspawner #536), labelled so the node
creates them as the single mode does; limits go as far as the service API allows; the endpoint is `dnsrr`
(this kernel has no IPVS, so a service's virtual IP does not work); a task that cannot start ends the spawn
at once with the node and the engine's reason, instead of running into the spawn timeout.

A user's home is a node-local volume, so each user is pinned to the node holding it: a node label
`io.jhub-docker.home.<stack>.<escaped user name>=true` (see `jhub_hub.placement`) on exactly one node, kept in
the swarm itself, where `cargo xtask` reads and moves it; the hub keeps no state of its own about it.

What the service API cannot do (Engine API up to 1.56): no-new-privileges. `ContainerSpec.Privileges` has
CredentialSpec, SELinuxContext and (API 1.44+) Seccomp and AppArmor, but no NoNewPrivileges, and a service has
no security options; set `"no-new-privileges": true` in each node's daemon.json instead. Nor can the hub check
a volume's account label before a task mounts it (the volume is on a node the hub's engine cannot reach): the
409 of the single mode for a volume left by an earlier account of the same name does not exist here.
"""

import asyncio
from typing import ClassVar

import docker.errors
from docker.types import ContainerSpec, EndpointSpec, Mount, Placement, Resources, RestartPolicy, TaskTemplate
from dockerspawner import SwarmSpawner
from tornado import web
from traitlets import Float, Integer, List, Unicode

from jhub_hub import placement
from jhub_hub.spawner import JhubDockerSpawner

# How often a home label is re-read and written again when another writer changed the node in between.
PIN_ATTEMPTS = 5


def volume_mount(source, target, read_only, labels=None):
    """The Mount of one entry of DockerSpawner's `volumes`: a host path is a bind, anything else a named volume
    (created by the node on first use, with `labels`)."""
    if source.startswith("/"):
        return Mount(target=target, source=source, type="bind", read_only=read_only)
    return Mount(target=target, source=source, type="volume", read_only=read_only, labels=labels or None)


def is_version_conflict(error):
    """Whether a node update failed because the node changed since it was read (swarmkit: "update out of
    sequence"; engines answer 500 or, newer ones, 409)."""
    return error.status_code == 409 or "out of sequence" in str(error.explanation or error)


class JhubSwarmSpawner(JhubDockerSpawner, SwarmSpawner):
    """JhubDockerSpawner's images, labels and checks, run as one Swarm service per user server."""

    jhub_constraints = List(
        Unicode(),
        help="Placement constraints of every user server (JHUB_SWARM_CONSTRAINTS), before the image's own.",
    ).tag(config=True)
    jhub_pids_limit = Integer(
        2048, min=0, help="Processes a server may run (Resources.Limits.Pids, API 1.41+; 0: no limit)."
    ).tag(config=True)
    jhub_task_poll_interval = Float(
        0.25, help="Seconds between two looks at a new service's task while it is being placed and started."
    ).tag(config=True)

    # One lock per user name for all the user's servers (and profile children): named servers share the
    # user's volume, so two starts at once must not pin the home to two nodes.
    _jhub_start_locks: ClassVar[dict] = {}

    @classmethod
    def start_lock(cls, user_name):
        return cls._jhub_start_locks.setdefault(user_name, asyncio.Lock())

    @property
    def home_label(self):
        """This user's home pin (node label key)."""
        return placement.home_label_key(self.jhub_stack_name, self.escaped_name)

    @property
    def mounts(self):
        # SwarmSpawner's property, which made every volume a bind. The user's volume carries the same labels as
        # the single mode gives it, so `xtask` finds it by stack and user on its node.
        volume, labels = self.user_volume()
        return [
            volume_mount(source, bind["bind"], bind["mode"] == "ro", labels if source == volume else None)
            for source, bind in self.volume_binds.items()
        ]

    def object_labels(self, image):
        """The io.jhub-docker.* labels of the service and its containers (SwarmSpawner formats no templates)."""
        return {
            "io.jhub-docker.stack": self.jhub_stack_name,
            "io.jhub-docker.user": self.user.name,
            "io.jhub-docker.image": image.name,
        }

    def service_spec(self, image, constraints, args, env):
        """The keyword arguments of `create_service` for this server: pure, so tests can read it."""
        labels = self.object_labels(image)
        container = ContainerSpec(
            image=self.image,
            args=args,
            env=env,
            mounts=self.mounts,
            labels=labels,
            # Every single-user image runs as uid 1000 and needs no capability (API 1.41+).
            cap_drop=["ALL"],
            **self.extra_container_spec,
        )
        resources = Resources(
            mem_limit=self.mem_limit,
            mem_reservation=self.mem_guarantee,
            cpu_limit=int(self.cpu_limit * 1e9) if self.cpu_limit else None,
            cpu_reservation=int(self.cpu_guarantee * 1e9) if self.cpu_guarantee else None,
            **self.extra_resources_spec,
        )
        if self.jhub_pids_limit:
            # docker-py 7.2's Resources has no argument for it; the Engine API has had it since 1.41.
            resources.setdefault("Limits", {})["Pids"] = self.jhub_pids_limit
        task = TaskTemplate(
            container_spec=container,
            resources=resources,
            # A server that exits stays exited: the hub sees it stopped, and a task that failed to start is
            # not retried behind the spawn's back (Swarm's default is "any").
            restart_policy=RestartPolicy(condition="none"),
            placement=Placement(constraints=constraints, **self.extra_placement_spec),
            networks=[self.network_name] if self.network_name else [],
            **self.extra_task_spec,
        )
        return {
            "name": self.service_name,
            "labels": labels,
            "task_template": task,
            # No virtual IP (no IPVS on these kernels): the service name resolves to the task's address.
            "endpoint_spec": EndpointSpec(mode="dnsrr", **self.extra_endpoint_spec),
        }

    async def get_command(self):
        # DockerSpawner asks the hub's engine for the image's CMD; in swarm mode the image lives on the nodes
        # (pulled by digest from the registry), not there. Without Spawner.cmd, send no Args: the node runs the
        # image's own CMD. Spawner.args without Spawner.cmd would replace that CMD, as with `docker run`.
        command = [*(self.cmd or []), *self.get_args()]
        return command or None

    async def create_object(self):
        spec = self.service_spec(self._jhub_image, self._jhub_constraints, await self.get_command(), self.get_env())
        return await self.docker("create_service", **spec)

    async def start_object(self):
        """Wait for the service's task to run; a task that cannot run ends the spawn with the node and the reason,
        and the service is removed."""
        while True:
            task = await self.get_task()
            if task is not None and placement.task_state(task) == "running":
                self._jhub_task = task
                return
            if task is not None and placement.task_has_failed(task):
                hostname = await self.node_hostname(task.get("NodeID"))
                message = placement.task_failure_message(self.service_name, task, hostname)
                self.log.error("%s: %s", self._log_name, message)
                await self.remove_object()
                self.object_id = ""
                raise web.HTTPError(500, message)
            await asyncio.sleep(self.jhub_task_poll_interval)

    async def get_ip_and_port(self):
        """The running task's own address on the users' network. Upstream gives the service's name, which with
        dnsrr resolves to the tasks of every service of that name the engine still knows: right after an image
        switch that included the one being removed, and the proxy reached a dead address (a 503 from the hub's
        error page, in the cluster test)."""
        task = getattr(self, "_jhub_task", None) or await self.get_task()
        address = placement.task_address(task, self.network_name)
        if address is None:
            raise web.HTTPError(
                500,
                f"server {self.service_name} has no address on the network {self.network_name!r}; see the hub's log",
            )
        return address, self.port

    async def remove_object(self):
        try:
            await super().remove_object()
        except docker.errors.NotFound:
            self.log.debug("service %s was already removed", self.service_name)

    async def node_hostname(self, node_id):
        """The host name of a node by id (None for no node; the id if the node cannot be read)."""
        if not node_id:
            return None
        try:
            return placement.node_hostname(await self.docker("inspect_node", node_id))
        except docker.errors.APIError:
            return node_id

    async def pinned_node(self):
        """The node carrying this user's home label, or None (first spawn); a 500 if several carry it."""
        nodes = await self.docker("nodes", filters={"node.label": self.home_label})
        pinned = placement.nodes_pinned(nodes, self.home_label)
        if len(pinned) > 1:
            names = ", ".join(placement.node_hostname(node) for node in pinned)
            raise web.HTTPError(
                500,
                f"the files of {self.user.name!r} are pinned to several nodes ({names}): ask the admin to keep one "
                f"(node label {self.home_label})",
            )
        return pinned[0] if pinned else None

    async def pin_home(self, node_id):
        """Put this user's home label on node `node_id`."""
        await self.set_home_label(node_id, placement.PINNED_HOME)

    async def set_home_label(self, node_id, value):
        """Set this user's home label on node `node_id` to `value` (re-read and retried when the node changed
        meanwhile)."""
        for attempt in range(1, PIN_ATTEMPTS + 1):
            node = await self.docker("inspect_node", node_id)
            if ((node.get("Spec") or {}).get("Labels") or {}).get(self.home_label) == value:
                return
            spec = placement.with_home_label(node["Spec"], self.home_label, value)
            try:
                await self.docker("update_node", node_id, node["Version"]["Index"], spec)
                self.log.info("home label of %r is %s on node %s", self.user.name, value, placement.node_hostname(node))
                return
            except docker.errors.APIError as e:
                if attempt == PIN_ATTEMPTS or not is_version_conflict(e):
                    raise

    async def start(self):
        image = self.catalog_image  # raises a 400 before any service exists
        self.apply_catalog_image(image)
        self._jhub_image = image
        async with self.start_lock(self.user.name):
            node = await self.pinned_node()
            if node is not None:
                refusal = placement.pinned_node_refusal(node, self.user.name)
                if refusal:
                    self.log.warning("%s refused: %s (node %s)", self._log_name, refusal, node.get("Status"))
                    raise web.HTTPError(503, refusal)
            self._jhub_constraints = placement.spawn_constraints(
                self.jhub_constraints,
                image.placement,
                self.home_label if node is not None else None,
                first_start_label=self.home_label if node is None else None,
            )
            self.log.info(
                "spawning %s as a service with catalog image %r (%s), constraints %s",
                self._log_name,
                image.name,
                image.image_id,
                self._jhub_constraints,
            )
            # DockerSpawner.start (create_object, then start_object waits for the task), skipping
            # JhubDockerSpawner.start: the volume is made by the node from the mount, not on the hub's engine.
            ip, port = await super(JhubDockerSpawner, self).start()
            if node is None:
                try:
                    await self.pin_home(self._jhub_task["NodeID"])
                except docker.errors.APIError as e:
                    # Unpinned, the next spawn may land elsewhere with an empty home: stop this one.
                    await self.remove_object()
                    self.object_id = ""
                    raise web.HTTPError(500, f"could not pin the home of {self.user.name!r} to its node: {e}") from e
        await self.wait_until_listening(ip, port)
        return ip, port

    async def delete_forever(self):
        """The user's volume is on their pinned node, whose volumes the hub's engine cannot reach, so it is not
        archived as on one host: it stays there, set aside (its label's value becomes "deleted"), and an
        account created later under the same name starts on another node with an empty home."""
        if self.name:
            return
        node = await self.pinned_node()
        volume, _ = self.user_volume()
        if node is None:
            self.log.info("deleted user %r: no home pinned to any node (never started?)", self.user.name)
            return
        await self.set_home_label(node["ID"], placement.DELETED_HOME)
        self.log.warning(
            "deleted user %r: volume %s stays on node %s, set aside (node label %s=%s); a new account of this name "
            "starts elsewhere. Remove it there when it is no longer wanted: docker volume rm %s, then "
            "docker node update --label-rm %s %s",
            self.user.name,
            volume,
            placement.node_hostname(node),
            self.home_label,
            placement.DELETED_HOME,
            volume,
            self.home_label,
            placement.node_hostname(node),
        )
