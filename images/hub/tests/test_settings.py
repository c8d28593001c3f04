"""Environment parsing: defaults, accepted values, and each bad variable's message and hint."""

import pytest

from jhub_hub import ConfigError
from jhub_hub.settings import default_concurrent_starts, from_environ, is_loopback, is_mem_size, warnings_for


def test_defaults_from_an_empty_environment():
    s = from_environ({})
    assert (s.stack_name, s.network, s.user_volume_prefix) == ("jhub", "jupyterhub-net", "jupyterhub-user-")
    assert (s.auth_strategy, s.spawner, s.open_signup, s.trust_xheaders) == ("native", "dockerspawner", True, False)
    assert (s.mem_limit, s.cpu_limit, s.pids_limit, s.named_server_limit) == ("4G", 2.0, 2048, 3)
    assert s.idle_cull_timeout == 3600
    assert s.view_path == "/srv/jhub/hub-view.json"
    assert s.data_dir == "/srv/jupyterhub/data"
    assert s.proxy_token_file == "/srv/jupyterhub/proxy/proxy_auth_token"
    assert s.admin_password == ""
    assert (s.mode, s.swarm_constraints) == ("single", ())
    assert s.bcrypt_cost == 10
    assert s.concurrent_starts >= 2


def test_bcrypt_cost_and_concurrent_starts():
    s = from_environ({"JHUB_BCRYPT_COST": "12", "JHUB_CONCURRENT_STARTS": "0"})
    assert (s.bcrypt_cost, s.concurrent_starts) == (12, 0)


def test_swarm_mode_and_its_constraints():
    s = from_environ(
        {
            "JHUB_MODE": " Swarm ",
            "JHUB_SWARM_CONSTRAINTS": "node.labels.jhub.users==true, node.role != manager,node.platform.os==linux",
        }
    )
    assert s.mode == "swarm"
    assert s.swarm_constraints == ("node.labels.jhub.users==true", "node.role != manager", "node.platform.os==linux")
    assert warnings_for(s) == []


def test_swarm_constraints_without_swarm_mode_are_warned_about():
    s = from_environ({"JHUB_SWARM_CONSTRAINTS": "node.labels.jhub.users==true"})
    assert warnings_for(s) == ["warning: JHUB_SWARM_CONSTRAINTS is ignored with JHUB_MODE=single"]


def test_values_are_parsed_and_blank_means_default():
    s = from_environ(
        {
            "OPEN_SIGNUP": " No ",
            "TRUST_XHEADERS": "yes",
            "SPAWNER": "Profiles",
            "JHUB_MEM_LIMIT": "1.5G",
            "JHUB_CPU_LIMIT": "0.5",
            "IDLE_CULL_TIMEOUT": "0",
            "JHUB_STACK_NAME": "   ",
            "JHUB_VIEW": "/tmp/v.json",
            "ADMIN_PASSWORD": " spaces kept ",
        }
    )
    assert (s.open_signup, s.trust_xheaders, s.spawner) == (False, True, "profiles")
    assert (s.mem_limit, s.cpu_limit, s.idle_cull_timeout) == ("1.5G", 0.5, 0)
    assert s.stack_name == "jhub"
    assert s.view_path == "/tmp/v.json"
    assert s.admin_password == " spaces kept "


@pytest.mark.parametrize(
    ("bind_address", "open_by_default"),
    [
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("hub.example.org", False),
    ],
)
def test_signup_is_open_by_default_on_loopback_only(bind_address, open_by_default):
    s = from_environ({"JHUB_BIND_ADDRESS": bind_address})
    assert s.open_signup is open_by_default
    assert is_loopback(bind_address) is open_by_default
    # An explicit choice wins either way.
    assert from_environ({"JHUB_BIND_ADDRESS": bind_address, "OPEN_SIGNUP": "true"}).open_signup is True
    assert from_environ({"JHUB_BIND_ADDRESS": bind_address, "OPEN_SIGNUP": "false"}).open_signup is False


def test_open_signup_on_the_network_is_warned_about():
    exposed = from_environ({"JHUB_BIND_ADDRESS": "0.0.0.0", "OPEN_SIGNUP": "true"})
    (warning,) = warnings_for(exposed)
    assert warning.startswith("warning: OPEN_SIGNUP=true with JHUB_BIND_ADDRESS=0.0.0.0: anyone")
    assert warnings_for(from_environ({"JHUB_BIND_ADDRESS": "0.0.0.0"})) == []
    assert warnings_for(from_environ({"OPEN_SIGNUP": "true"})) == []


