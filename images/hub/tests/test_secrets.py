"""Secret files: created atomically with mode 600, refused when others can read them."""

import os
import stat
import threading

import pytest

from jhub_hub import ConfigError
from jhub_hub.secrets import ensure_secret_file, new_token, read_secret_file

HEX64 = r"[0-9a-f]{64}"


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_created_with_mode_600_and_kept_across_calls(tmp_path):
    path = str(tmp_path / "cookie_secret")
    assert ensure_secret_file(path) is True
    assert mode_of(path) == 0o600
    first = read_secret_file(path, HEX64)
    assert ensure_secret_file(path) is False
    assert read_secret_file(path, HEX64) == first
    assert os.listdir(tmp_path) == ["cookie_secret"]  # no temporary file left behind


def test_mode_600_whatever_the_umask(tmp_path):
    previous = os.umask(0)
    try:
        path = str(tmp_path / "token")
        ensure_secret_file(path)
    finally:
        os.umask(previous)
    assert mode_of(path) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_refused_when_others_can_read_it(tmp_path, mode):
    path = tmp_path / "token"
    path.write_text(new_token() + "\n")
    path.chmod(mode)
    with pytest.raises(ConfigError) as caught:
        read_secret_file(str(path), HEX64)
    assert caught.value.message == f"{path} has mode {mode:03o}, readable by others"
    assert caught.value.hint == f"run `chmod 600 {path}` in the hub container"


def test_refused_when_it_holds_no_valid_secret(tmp_path):
    path = tmp_path / "token"
    path.write_text("not a secret\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        read_secret_file(str(path), HEX64)
    assert caught.value.message == f"{path} does not hold a valid secret"
    assert caught.value.hint == f"delete {path} and restart the stack to generate a new one"


def test_concurrent_creation_keeps_exactly_one(tmp_path):
    path = str(tmp_path / "proxy_auth_token")
    writers = 8
    # Every writer has passed the existence check and written its temporary file before any links it.
    barrier = threading.Barrier(writers)
    texts, created = {}, {}

    def make_text_for(index):
        def make_text():
            barrier.wait(timeout=30)
            texts[index] = new_token()
            return texts[index]

        return make_text

    def write(index):
        created[index] = ensure_secret_file(path, make_text_for(index))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [i for i, made in created.items() if made]
    assert len(winners) == 1
    assert read_secret_file(path, HEX64) == texts[winners[0]]
    assert os.listdir(tmp_path) == ["proxy_auth_token"]
