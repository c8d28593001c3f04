"""NativeAuthenticator with the admin bootstrap and bcrypt in worker threads, against a real sqlite database."""

import asyncio
import datetime
import io
import threading
from types import SimpleNamespace

import pytest
from jupyterhub import orm
from nativeauthenticator.orm import UserInfo

import jhub_hub.auth
import jhub_hub.passwords
from jhub_hub import ConfigError, accounts
from jhub_hub.auth import (
    JhubDiscardHandler,
    JhubLoginHandler,
    JhubNativeAuthenticator,
    JhubSignUpHandler,
    JhubToggleAuthorizationHandler,
    _signup_hash,
)
from jhub_hub.passwords import cost_of, hash_password

ADMIN_PASSWORD = "correct horse battery"


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'jupyterhub.sqlite'}"


def authenticator(db_url, **traits):
    """A fresh authenticator on a fresh session of the database at `db_url`, as after a hub restart."""
    session = orm.new_session_factory(db_url)()
    traits.setdefault("allowed_failed_logins", 5)
    traits.setdefault("seconds_before_next_try", 600)
    traits.setdefault("minimum_password_length", 8)
    return JhubNativeAuthenticator(db=session, admin_users={"admin"}, **traits)


def start_hub(db_url, admin_password):
    """What JupyterHub's init_users does for the admin at start: the user row, then add_user."""
    auth = authenticator(db_url, bootstrap_admin_password=admin_password)
    user = orm.User.find(auth.db, "admin")
    if user is None:
        user = orm.User(name="admin", admin=True)
        auth.db.add(user)
        auth.db.commit()
    auth.add_user(user)
    return auth


def login(auth, username, password, address="172.20.0.1"):
    """A login attempt as the login handler makes it, from the client `address`."""
    handler = SimpleNamespace(request=SimpleNamespace(remote_ip=address))
    return asyncio.run(auth.authenticate(handler, {"username": username, "password": password}))


def test_admin_is_created_authorized_from_admin_password(db_url):
    auth = start_hub(db_url, ADMIN_PASSWORD)
    info = UserInfo.find(auth.db, "admin")
    assert info is not None
    assert info.is_authorized
    assert info.is_valid_password(ADMIN_PASSWORD)
    assert login(auth, "admin", ADMIN_PASSWORD) == "admin"
    assert login(auth, "admin", "wrong password") is None


def test_a_changed_admin_password_replaces_the_old_one(db_url):
    start_hub(db_url, ADMIN_PASSWORD)
    auth = start_hub(db_url, "a new password!")
    assert len(UserInfo.all_users(auth.db)) == 1
    assert login(auth, "admin", "a new password!") == "admin"
    assert login(auth, "admin", ADMIN_PASSWORD) is None


def test_an_unchanged_admin_password_keeps_the_hash_and_reauthorizes(db_url):
    auth = start_hub(db_url, ADMIN_PASSWORD)
    info = UserInfo.find(auth.db, "admin")
    first_hash = info.password
    info.is_authorized = False  # e.g. toggled off by mistake at /hub/authorize
    auth.db.commit()
    again = start_hub(db_url, ADMIN_PASSWORD)
    info = UserInfo.find(again.db, "admin")
    assert info.password == first_hash
    assert info.is_authorized


def test_without_admin_password_nothing_is_created(db_url):
    auth = start_hub(db_url, "")
    assert UserInfo.find(auth.db, "admin") is None


def test_login_lockout_after_five_failures_as_upstream(db_url):
    auth = start_hub(db_url, ADMIN_PASSWORD)
    for _ in range(5):
        assert login(auth, "admin", "wrong password") is None
    # Blocked now, even with the right password, until seconds_before_next_try pass.
    assert login(auth, "admin", ADMIN_PASSWORD) is None
    auth.login_attempts[("admin", "172.20.0.1")]["time"] -= datetime.timedelta(seconds=601)
    assert login(auth, "admin", ADMIN_PASSWORD) == "admin"
    assert ("admin", "172.20.0.1") not in auth.login_attempts


def test_a_strangers_failures_lock_only_the_strangers_address(db_url):
    auth = start_hub(db_url, ADMIN_PASSWORD)
    for _ in range(5):
        assert login(auth, "admin", "wrong password", address="172.20.0.66") is None
    assert login(auth, "admin", ADMIN_PASSWORD, address="172.20.0.66") is None, "that address is locked"
    assert login(auth, "admin", ADMIN_PASSWORD, address="172.20.0.1") == "admin", "the admin's address is not"
    assert ("admin", "172.20.0.66") in auth.login_attempts, "a success elsewhere does not lift that lockout"


def test_old_failures_of_other_addresses_are_forgotten(db_url):
    auth = start_hub(db_url, ADMIN_PASSWORD)
    login(auth, "admin", "wrong password", address="10.0.0.1")
    auth.login_attempts[("admin", "10.0.0.1")]["time"] -= datetime.timedelta(seconds=700)
    login(auth, "admin", "wrong password", address="10.0.0.2")
    assert list(auth.login_attempts) == [("admin", "10.0.0.2")]


