//! Unit tests of the TLS front door's certificate handling: names, the self-signed CA and server
//! certificate (made, kept, renewed), and every refusal of a bad certificate or key.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rcgen::{CertificateParams, KeyPair};
use time::{Duration, OffsetDateTime};

use super::certs::{self, Name, SelfSignedFiles};
use super::{Mode, compose_supports_reset, covers, mode};

/// A scratch folder removed at drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("jhub-tls-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn names(extra: &[&str]) -> BTreeSet<Name> {
    let extra: Vec<Name> = extra.iter().map(|name| certs::parse_name(name).unwrap()).collect();
    certs::server_names(Some("buildhost"), &extra)
}

/// A self-signed certificate and key (PKCS#8 PEM) for `name`, valid from `from` to `until`.
fn write_pair(dir: &Path, stem: &str, from: OffsetDateTime, until: OffsetDateTime) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["hub.example.org".to_string()]).unwrap();
    params.not_before = from;
    params.not_after = until;
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

#[test]
fn modes_are_off_self_signed_files() {
    assert_eq!(mode("").unwrap(), Mode::Off);
    assert_eq!(mode("off").unwrap(), Mode::Off);
    assert_eq!(mode("self-signed").unwrap(), Mode::SelfSigned);
    assert_eq!(mode("files").unwrap(), Mode::Files);
    let err = mode("on").unwrap_err();
    assert!(err.message.contains("JHUB_TLS=on") && err.hint.contains("self-signed"), "{err:?}");
}

#[test]
fn public_hosts_accept_names_and_addresses() {
    let parsed = certs::parse_public_hosts("Hub.Example.org, 192.168.1.20 [fe80::1]  *.lab.example.org\tlocalhost").unwrap();
    assert_eq!(
        parsed,
        vec![
            Name::Dns("hub.example.org".into()),
            Name::Ip("192.168.1.20".parse().unwrap()),
            Name::Ip("fe80::1".parse().unwrap()),
            Name::Dns("*.lab.example.org".into()),
            Name::Dns("localhost".into()),
        ]
    );
    assert!(certs::parse_public_hosts("").unwrap().is_empty());
}

#[test]
fn public_hosts_refuse_what_is_no_name() {
    for bad in [
        "https://hub.example.org",
        "hub.example.org:443",
        "hub_1.example.org",
        "-hub.example.org",
        "hub..org",
        "999.1.1.1",
        "a/b",
        "hub.example.org.",
    ] {
        let err = certs::parse_public_hosts(&format!("ok.example.org,{bad}")).unwrap_err();
        assert!(err.message.contains(bad) && err.message.starts_with("JHUB_PUBLIC_HOSTS"), "{bad}: {err:?}");
        assert!(err.hint.contains("JHUB_PUBLIC_HOSTS="), "{bad}: {err:?}");
    }
    assert!(!certs::is_dns_name(&format!("{}.org", "a".repeat(64))));
    assert!(certs::is_dns_name(&format!("{}.org", "a".repeat(63))));
}

#[test]
fn server_names_always_include_loopback_and_host() {
    let shown: Vec<String> = names(&["hub.example.org", "10.0.0.5"]).iter().map(Name::to_string).collect();
    assert_eq!(shown, ["buildhost", "hub.example.org", "localhost", "10.0.0.5", "127.0.0.1", "::1"]);
    // A host name that is no DNS name (underscore) is left out rather than refused: it is not the user's input.
    assert_eq!(certs::server_names(Some("my_box"), &[]).len(), 3);
}

#[test]
fn wildcards_cover_one_label() {
    let set: BTreeSet<Name> = [Name::Dns("*.example.org".into())].into();
    assert!(covers(&set, &Name::Dns("hub.example.org".into())));
    assert!(!covers(&set, &Name::Dns("a.hub.example.org".into())));
}