def test_settings_are_frozen():
    s = from_environ({})
    with pytest.raises(AttributeError):
        s.stack_name = "other"


CONSTRAINTS_HINT = (
    "set JHUB_SWARM_CONSTRAINTS to constraints separated by commas, "
    "e.g. node.labels.jhub.users==true,node.role!=manager"
)

BAD_ENVIRONMENTS = [
    ({"JHUB_MODE": "k8s"}, "unknown JHUB_MODE 'k8s'", "set JHUB_MODE to one of: single, swarm"),
    (
        {"JHUB_SWARM_CONSTRAINTS": "node.labels.gpu"},
        "JHUB_SWARM_CONSTRAINTS entry 'node.labels.gpu' is not a Swarm placement constraint: "
        "it has no == or != between a key and a value",
        CONSTRAINTS_HINT,
    ),
    (
        {"JHUB_SWARM_CONSTRAINTS": "node.role==manager,,node.labels.a==b"},
        "JHUB_SWARM_CONSTRAINTS entry '' is not a Swarm placement constraint: "
        "it is empty (two commas in a row, or one at an end)",
        CONSTRAINTS_HINT,
    ),
    (
        {"JHUB_SWARM_CONSTRAINTS": "node.labels.x>=1"},
        "JHUB_SWARM_CONSTRAINTS entry 'node.labels.x>=1' is not a Swarm placement constraint: "
        "it has no == or != between a key and a value",
        CONSTRAINTS_HINT,
    ),
    (
        {"JHUB_SWARM_CONSTRAINTS": "node labels==x"},
        "JHUB_SWARM_CONSTRAINTS entry 'node labels==x' is not a Swarm placement constraint: "
        "'node labels' is not a constraint key (e.g. node.labels.gpu, node.role, node.hostname)",
        CONSTRAINTS_HINT,
    ),
    (
        {"JHUB_SWARM_CONSTRAINTS": "node.labels.a==b=c"},
        "JHUB_SWARM_CONSTRAINTS entry 'node.labels.a==b=c' is not a Swarm placement constraint: "
        "'b=c' is not a constraint value (Swarm allows letters, digits, blanks and :-_./*()?+[]^$|\\ only)",
        CONSTRAINTS_HINT,
    ),
    (
        {"JHUB_STACK_NAME": "jhub", "JHUB_USER_VOLUME_PREFIX": "jhub-"},
        "JHUB_USER_VOLUME_PREFIX='jhub-' would make the archives of deleted users (jhub-archive-…) "
        "look like user volumes",
        "use a prefix that jhub-archive- does not start with (default: jupyterhub-user-)",
    ),
    ({"OPEN_SIGNUP": "maybe"}, "OPEN_SIGNUP='maybe' is not a boolean", "set OPEN_SIGNUP to true or false"),
    ({"TRUST_XHEADERS": "2"}, "TRUST_XHEADERS='2' is not a boolean", "set TRUST_XHEADERS to true or false"),
    (
        {"IDLE_CULL_TIMEOUT": "-1"},
        "IDLE_CULL_TIMEOUT='-1' is not a whole number >= 0",
        "set IDLE_CULL_TIMEOUT to e.g. 3600",
    ),
    (
        {"IDLE_CULL_TIMEOUT": "1h"},
        "IDLE_CULL_TIMEOUT='1h' is not a whole number >= 0",
        "set IDLE_CULL_TIMEOUT to e.g. 3600",
    ),
    ({"JHUB_PIDS_LIMIT": "10"}, "JHUB_PIDS_LIMIT='10' is not a whole number >= 64", "set JHUB_PIDS_LIMIT to e.g. 2048"),
    (
        {"JHUB_NAMED_SERVER_LIMIT": "three"},
        "JHUB_NAMED_SERVER_LIMIT='three' is not a whole number >= 0",
        "set JHUB_NAMED_SERVER_LIMIT to e.g. 3",
    ),
    (
        {"AUTH_STRATEGY": "kerberos"},
        "unknown AUTH_STRATEGY 'kerberos'",
        "set AUTH_STRATEGY to one of: native, ldap, dummy",
    ),
    ({"SPAWNER": "k8s"}, "unknown SPAWNER 'k8s'", "set SPAWNER to one of: dockerspawner, profiles"),
    ({"JHUB_MEM_LIMIT": "4GB"}, "JHUB_MEM_LIMIT '4GB' is not a memory size", "set JHUB_MEM_LIMIT to e.g. 4G or 512M"),
    (
        {"JHUB_CPU_LIMIT": "two"},
        "JHUB_CPU_LIMIT 'two' is not a positive number of CPUs",
        "set JHUB_CPU_LIMIT to e.g. 2 or 0.5",
    ),
    (
        {"JHUB_CPU_LIMIT": "0"},
        "JHUB_CPU_LIMIT '0' is not a positive number of CPUs",
        "set JHUB_CPU_LIMIT to e.g. 2 or 0.5",
    ),
    (
        {"JHUB_CPU_LIMIT": "inf"},
        "JHUB_CPU_LIMIT 'inf' is not a positive number of CPUs",
        "set JHUB_CPU_LIMIT to e.g. 2 or 0.5",
    ),
    (
        {"JHUB_STACK_NAME": "my stack"},
        "JHUB_STACK_NAME='my stack' cannot be part of a Docker object name",
        "use letters, digits, '_', '.' and '-' only (default: jhub)",
    ),
    (
        {"JHUB_NETWORK": "-net"},
        "JHUB_NETWORK='-net' cannot be part of a Docker object name",
        "use letters, digits, '_', '.' and '-' only (default: jupyterhub-net)",
    ),
    (
        {"JHUB_USER_VOLUME_PREFIX": "vol/"},
        "JHUB_USER_VOLUME_PREFIX='vol/' cannot be part of a Docker object name",
        "use letters, digits, '_', '.' and '-' only (default: jupyterhub-user-)",
    ),
    (
        {"ADMIN_PASSWORD": "short"},
        "ADMIN_PASSWORD is shorter than 8 characters",
        "set ADMIN_PASSWORD to at least 8 characters, or unset it to sign up as admin by hand",
    ),
    (
        {"JHUB_BCRYPT_COST": "9"},
        "JHUB_BCRYPT_COST='9' is not a bcrypt cost from 10 to 16",
        "unset JHUB_BCRYPT_COST for 10 (OWASP's least for bcrypt), or set a whole number up to 16; each step "
        "doubles the time of every login",
    ),
    (
        {"JHUB_BCRYPT_COST": "twelve"},
        "JHUB_BCRYPT_COST='twelve' is not a bcrypt cost from 10 to 16",
        "unset JHUB_BCRYPT_COST for 10 (OWASP's least for bcrypt), or set a whole number up to 16; each step "
        "doubles the time of every login",
    ),
    (
        {"JHUB_CONCURRENT_STARTS": "-1"},
        "JHUB_CONCURRENT_STARTS='-1' is not a whole number >= 0",
        f"set JHUB_CONCURRENT_STARTS to e.g. {default_concurrent_starts()}",
    ),
    (
        {"AUTH_STRATEGY": "dummy"},
        "AUTH_STRATEGY=dummy needs DUMMY_PASSWORD (else anyone logs in as anyone with no password)",
        "set DUMMY_PASSWORD, or use AUTH_STRATEGY=native",
    ),
]


