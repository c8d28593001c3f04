"""The hub-wide announcement: set for a while, shown escaped on every page, gone when it expires or is cleared."""

import datetime
import io
import json
import os

import pytest

from jhub_hub import ConfigError, announcement

NOW = datetime.datetime(2026, 12, 5, 12, 0, tzinfo=datetime.UTC)


def test_an_announcement_lasts_its_time_then_is_gone(tmp_path):
    expires = announcement.write(str(tmp_path), "  Maintenance at 18:00  ", 3600, now=NOW)
    assert expires == NOW + datetime.timedelta(hours=1)
    assert announcement.current(str(tmp_path), now=NOW) == ("Maintenance at 18:00", expires)
    assert announcement.current(str(tmp_path), now=expires) is None
    assert oct(os.stat(announcement.path(str(tmp_path))).st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["announcement.json"], "no partial file left"


def test_the_page_gets_the_text_escaped(tmp_path):
    show = announcement.template_var(str(tmp_path))
    assert show(None) == ""
    announcement.write(str(tmp_path), "<script>alert(1)</script> & more", 60)
    assert show(None) == "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more"


@pytest.mark.parametrize("content", ["", "{", '{"text": 3, "expires": "2099-01-01T00:00:00+00:00"}', '{"text": "x"}'])
def test_an_unreadable_file_shows_nothing(tmp_path, content):
    (tmp_path / "announcement.json").write_text(content)
    assert announcement.current(str(tmp_path)) is None


@pytest.mark.parametrize(
    ("text", "seconds", "message"),
    [
        ("   ", 60, "the announcement is empty"),
        ("two\nlines", 60, "the announcement spans lines"),
        ("x" * 501, 60, "the announcement has 501 characters, more than 500"),
        ("fine", 0, "the announcement would last 0 seconds"),
    ],
)
def test_bad_announcements_are_refused_and_nothing_is_written(tmp_path, text, seconds, message):
    with pytest.raises(ConfigError) as caught:
        announcement.write(str(tmp_path), text, seconds)
    assert caught.value.message == message
    assert caught.value.hint
    assert list(tmp_path.iterdir()) == []


def test_the_command_sets_shows_and_clears(tmp_path):
    environ = {"JHUB_DATA_DIR": str(tmp_path)}
    out = io.StringIO()
    assert announcement.main(["set", "7200", "Exam week: save often"], environ, out) == 0
    assert "Exam week: save often" in out.getvalue()
    assert json.loads((tmp_path / "announcement.json").read_text())["text"] == "Exam week: save often"
    out = io.StringIO()
    announcement.main(["show"], environ, out)
    assert out.getvalue().startswith("until ")
    assert "Exam week" in out.getvalue()
    out = io.StringIO()
    announcement.main(["clear"], environ, out)
    assert out.getvalue() == "announcement cleared\n"
    out = io.StringIO()
    announcement.main(["show"], environ, out)
    assert out.getvalue() == "no announcement\n"
    with pytest.raises(ConfigError):
        announcement.main(["set", "soon", "x"], environ, out)
    with pytest.raises(ConfigError):
        announcement.main(["shout", "x"], environ, out)