#[test]
fn self_signed_makes_a_ca_and_a_server_certificate_with_private_keys() {
    let scratch = Scratch::new("make");
    let files = SelfSignedFiles { dir: scratch.0.join("tls") };
    let wanted = names(&["hub.example.org", "192.168.1.20"]);
    let outcome = certs::ensure_self_signed(&files, &wanted, now()).unwrap();
    assert!(outcome.new_ca.is_some() && outcome.new_server.is_some(), "{outcome:?}");
    for key in [files.ca_key(), files.server_key()] {
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "{}", key.display());
    }
    let server = certs::check_pair(&files.server_cert(), &files.server_key(), now()).unwrap();
    assert_eq!(server.names, wanted);
    let ca = certs::parse_cert_pem(&std::fs::read_to_string(files.ca_cert()).unwrap(), &files.ca_cert()).unwrap();
    assert_eq!(server.issuer, ca.subject);
    assert!(server.not_after > (now() + Duration::days(300)).unix_timestamp());
    // ECDSA P-256: an uncompressed point is 65 bytes.
    assert_eq!(server.public_key.len(), 65);
    assert_eq!(server.spki_sha256.len(), 44);
}

#[test]
fn self_signed_keeps_what_is_valid_and_renews_on_changed_names_or_near_expiry_keeping_the_ca() {
    let scratch = Scratch::new("renew");
    let files = SelfSignedFiles { dir: scratch.0.clone() };
    let wanted = names(&[]);
    certs::ensure_self_signed(&files, &wanted, now()).unwrap();
    let ca_before = std::fs::read(files.ca_cert()).unwrap();
    let server_before = std::fs::read(files.server_cert()).unwrap();

    let kept = certs::ensure_self_signed(&files, &wanted, now()).unwrap();
    assert_eq!(kept, certs::Outcome { new_ca: None, new_server: None });
    assert_eq!(std::fs::read(files.server_cert()).unwrap(), server_before);

    let more = names(&["hub.example.org"]);
    let renamed = certs::ensure_self_signed(&files, &more, now()).unwrap();
    assert!(renamed.new_ca.is_none(), "{renamed:?}");
    assert!(renamed.new_server.as_deref().is_some_and(|why| why.contains("names changed")), "{renamed:?}");
    assert_eq!(std::fs::read(files.ca_cert()).unwrap(), ca_before, "the CA must be kept");
    assert!(
        certs::check_pair(&files.server_cert(), &files.server_key(), now()).unwrap().names.contains(&Name::Dns("hub.example.org".into()))
    );

    // 340 days later the server certificate (365 days) expires within 30 days; the CA (10 years) does not.
    let later = now() + Duration::days(340);
    let renewed = certs::ensure_self_signed(&files, &more, later).unwrap();
    assert!(renewed.new_ca.is_none(), "{renewed:?}");
    assert!(renewed.new_server.as_deref().is_some_and(|why| why.contains("expires")), "{renewed:?}");
    assert_eq!(std::fs::read(files.ca_cert()).unwrap(), ca_before, "the CA must be kept");

    // A server key that is not the certificate's is replaced too.
    std::fs::write(files.server_key(), KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let fixed = certs::ensure_self_signed(&files, &more, now()).unwrap();
    assert!(fixed.new_server.as_deref().is_some_and(|why| why.contains("key does not match")), "{fixed:?}");
}

#[test]
fn self_signed_replaces_a_missing_ca_and_reissues_the_server_certificate() {
    let scratch = Scratch::new("newca");
    let files = SelfSignedFiles { dir: scratch.0.clone() };
    certs::ensure_self_signed(&files, &names(&[]), now()).unwrap();
    std::fs::remove_file(files.ca_key()).unwrap();
    let outcome = certs::ensure_self_signed(&files, &names(&[]), now()).unwrap();
    assert!(outcome.new_ca.is_some() && outcome.new_server.as_deref() == Some("the CA is new"), "{outcome:?}");
    let server = certs::check_pair(&files.server_cert(), &files.server_key(), now()).unwrap();
    let ca = certs::parse_cert_pem(&std::fs::read_to_string(files.ca_cert()).unwrap(), &files.ca_cert()).unwrap();
    assert_eq!(server.issuer, ca.subject);
}

#[test]
fn files_refuse_a_missing_certificate_or_key() {
    let scratch = Scratch::new("missing");
    let (cert, key) = write_pair(&scratch.0, "good", now() - Duration::days(1), now() + Duration::days(90));
    let err = certs::check_pair(&scratch.0.join("absent.crt"), &key, now()).unwrap_err();
    assert!(err.message.contains("cannot read the certificate") && err.hint.contains("JHUB_TLS_CERT"), "{err:?}");
    let err = certs::check_pair(&cert, &scratch.0.join("absent.key"), now()).unwrap_err();
    assert!(err.message.contains("cannot read the private key") && err.hint.contains("JHUB_TLS_KEY"), "{err:?}");
}

#[test]
fn files_refuse_an_unreadable_certificate_or_key() {
    let scratch = Scratch::new("unreadable");
    let (cert, key) = write_pair(&scratch.0, "good", now() - Duration::days(1), now() + Duration::days(90));
    // A folder cannot be read as a file, not even by root (who reads any file whatever its mode).
    let folder = scratch.0.join("a-folder");
    std::fs::create_dir(&folder).unwrap();
    let err = certs::check_pair(&folder, &key, now()).unwrap_err();
    assert!(err.message.contains("cannot read the certificate"), "{err:?}");
    let err = certs::check_pair(&cert, &folder, now()).unwrap_err();
    assert!(err.message.contains("cannot read the private key"), "{err:?}");
    // Files that are readable but hold no PEM.
    let junk = scratch.0.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let err = certs::check_pair(&junk, &key, now()).unwrap_err();
    assert!(err.message.contains("holds no PEM certificate"), "{err:?}");
    let err = certs::check_pair(&cert, &junk, now()).unwrap_err();
    assert!(err.message.contains("holds no PEM private key"), "{err:?}");
    let encrypted = scratch.0.join("encrypted.key");
    std::fs::write(&encrypted, "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n").unwrap();
    let err = certs::check_pair(&cert, &encrypted, now()).unwrap_err();
    assert!(err.message.contains("encrypted") && err.hint.contains("openssl pkey"), "{err:?}");
}

#[test]
fn files_refuse_a_key_of_another_certificate() {
    let scratch = Scratch::new("mismatch");
    let (cert, _) = write_pair(&scratch.0, "one", now() - Duration::days(1), now() + Duration::days(90));
    let (_, other_key) = write_pair(&scratch.0, "two", now() - Duration::days(1), now() + Duration::days(90));
    let err = certs::check_pair(&cert, &other_key, now()).unwrap_err();
    assert!(err.message.contains("does not belong to the certificate") && err.hint.contains("JHUB_TLS_KEY"), "{err:?}");
}

#[test]
fn files_refuse_an_expired_or_future_certificate() {
    let scratch = Scratch::new("expired");
    let (cert, key) = write_pair(&scratch.0, "old", now() - Duration::days(400), now() - Duration::days(2));
    let err = certs::check_pair(&cert, &key, now()).unwrap_err();
    assert!(err.message.contains("expired on") && err.hint.contains("renew"), "{err:?}");
    let (cert, key) = write_pair(&scratch.0, "future", now() + Duration::days(2), now() + Duration::days(90));
    let err = certs::check_pair(&cert, &key, now()).unwrap_err();
    assert!(err.message.contains("not valid before"), "{err:?}");
    let (cert, key) = write_pair(&scratch.0, "good", now() - Duration::days(1), now() + Duration::days(90));
    let info = certs::check_pair(&cert, &key, now()).unwrap();
    assert!(info.names.contains(&Name::Dns("hub.example.org".into())));
}

#[test]
fn base64_matches_the_standard_alphabet() {
    assert_eq!(certs::base64(b""), "");
    assert_eq!(certs::base64(b"f"), "Zg==");
    assert_eq!(certs::base64(b"fo"), "Zm8=");
    assert_eq!(certs::base64(b"foo"), "Zm9v");
    assert_eq!(certs::base64(&[0xfb, 0xff]), "+/8=");
}

#[test]
fn the_overlay_needs_compose_2_24() {
    assert!(compose_supports_reset("2.26.1-4"));
    assert!(compose_supports_reset("2.24.0"));
    assert!(!compose_supports_reset("2.23.3"));
    assert!(!compose_supports_reset("1.29.2"));
    assert!(!compose_supports_reset(""));
}