@pytest.mark.parametrize(("environ", "message", "hint"), BAD_ENVIRONMENTS, ids=lambda v: str(v)[:40])
def test_each_bad_variable_names_itself_and_the_fix(environ, message, hint):
    with pytest.raises(ConfigError) as caught:
        from_environ(environ)
    assert caught.value.message == message
    assert caught.value.hint == hint
    assert caught.value.exit_text() == f"error: {message}\nhint: {hint}"


def test_short_admin_password_is_fine_with_dummy_auth_but_warned_about():
    s = from_environ({"AUTH_STRATEGY": "dummy", "DUMMY_PASSWORD": "x", "ADMIN_PASSWORD": "short"})
    assert warnings_for(s) == ["warning: ADMIN_PASSWORD is ignored with AUTH_STRATEGY=dummy"]
    assert warnings_for(from_environ({})) == []


@pytest.mark.parametrize("value", ["4G", "512M", "1.5G", "1T", "100", "1024K", "2.25M"])
def test_memory_sizes_of_the_rust_grammar_are_accepted(value):
    assert is_mem_size(value)


@pytest.mark.parametrize("value", ["", "0", "0G", "4GB", "4g", "1.G", ".5G", "1.5.2G", "-1G", "4 G", "4Gi", "04G"])
def test_memory_sizes_outside_the_rust_grammar_are_refused(value):
    assert not is_mem_size(value)
