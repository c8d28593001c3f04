"""Where a user's server may run in swarm mode: Swarm placement constraints and the home pin's node label.

Pure functions, no Docker: the grammar of a constraint (what the settings and the view accept), the node label
that pins a user's home to one node, the constraints of one spawn, and the decisions taken from node and task
dicts as the Engine API returns them (refuse a spawn whose home node is down, say why a task failed). The
calls to the engine live in `jhub_hub.swarm`.
"""

import re
import shlex

# The constraint grammar of swarmkit (manager/constraint): `<key>==<value>` or `<key>!=<value>`, the key a
# dotted name such as node.labels.gpu, the value free of operators. Checked here so a typo fails at the
# hub's start (or in the view) rather than as a service the engine refuses at every spawn.
CONSTRAINT_KEY_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.-]+$")
CONSTRAINT_VALUE_RE = re.compile(r"^[a-zA-Z0-9:_\s.*()?+\[\]\\^$|/-]+$")
CONSTRAINT_OPERATORS = ("==", "!=")
VALUE_SYMBOLS = ":-_./*()?+[]^$|\\"

# Every pin of one stack starts with this; the user part is DockerSpawner's escaped name (lowercase letters,
# digits and "-"), which never holds a ".", so the key splits unambiguously at its last dot.
HOME_LABEL_PREFIX = "io.jhub-docker.home"
ESCAPED_NAME_RE = re.compile(r"^[a-z0-9-]+$")

# The home label's value while it pins a home, and once its account was deleted: the files stay on that node
# (the hub reaches no other node's volumes to archive them), set aside. A first start of an account created
# later under the same name avoids every node holding such a home, so it never mounts them.
PINNED_HOME = "true"
DELETED_HOME = "deleted"

# Task states (swarmkit's TaskState) on the way to "running"; any other state is the end of that task.
TASK_WAITING_STATES = frozenset(
    {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
)


def constraint_problem(text):
    """Why `text` is not a Swarm placement constraint, or None if it is one."""
    for operator in CONSTRAINT_OPERATORS:
        key, found, value = text.partition(operator)
        if found:
            break
    else:
        return "it has no == or != between a key and a value"
    key, value = key.strip(), value.strip()
    if not CONSTRAINT_KEY_RE.match(key):
        return f"{key!r} is not a constraint key (e.g. node.labels.gpu, node.role, node.hostname)"
    if not value or not CONSTRAINT_VALUE_RE.match(value):
        return f"{value!r} is not a constraint value (Swarm allows letters, digits, blanks and {VALUE_SYMBOLS} only)"
    return None


def normalized_constraint(text):
    """`text` without the blanks around its key and value (Swarm strips them too), for de-duplication."""
    for operator in CONSTRAINT_OPERATORS:
        key, found, value = text.partition(operator)
        if found:
            return f"{key.strip()}{operator}{value.strip()}"
    return text.strip()


def home_label_key(stack_name, escaped_user_name):
    """The node label that pins a user's home: `io.jhub-docker.home.<stack>.<escaped user name>`, value "true".

    The escaped name is DockerSpawner's (the suffix of the user's volume `<prefix><escaped>`), so whoever
    reads the labels (the hub, `cargo xtask move-home`) can match a pin to its volume.
    """
    if not ESCAPED_NAME_RE.match(escaped_user_name):
        raise ValueError(f"{escaped_user_name!r} is not an escaped user name (a-z, 0-9 and - only)")
    return f"{HOME_LABEL_PREFIX}.{stack_name}.{escaped_user_name}"


def home_constraint(label_key):
    """The constraint that sends a spawn to the node carrying the home label."""
    return f"node.labels.{label_key}=={PINNED_HOME}"


def spawn_constraints(platform, image, home_label=None, first_start_label=None):
    """The constraints of one spawn, in order, each once: the platform's (JHUB_SWARM_CONSTRAINTS), the
    image's (the view's `placement`), and the home pin's when the user has one; a first start (no pin yet,
    `first_start_label` the label it will set) avoids the nodes holding a deleted namesake's home."""
    wanted = [*platform, *image]
    if home_label:
        wanted.append(home_constraint(home_label))
    if first_start_label:
        wanted.append(f"node.labels.{first_start_label}!={DELETED_HOME}")
    seen, result = set(), []
    for constraint in wanted:
        normal = normalized_constraint(constraint)
        if normal not in seen:
            seen.add(normal)
            result.append(normal)
    return result


def node_hostname(node):
    """A node's host name as `docker node ls` shows it, else its id."""
    return (node.get("Description") or {}).get("Hostname") or node.get("ID", "?")


def nodes_pinned(nodes, label_key):
    """The nodes whose label `label_key` is "true" (a filter by key alone also returns other values)."""
    return [node for node in nodes if ((node.get("Spec") or {}).get("Labels") or {}).get(label_key) == PINNED_HOME]


def move_home_command(user_name):
    """What the admin runs to move a user's home to another node (the node left for them to choose)."""
    return f"cargo xtask move-home {shlex.quote(user_name)} --to <node>"


def pinned_node_refusal(node, user_name):
    """Why a spawn must not go to the node holding the user's home, or None if that node takes servers.

    A node that is not ready (down, disconnected, unknown) or not active (drained, paused) would leave the
    service pending, and a spawn elsewhere would hand the user an empty home: refuse at once instead.
    """
    state = (node.get("Status") or {}).get("State")
    availability = (node.get("Spec") or {}).get("Availability")
    if state == "ready" and availability == "active":
        return None
    return (
        f"your files are on node {node_hostname(node)}, which is down; they come back when it returns, "
        f"or the admin can move them: {move_home_command(user_name)}"
    )


def with_home_label(node_spec, label_key, value=PINNED_HOME):
    """A copy of a node's Spec with the home label set to `value` (the node update replaces the whole Spec)."""
    spec = dict(node_spec)
    spec["Labels"] = {**(spec.get("Labels") or {}), label_key: value}
    return spec


def task_state(task):
    """A task's current state as the engine reports it ("running", "rejected", …), lowercase."""
    return str(((task or {}).get("Status") or {}).get("State", "")).lower()


def task_address(task, network_name):
    """The task's own IP address on the network called `network_name` (its attachments carry CIDRs such as
    "10.0.1.5/24"), or None when it has none there."""
    for attachment in (task or {}).get("NetworksAttachments") or []:
        if ((attachment.get("Network") or {}).get("Spec") or {}).get("Name") == network_name:
            for address in attachment.get("Addresses") or []:
                return address.split("/", 1)[0]
    return None


def task_has_failed(task):
    """Whether a task will never run: it ended, or the scheduler found no node for it (pending with an error:
    waiting would only run into the spawn timeout)."""
    state = task_state(task)
    if state == "running":
        return False
    if state == "pending":
        return bool((task.get("Status") or {}).get("Err"))
    return state not in TASK_WAITING_STATES


def task_failure_message(service_name, task, hostname):
    """The spawn's error for a failed task: which server, which node (None: not placed on any), and the
    engine's own reason (e.g. "No such image: …")."""
    status = (task or {}).get("Status") or {}
    reason = status.get("Err") or status.get("Message") or "no reason given"
    state = task_state(task) or "unknown"
    if hostname is None:
        return f"server {service_name} could not be placed on any node ({state}): {reason}"
    return f"server {service_name} could not start on node {hostname} ({state}): {reason}"