@pytest.fixture
def hub_env(tmp_path, db_url):
    """The environment `jhub-account` sees in the hub's container, with the hub's data folder."""
    return {"JHUB_DATA_DIR": str(tmp_path), "ADMIN_PASSWORD": ADMIN_PASSWORD}


def account_command(argv, env):
    out = io.StringIO()
    assert accounts.main(argv, env, out) == 0
    return out.getvalue()


def test_unlock_from_the_host_lifts_every_lockout_of_the_name(db_url, hub_env, tmp_path):
    auth = start_hub(db_url, ADMIN_PASSWORD)
    auth.account_requests_dir = accounts.requests_dir(str(tmp_path))
    for address in ("10.0.0.1", "10.0.0.2"):
        for _ in range(5):
            login(auth, "admin", "wrong password", address=address)
    assert login(auth, "admin", ADMIN_PASSWORD, address="10.0.0.1") is None
    assert "lifted" in account_command(["unlock", "admin"], hub_env)
    assert login(auth, "admin", ADMIN_PASSWORD, address="10.0.0.1") == "admin"
    assert login(auth, "admin", ADMIN_PASSWORD, address="10.0.0.2") == "admin"
    assert accounts.pending(auth.account_requests_dir) == [], "a request is applied once"


def test_reset_password_from_the_host(db_url, hub_env, tmp_path):
    auth = start_hub(db_url, ADMIN_PASSWORD)
    auth.account_requests_dir = accounts.requests_dir(str(tmp_path))
    auth.create_user("carol", "carols old password").is_authorized = True
    auth.db.commit()
    assert login(auth, "carol", "carols old password") == "carol"
    for _ in range(5):
        login(auth, "carol", "wrong password")
    said = account_command(["reset-password", "carol"], hub_env)
    new_password = said.split("new password: ")[1].split()[0]
    assert login(auth, "carol", "carols old password") is None
    assert login(auth, "carol", new_password) == "carol", "new password set, lockout lifted"
    files = list((tmp_path / "account-requests").iterdir())
    assert files == []


@pytest.mark.parametrize(
    ("argv", "env_extra", "message"),
    [
        (["unlock", "nobody"], {}, "no account 'nobody'"),
        (["reset-password", "admin"], {}, "the password of 'admin' comes from ADMIN_PASSWORD"),
        (["unlock"], {}, "unknown command 'unlock'"),
        (["unlock", "admin"], {"AUTH_STRATEGY": "dummy", "DUMMY_PASSWORD": "x"}, "AUTH_STRATEGY=dummy has no accounts"),
    ],
)
def test_account_commands_refuse_bad_input_with_a_hint(db_url, hub_env, argv, env_extra, message):
    start_hub(db_url, ADMIN_PASSWORD)
    with pytest.raises(ConfigError) as refused:
        accounts.main(argv, {**hub_env, **env_extra}, io.StringIO())
    assert message in refused.value.message
    assert refused.value.hint


def test_unauthorized_users_cannot_log_in(db_url):
    auth = authenticator(db_url, open_signup=False)
    assert auth.create_user("carol", "long enough password") is not None
    assert not UserInfo.find(auth.db, "carol").is_authorized
    assert login(auth, "carol", "long enough password") is None
    assert login(auth, "nobody", "long enough password") is None


def test_password_checks_run_outside_the_event_loop_thread(db_url, monkeypatch):
    auth = start_hub(db_url, ADMIN_PASSWORD)
    threads = []
    real = jhub_hub.passwords.password_matches

    def recording(password, hashed):
        threads.append(threading.get_ident())
        return real(password, hashed)

    monkeypatch.setattr(jhub_hub.passwords, "password_matches", recording)

    async def two_logins_and_a_ticker():
        loop_thread = threading.get_ident()
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticking = asyncio.create_task(ticker())
        results = await asyncio.gather(
            auth.authenticate(None, {"username": "admin", "password": ADMIN_PASSWORD}),
            auth.authenticate(None, {"username": "admin", "password": "wrong password"}),
        )
        ticking.cancel()
        return loop_thread, results, ticks

    loop_thread, results, ticks = asyncio.run(two_logins_and_a_ticker())
    assert results == ["admin", None]
    assert len(threads) == 2
    assert loop_thread not in threads
    assert ticks > 2  # the loop kept running other tasks while the hashes were computed


def test_signup_uses_the_hash_made_in_the_handlers_thread(db_url):
    auth = authenticator(db_url, open_signup=True)
    hashed = hash_password("dave's password")
    token = _signup_hash.set(("dave's password", hashed))
    try:
        info = auth.create_user("dave", "dave's password")
    finally:
        _signup_hash.reset(token)
    assert info.password == hashed
    assert info.is_authorized  # open signup
    assert login(auth, "dave", "dave's password") == "dave"


