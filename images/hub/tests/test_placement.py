"""Swarm placement without Docker: the constraint grammar, the home pin's label, the decisions taken from node
and task dicts as the Engine API returns them."""

import pytest

from jhub_hub import placement


@pytest.mark.parametrize(
    "constraint",
    [
        "node.labels.gpu==true",
        "node.role!=manager",
        " node.hostname == worker-1 ",
        "node.platform.os==linux",
        "engine.labels.storage==ssd",
        "node.labels.io.jhub-docker.home.jhub.alice==true",
        "node.labels.zone==eu/west-1",
    ],
)
def test_swarm_constraints_are_accepted(constraint):
    assert placement.constraint_problem(constraint) is None


@pytest.mark.parametrize(
    ("constraint", "problem"),
    [
        ("node.labels.gpu", "it has no == or != between a key and a value"),
        ("node.labels.gpu=true", "it has no == or != between a key and a value"),
        ("node.labels.mem>=4", "it has no == or != between a key and a value"),
        ("==true", "'' is not a constraint key (e.g. node.labels.gpu, node.role, node.hostname)"),
        ("1node==x", "'1node' is not a constraint key (e.g. node.labels.gpu, node.role, node.hostname)"),
        ("node.labels.gpu==", "'' is not a constraint value"),
        ("node.labels.gpu==a==b", "'a==b' is not a constraint value"),
        ("node.labels.gpu==a,b", "'a,b' is not a constraint value"),
    ],
)
def test_malformed_constraints_say_why(constraint, problem):
    assert placement.constraint_problem(constraint).startswith(problem)


def test_the_home_label_key_is_stack_then_escaped_user():
    key = placement.home_label_key("jhub", "alice")
    assert key == "io.jhub-docker.home.jhub.alice"
    assert placement.home_constraint(key) == "node.labels.io.jhub-docker.home.jhub.alice==true"
    assert placement.constraint_problem(placement.home_constraint(key)) is None
    # DockerSpawner's escaping of "bob.smith@x" is "bob-2esmith-40x": no dot, so the key splits at its last dot.
    assert placement.home_label_key("my.stack", "bob-2esmith-40x") == "io.jhub-docker.home.my.stack.bob-2esmith-40x"


@pytest.mark.parametrize("name", ["bob.smith", "Alice", "a b", ""])
def test_the_home_label_key_takes_escaped_names_only(name):
    with pytest.raises(ValueError, match="is not an escaped user name"):
        placement.home_label_key("jhub", name)


def test_spawn_constraints_are_platform_then_image_then_home_each_once():
    home = placement.home_label_key("jhub", "alice")
    assert placement.spawn_constraints(
        ["node.labels.jhub.users==true", "node.role != manager"],
        ("node.labels.gpu==true", "node.role!=manager"),
        home,
    ) == [
        "node.labels.jhub.users==true",
        "node.role!=manager",
        "node.labels.gpu==true",
        "node.labels.io.jhub-docker.home.jhub.alice==true",
    ]
    assert placement.spawn_constraints([], (), None) == []


def test_a_first_start_avoids_the_nodes_holding_a_deleted_namesakes_home():
    home = placement.home_label_key("jhub", "alice")
    assert placement.spawn_constraints(["node.role==worker"], (), None, first_start_label=home) == [
        "node.role==worker",
        "node.labels.io.jhub-docker.home.jhub.alice!=deleted",
    ]
    for constraint in placement.spawn_constraints([], (), None, first_start_label=home):
        assert placement.constraint_problem(constraint) is None


def node(hostname="worker-2", state="ready", availability="active", labels=None):
    """A node as GET /nodes returns it (the fields the hub reads)."""
    return {
        "ID": "n0d3",
        "Version": {"Index": 41},
        "Spec": {"Availability": availability, "Role": "worker", "Labels": labels or {}},
        "Description": {"Hostname": hostname},
        "Status": {"State": state, "Addr": "10.0.0.3"},
    }


def test_a_ready_active_home_node_takes_the_spawn():
    assert placement.pinned_node_refusal(node(), "alice") is None


