"""AUTH_STRATEGY=ldap: the LDAP_* settings (each bad one refused with its variable named) and what the
authenticator is configured with. Logging in against a real directory is tests/ldap.rs's (slapd)."""

import ssl

import pytest
from ldapauthenticator.ldapauthenticator import TlsStrategy

from jhub_hub import ConfigError
from jhub_hub.ldap import JhubLDAPAuthenticator, LdapSettings
from jhub_hub.settings import from_environ, warnings_for

BASE = {
    "AUTH_STRATEGY": "ldap",
    "LDAP_SERVER": "ldap.school.example",
    "LDAP_BIND_DN_TEMPLATE": "uid={username},ou=people,dc=school,dc=example",
}


def test_a_bind_template_setup_with_starttls(tmp_path):
    settings = from_environ(
        {**BASE, "LDAP_CA_FILE": "ca.pem", "LDAP_GROUP_SEARCH_BASE": "ou=groups,dc=school,dc=example"}
    )
    ldap = settings.ldap
    assert isinstance(ldap, LdapSettings)
    assert (ldap.server, ldap.port, ldap.tls) == ("ldap.school.example", 389, "starttls")
    assert ldap.bind_dn_templates == ("uid={username},ou=people,dc=school,dc=example",)
    authenticator = JhubLDAPAuthenticator(jhub_ldap=ldap, jhub_ldap_dir=str(tmp_path))
    assert authenticator.tls_strategy == TlsStrategy.before_bind
    assert authenticator.tls_kwargs == {"validate": ssl.CERT_REQUIRED, "ca_certs_file": str(tmp_path / "ca.pem")}
    assert authenticator.bind_dn_template == ["uid={username},ou=people,dc=school,dc=example"]
    assert authenticator.user_dns("alice") == ["uid=alice,ou=people,dc=school,dc=example"]
    # A name that would change the DN is escaped, never spliced in.
    assert authenticator.user_dns("a,ou=admins") == ["uid=a\\,ou\\=admins,ou=people,dc=school,dc=example"]
    assert warnings_for(settings) == []


def test_ldaps_defaults_to_636_and_none_warns():
    assert from_environ({**BASE, "LDAP_TLS": "ldaps"}).ldap.port == 636
    plain = from_environ({**BASE, "LDAP_TLS": "none", "ADMIN_PASSWORD": "ignored-password"})
    assert any("plain text" in warning for warning in warnings_for(plain))
    assert any("ADMIN_PASSWORD is ignored" in warning for warning in warnings_for(plain))


def test_search_mode_reads_the_password_from_the_ldap_folder(tmp_path):
    (tmp_path / "search-password").write_text("s3cret\n")
    environ = {
        "AUTH_STRATEGY": "ldap",
        "LDAP_SERVER": "ad.school.example",
        "LDAP_USER_SEARCH_BASE": "ou=people,dc=school,dc=example",
        "LDAP_USER_ATTRIBUTE": "sAMAccountName",
        "LDAP_SEARCH_USER": "cn=hub,ou=services,dc=school,dc=example",
        "LDAP_SEARCH_PASSWORD_FILE": "search-password",
    }
    authenticator = JhubLDAPAuthenticator(jhub_ldap=from_environ(environ).ldap, jhub_ldap_dir=str(tmp_path))
    assert authenticator.lookup_dn is True
    assert authenticator.user_attribute == "sAMAccountName"
    assert authenticator.lookup_dn_user_dn_attribute == "sAMAccountName"
    assert authenticator.lookup_dn_search_password == "s3cret"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"LDAP_SERVER": ""}, "AUTH_STRATEGY=ldap needs LDAP_SERVER"),
        ({"LDAP_TLS": "tls"}, "LDAP_TLS"),
        ({"LDAP_PORT": "0"}, "LDAP_PORT"),
        ({"LDAP_BIND_DN_TEMPLATE": "uid=alice,dc=x"}, "LDAP_BIND_DN_TEMPLATE='uid=alice,dc=x' has no {username}"),
        (
            {"LDAP_BIND_DN_TEMPLATE": ""},
            "AUTH_STRATEGY=ldap needs LDAP_BIND_DN_TEMPLATE, or LDAP_USER_SEARCH_BASE with LDAP_SEARCH_USER",
        ),
        ({"LDAP_CA_FILE": "../etc/ca.pem"}, "LDAP_CA_FILE='../etc/ca.pem' is not a file name"),
        ({"LDAP_ALLOWED_GROUPS": "students"}, "LDAP_ALLOWED_GROUPS and LDAP_ADMIN_GROUPS need LDAP_GROUP_SEARCH_BASE"),
    ],
)
def test_bad_ldap_settings_are_refused(changes, message):
    with pytest.raises(ConfigError) as caught:
        from_environ({**BASE, **changes})
    assert message in caught.value.message
    assert caught.value.hint


def test_a_missing_password_file_is_named(tmp_path):
    environ = {
        "AUTH_STRATEGY": "ldap",
        "LDAP_SERVER": "ad.school.example",
        "LDAP_USER_SEARCH_BASE": "ou=people,dc=school,dc=example",
        "LDAP_SEARCH_USER": "cn=hub,dc=school,dc=example",
        "LDAP_SEARCH_PASSWORD_FILE": "search-password",
    }
    with pytest.raises(ConfigError) as caught:
        JhubLDAPAuthenticator(jhub_ldap=from_environ(environ).ldap, jhub_ldap_dir=str(tmp_path))
    assert caught.value.message.startswith(f"cannot read LDAP_SEARCH_PASSWORD_FILE {tmp_path}/search-password")


def test_other_strategies_read_no_ldap_settings():
    assert from_environ({"LDAP_SERVER": "ignored"}).ldap is None


def test_a_file_the_settings_name_must_be_in_the_ldap_folder(tmp_path):
    from jhub_hub.config import ldap_files_present

    ldap = from_environ({**BASE, "LDAP_CA_FILE": "ca.pem"}).ldap
    with pytest.raises(ConfigError) as caught:
        ldap_files_present(ldap, str(tmp_path))
    assert caught.value.message == "LDAP_CA_FILE=ca.pem is not in the LDAP folder"
    assert "stack/ldap/ca.pem" in caught.value.hint
    (tmp_path / "ca.pem").write_text("a CA")
    ldap_files_present(ldap, str(tmp_path))