def test_signup_rules_still_apply_with_a_prehashed_password(db_url):
    auth = authenticator(db_url, open_signup=False)
    for name, password in [("eve", "short"), ("e ve", "long enough password"), ("e/ve", "long enough password")]:
        token = _signup_hash.set((password, hash_password(password)))
        try:
            assert auth.create_user(name, password) is None
        finally:
            _signup_hash.reset(token)
    token = _signup_hash.set(("long enough password", hash_password("long enough password")))
    try:
        assert auth.create_user("eve", "long enough password") is not None
        assert auth.create_user("eve", "long enough password") is None  # taken
    finally:
        _signup_hash.reset(token)
    assert not UserInfo.find(auth.db, "eve").is_authorized  # closed signup: the admin authorizes


def test_a_hash_for_another_password_is_not_used(db_url):
    auth = authenticator(db_url, open_signup=True)
    token = _signup_hash.set(("something else", hash_password("something else")))
    try:
        info = auth.create_user("frank", "frank's password")
    finally:
        _signup_hash.reset(token)
    assert info.is_valid_password("frank's password")


def test_the_login_and_signup_pages_are_ours(db_url):
    handlers = dict(authenticator(db_url).get_handlers(None))
    assert handlers["/login"] is JhubLoginHandler
    assert handlers["/signup"] is JhubSignUpHandler
    assert handlers["/authorize/([^/]*)"] is JhubToggleAuthorizationHandler
    assert handlers["/discard/([^/]*)"] is JhubDiscardHandler
    assert len(handlers) == 8


def test_new_hashes_are_made_at_the_configured_cost(db_url):
    assert cost_of(hash_password("a password")) == 10, "10 unless JHUB_BCRYPT_COST says otherwise"
    auth = start_hub(db_url, ADMIN_PASSWORD)
    assert cost_of(UserInfo.find(auth.db, "admin").password) == 10
    dearer = authenticator(db_url, bcrypt_cost=11)
    assert cost_of(dearer.hash_password("a password")) == 11


def test_a_hash_cheaper_than_the_setting_is_made_again_at_the_next_login(db_url):
    auth = start_hub(db_url, ADMIN_PASSWORD)
    assert cost_of(UserInfo.find(auth.db, "admin").password) == 10
    # The admin raises JHUB_BCRYPT_COST and restarts the hub: the next login makes the hash again.
    raised = authenticator(db_url, bcrypt_cost=11)
    assert login(raised, "admin", "wrong password") is None
    assert cost_of(UserInfo.find(raised.db, "admin").password) == 10, "a failed login changes nothing"
    assert login(raised, "admin", ADMIN_PASSWORD) == "admin"
    assert cost_of(UserInfo.find(raised.db, "admin").password) == 11
    # A dearer hash than the setting is kept: it is no weaker.
    lowered = authenticator(db_url)
    assert login(lowered, "admin", ADMIN_PASSWORD) == "admin"
    assert cost_of(UserInfo.find(lowered.db, "admin").password) == 11


def test_hashes_run_at_most_cores_minus_one_at_a_time(monkeypatch):
    for cores, threads in [(1, 1), (2, 1), (4, 3), (None, 1)]:
        monkeypatch.setattr(jhub_hub.passwords.os, "cpu_count", lambda cores=cores: cores)
        assert jhub_hub.passwords.hashing_threads() == threads
    monkeypatch.setattr(jhub_hub.passwords.os, "cpu_count", lambda: 3)
    monkeypatch.setattr(jhub_hub.passwords, "_pool", None)
    running, most = 0, 0
    lock = threading.Lock()
    gate = threading.Event()

    def hash_like():
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        gate.wait(0.2)
        with lock:
            running -= 1

    async def six_at_once():
        await asyncio.gather(*(jhub_hub.passwords.off_the_loop(hash_like) for _ in range(6)))

    asyncio.run(six_at_once())
    monkeypatch.setattr(jhub_hub.passwords, "_pool", None)
    assert most == 2, "3 cores: two hashes at a time, one core left to the event loop"


def test_a_changed_password_is_hashed_at_the_configured_cost(db_url):
    auth = authenticator(db_url, open_signup=True)
    auth.create_user("gina", "gina's first password")
    assert auth.change_password("gina", "short") is None, "the strength rule still applies"
    assert auth.change_password("gina", "gina's second password") is True
    assert cost_of(UserInfo.find(auth.db, "gina").password) == 10
    assert login(auth, "gina", "gina's second password") == "gina"


def test_the_cost_of_a_hash_is_read_from_it():
    assert cost_of(b"$2b$12$abcdefghijklmnopqrstuu") == 12
    assert cost_of("$2b$10$abcdefghijklmnopqrstuu") == 10
    assert cost_of(b"not a hash") is None