@pytest.mark.parametrize(
    ("state", "availability"),
    [("down", "active"), ("unknown", "active"), ("disconnected", "active"), ("ready", "drain"), ("ready", "pause")],
)
def test_a_home_node_that_is_down_refuses_the_spawn(state, availability):
    refusal = placement.pinned_node_refusal(node(state=state, availability=availability), "alice")
    assert refusal == (
        "your files are on node worker-2, which is down; they come back when it returns, "
        "or the admin can move them: cargo xtask move-home alice --to <node>"
    )


def test_the_move_command_quotes_odd_user_names():
    assert placement.move_home_command("o'brien x") == "cargo xtask move-home 'o'\"'\"'brien x' --to <node>"


def test_only_nodes_whose_home_label_is_true_are_pinned():
    key = placement.home_label_key("jhub", "alice")
    nodes = [node("a", labels={key: "true"}), node("b", labels={key: "false"}), node("c"), node("d", labels=None)]
    nodes.append(node("e", labels={key: placement.DELETED_HOME}))
    assert [placement.node_hostname(n) for n in placement.nodes_pinned(nodes, key)] == ["a"]


def test_pinning_adds_the_label_and_keeps_the_rest_of_the_spec():
    spec = node(labels={"jhub.users": "true"})["Spec"]
    key = placement.home_label_key("jhub", "alice")
    pinned = placement.with_home_label(spec, key)
    assert pinned == {"Availability": "active", "Role": "worker", "Labels": {"jhub.users": "true", key: "true"}}
    assert spec["Labels"] == {"jhub.users": "true"}, "the node as read is left alone"
    assert placement.with_home_label({"Availability": "active"}, key)["Labels"] == {key: "true"}
    set_aside = placement.with_home_label(pinned, key, placement.DELETED_HOME)
    assert set_aside["Labels"] == {"jhub.users": "true", key: "deleted"}


def task(state, err=None, message="", node_id="n0d3"):
    """A task as GET /tasks returns it (the fields the hub reads)."""
    status = {"State": state, "Message": message}
    if err is not None:
        status["Err"] = err
    return {"ID": "t45k", "NodeID": node_id, "DesiredState": "running", "Status": status}


@pytest.mark.parametrize("state", ["new", "allocated", "pending", "assigned", "accepted", "preparing", "starting"])
def test_tasks_on_their_way_are_waited_for(state):
    assert not placement.task_has_failed(task(state))


@pytest.mark.parametrize("state", ["rejected", "failed", "shutdown", "complete", "orphaned", "remove"])
def test_tasks_that_ended_have_failed(state):
    assert placement.task_has_failed(task(state, err="x"))


def test_a_running_task_has_not_failed_and_an_unplaceable_one_has():
    assert not placement.task_has_failed(task("running"))
    assert placement.task_has_failed(task("pending", err="no suitable node (scheduling constraints not satisfied)"))


def test_the_failure_message_names_the_server_the_node_and_the_engines_reason():
    rejected = task("rejected", err="No such image: registry:5000/jhub/minimal@sha256:abc", message="preparing")
    assert placement.task_failure_message("jhub-user-alice", rejected, "worker-2") == (
        "server jhub-user-alice could not start on node worker-2 (rejected): "
        "No such image: registry:5000/jhub/minimal@sha256:abc"
    )
    unplaced = task("pending", err="no suitable node (1 node not available for new tasks)", node_id="")
    assert placement.task_failure_message("jhub-user-alice", unplaced, None) == (
        "server jhub-user-alice could not be placed on any node (pending): "
        "no suitable node (1 node not available for new tasks)"
    )
    assert placement.task_failure_message("s", task("failed", message="started"), "w").endswith("(failed): started")


def test_a_task_is_reached_at_its_own_address_on_the_users_network():
    task = {
        "NetworksAttachments": [
            {"Network": {"Spec": {"Name": "ingress"}}, "Addresses": ["10.0.0.7/24"]},
            {"Network": {"Spec": {"Name": "jupyterhub-net"}}, "Addresses": ["10.0.1.5/24"]},
        ]
    }
    assert placement.task_address(task, "jupyterhub-net") == "10.0.1.5"
    assert placement.task_address(task, "other") is None
    assert placement.task_address({}, "jupyterhub-net") is None
    assert placement.task_address(None, "jupyterhub-net") is None
