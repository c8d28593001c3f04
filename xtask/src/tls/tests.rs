//! Unit tests of the TLS front door's certificate handling: names, the self-signed CA and server
//! certificate (made, kept, renewed, replaced), the CA's name constraints attacked with its own key and
//! checked by `openssl verify`, and every refusal of a bad certificate or key.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rcgen::{CertificateParams, DistinguishedName, DnType, Issuer, KeyPair, SanType};
use time::{Duration, OffsetDateTime};

use super::{Mode, compose_supports_reset, covers, exposure_warning, mode, require_wildcard, subdomain_host};
use jhub_docker::certs::{self, CaChange, Name, SelfSignedFiles, Subtree};

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
    assert!(outcome.ca == CaChange::Made && outcome.new_server.is_some(), "{outcome:?}");
    for key in [files.ca_key(), files.server_key()] {
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "{}", key.display());
    }
    let server = certs::check_pair(&files.server_cert(), &files.server_key(), now()).unwrap();
    assert_eq!(server.names, wanted);
    let ca = certs::parse_cert_pem(&std::fs::read_to_string(files.ca_cert()).unwrap(), &files.ca_cert()).unwrap();
    assert_eq!(server.issuer, ca.subject);
    assert!(server.not_after > (now() + Duration::days(300)).unix_timestamp());
    assert_eq!(outcome.server_not_after, server.not_after);
    // The CA lives three years, and is constrained (critically) to the names it was made for.
    assert_eq!(outcome.ca_not_after, ca.not_after);
    assert!((ca.not_after - (now() + Duration::days(certs::CA_DAYS)).unix_timestamp()).abs() < 60, "{}", certs::date(ca.not_after));
    let shown: Vec<String> =
        ca.name_constraints.as_ref().expect("a critical NameConstraints extension").iter().map(Subtree::to_string).collect();
    assert_eq!(shown, ["buildhost", "hub.example.org", "localhost", "127.0.0.1", "192.168.1.20", "::1"]);
    assert_eq!(outcome.ca_permits, ca.name_constraints.unwrap());
    // ECDSA P-256: an uncompressed point is 65 bytes.
    assert_eq!(server.public_key.len(), 65);
    assert_eq!(server.spki_sha256.len(), 44);
}

#[test]
fn self_signed_keeps_what_is_valid_and_renews_on_changed_names_or_near_expiry_keeping_the_ca() {
    let scratch = Scratch::new("renew");
    let files = SelfSignedFiles { dir: scratch.0.clone() };
    let wanted = names(&["hub.example.org", "192.168.1.20"]);
    certs::ensure_self_signed(&files, &wanted, now()).unwrap();
    let ca_before = std::fs::read(files.ca_cert()).unwrap();
    let server_before = std::fs::read(files.server_cert()).unwrap();

    let kept = certs::ensure_self_signed(&files, &wanted, now()).unwrap();
    assert!(kept.ca == CaChange::Kept && kept.new_server.is_none(), "{kept:?}");
    assert_eq!(std::fs::read(files.server_cert()).unwrap(), server_before);

    // Names that the CA's constraints still cover: one fewer address, and the wildcard of a name.
    let fewer = names(&["hub.example.org"]);
    let renamed = certs::ensure_self_signed(&files, &fewer, now()).unwrap();
    assert_eq!(renamed.ca, CaChange::Kept, "{renamed:?}");
    assert!(renamed.new_server.as_deref().is_some_and(|why| why.contains("names changed")), "{renamed:?}");
    assert_eq!(std::fs::read(files.ca_cert()).unwrap(), ca_before, "the CA must be kept");
    let wildcard = names(&["hub.example.org", "*.hub.example.org", "alice.localhost"]);
    let renamed = certs::ensure_self_signed(&files, &wildcard, now()).unwrap();
    assert_eq!(renamed.ca, CaChange::Kept, "{renamed:?}");
    assert_eq!(std::fs::read(files.ca_cert()).unwrap(), ca_before, "the CA must be kept");
    assert!(
        certs::check_pair(&files.server_cert(), &files.server_key(), now()).unwrap().names.contains(&Name::Dns("*.hub.example.org".into()))
    );

    // 340 days later the server certificate (365 days) expires within 30 days; the CA (3 years) does not.
    let later = now() + Duration::days(340);
    let renewed = certs::ensure_self_signed(&files, &wildcard, later).unwrap();
    assert_eq!(renewed.ca, CaChange::Kept, "{renewed:?}");
    assert!(renewed.new_server.as_deref().is_some_and(|why| why.contains("expires")), "{renewed:?}");
    assert_eq!(std::fs::read(files.ca_cert()).unwrap(), ca_before, "the CA must be kept");

    // A server key that is not the certificate's is replaced too.
    std::fs::write(files.server_key(), KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let fixed = certs::ensure_self_signed(&files, &wildcard, now()).unwrap();
    assert!(fixed.new_server.as_deref().is_some_and(|why| why.contains("key does not match")), "{fixed:?}");
}

#[test]
fn self_signed_replaces_a_ca_whose_constraints_do_not_cover_new_names() {
    let scratch = Scratch::new("outside");
    let files = SelfSignedFiles { dir: scratch.0.clone() };
    certs::ensure_self_signed(&files, &names(&["hub.example.org"]), now()).unwrap();
    let old_subject = certs::parse_cert_pem(&std::fs::read_to_string(files.ca_cert()).unwrap(), &files.ca_cert()).unwrap().subject;
    let wanted = names(&["hub.example.org", "lab.example.net", "10.0.0.5"]);
    let outcome = certs::ensure_self_signed(&files, &wanted, now()).unwrap();
    let CaChange::Replaced { why, old_subject: Some(subject) } = &outcome.ca else { panic!("the CA must be replaced: {outcome:?}") };
    assert!(why.contains("do not cover lab.example.net, 10.0.0.5"), "{why}");
    assert_eq!(subject, &old_subject);
    assert_eq!(outcome.new_server.as_deref(), Some("the CA is new"));
    let ca = certs::parse_cert_pem(&std::fs::read_to_string(files.ca_cert()).unwrap(), &files.ca_cert()).unwrap();
    assert!(certs::uncovered(ca.name_constraints.as_ref().unwrap(), &wanted).is_empty());
    // The server certificate the new CA signed verifies for the new names.
    for name in [Name::Dns("lab.example.net".into()), Name::Ip("10.0.0.5".parse().unwrap())] {
        let (ok, said) = openssl_verify(&files.ca_cert(), &files.server_cert(), Some(&name));
        assert!(ok, "{name}: {said}");
    }
}

#[test]
fn self_signed_replaces_an_unconstrained_ca_of_an_older_checkout() {
    let scratch = Scratch::new("older");
    let files = SelfSignedFiles { dir: scratch.0.clone() };
    // The CA as `up` made it before name constraints: ten years, any name.
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, "jhub-docker local CA 1700000000");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.not_before = now() - Duration::days(400);
    params.not_after = now() + Duration::days(3650 - 400);
    std::fs::write(files.ca_cert(), params.self_signed(&key).unwrap().pem()).unwrap();
    std::fs::write(files.ca_key(), key.serialize_pem()).unwrap();
    let old_key = std::fs::read(files.ca_key()).unwrap();

    let outcome = certs::ensure_self_signed(&files, &names(&[]), now()).unwrap();
    let CaChange::Replaced { why, old_subject } = &outcome.ca else { panic!("the old CA must be replaced: {outcome:?}") };
    assert!(why.contains("could sign for any name"), "{why}");
    assert!(old_subject.as_deref().is_some_and(|subject| subject.contains("jhub-docker local CA 1700000000")), "{old_subject:?}");
    assert_ne!(std::fs::read(files.ca_key()).unwrap(), old_key, "the old CA's key must be gone");
    let ca = certs::parse_cert_pem(&std::fs::read_to_string(files.ca_cert()).unwrap(), &files.ca_cert()).unwrap();
    assert!(ca.name_constraints.is_some());
}

#[test]
fn self_signed_replaces_a_ca_near_its_end_and_no_server_certificate_outlives_its_ca() {
    let scratch = Scratch::new("caend");
    let files = SelfSignedFiles { dir: scratch.0.clone() };
    let first = certs::ensure_self_signed(&files, &names(&[]), now()).unwrap();
    // 100 days before the CA's end, a renewed server certificate ends with the CA, not a year later.
    let late = now() + Duration::days(certs::CA_DAYS - 100);
    std::fs::remove_file(files.server_cert()).unwrap();
    let capped = certs::ensure_self_signed(&files, &names(&[]), late).unwrap();
    assert_eq!(capped.ca, CaChange::Kept, "{capped:?}");
    assert_eq!(capped.server_not_after, first.ca_not_after);
    // Within 30 days of its end, the CA is replaced (a warning for `up`), and the server certificate with it.
    let end = now() + Duration::days(certs::CA_DAYS - 20);
    let replaced = certs::ensure_self_signed(&files, &names(&[]), end).unwrap();
    assert!(matches!(&replaced.ca, CaChange::Replaced { why, .. } if why.contains("expires on")), "{replaced:?}");
    assert_eq!(replaced.new_server.as_deref(), Some("the CA is new"));
}

#[test]
fn constraints_are_dns_subtrees_and_single_addresses() {
    let subtrees = certs::permitted_subtrees(&names(&["*.lab.example.org", "hub.example.org", "192.168.1.20", "fe80::1"]));
    let shown: Vec<String> = subtrees.iter().map(Subtree::to_string).collect();
    assert_eq!(shown, ["buildhost", "hub.example.org", "lab.example.org", "localhost", "127.0.0.1", "192.168.1.20", "::1", "fe80::1"]);
    let permits = |name: &str| certs::uncovered(&subtrees, &[certs::parse_name(name).unwrap()].into()).is_empty();
    for inside in ["hub.example.org", "HUB.example.org", "alice.hub.example.org", "*.hub.example.org", "*.localhost", "a.lab.example.org"] {
        assert!(permits(inside), "{inside}");
    }
    for outside in ["example.org", "xhub.example.org", "hub.example.org.evil.com", "bank.example.com", "127.0.0.2", "fe80::2", "::"] {
        assert!(!permits(outside), "{outside}");
    }
    assert!(Subtree::Ip("10.1.0.0".parse().unwrap(), 16).permits(&Name::Ip("10.1.200.3".parse().unwrap())));
    assert!(!Subtree::Ip("10.1.0.0".parse().unwrap(), 16).permits(&Name::Ip("10.2.0.1".parse().unwrap())));
    assert!(Subtree::Ip("::".parse().unwrap(), 0).permits(&Name::Ip("2001:db8::1".parse().unwrap())));
    assert!(!Subtree::Ip("0.0.0.0".parse().unwrap(), 0).permits(&Name::Ip("2001:db8::1".parse().unwrap())), "kinds never mix");
}

#[test]
fn self_signed_replaces_a_missing_ca_and_reissues_the_server_certificate() {
    let scratch = Scratch::new("newca");
    let files = SelfSignedFiles { dir: scratch.0.clone() };
    certs::ensure_self_signed(&files, &names(&[]), now()).unwrap();
    std::fs::remove_file(files.ca_key()).unwrap();
    let outcome = certs::ensure_self_signed(&files, &names(&[]), now()).unwrap();
    assert!(
        matches!(&outcome.ca, CaChange::Replaced { why, .. } if why.contains("cannot be read"))
            && outcome.new_server.as_deref() == Some("the CA is new"),
        "{outcome:?}"
    );
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

/// `openssl verify` of `leaf` with `ca` as the only trust anchor (no system store), as a TLS client of
/// `name` would: the chain, the server purpose, the host name or address (when given), and the CA's name
/// constraints. Returns (accepted, what openssl said). OpenSSL enforces the constraints of a trust
/// anchor, as Chromium, Firefox and Go do.
fn openssl_verify(ca: &Path, leaf: &Path, name: Option<&Name>) -> (bool, String) {
    let name_check = match name {
        Some(Name::Dns(dns)) => vec!["-verify_hostname".to_string(), dns.clone()],
        Some(Name::Ip(ip)) => vec!["-verify_ip".to_string(), ip.to_string()],
        None => Vec::new(),
    };
    let output = Command::new("openssl")
        .args(["verify", "-no-CApath", "-no-CAstore", "-purpose", "sslserver", "-CAfile"])
        .arg(ca)
        .args(name_check)
        .arg(leaf)
        .output()
        .unwrap_or_else(|err| panic!("cannot run `openssl verify` ({err}): this test needs the openssl command (apt-get install openssl)"));
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)).trim().to_string();
    (output.status.success(), said)
}

/// A certificate for `san` (and, when `san` is None, only the common name `cn`) signed with the CA in
/// `files`, written to `dir/<stem>.pem`: what anyone holding ca.key can make.
fn sign_with_the_ca(files: &SelfSignedFiles, dir: &Path, stem: &str, cn: &str, san: Option<&Name>) -> PathBuf {
    let ca_pem = std::fs::read_to_string(files.ca_cert()).unwrap();
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(files.ca_key()).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).unwrap();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.subject_alt_names = san
        .map(|name| match name {
            Name::Dns(dns) => SanType::DnsName(dns.as_str().try_into().unwrap()),
            Name::Ip(ip) => SanType::IpAddress(*ip),
        })
        .into_iter()
        .collect();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now() - Duration::hours(1);
    params.not_after = now() + Duration::days(30);
    let cert = params.signed_by(&KeyPair::generate().unwrap(), &issuer).unwrap();
    let path = dir.join(format!("{stem}.pem"));
    std::fs::write(&path, cert.pem()).unwrap();
    path
}

/// The attack: someone copied stack/tls/ca.key (every client trusts ca.crt system-wide, as the README
/// says to). With it they sign certificates for names that are not this stack's and present them to a
/// client, which verifies them with ca.crt as its only trust anchor. The CA's name constraints must make
/// the client refuse every one ("permitted subtree violation"), while the stack's own certificate, and
/// the wildcard and subdomain names a per-user-origin set-up needs, still verify. The names here are
/// certificate content only: nothing is contacted.
#[test]
fn a_stolen_ca_key_cannot_sign_for_names_outside_the_stack() {
    let scratch = Scratch::new("attack");
    let files = SelfSignedFiles { dir: scratch.0.join("tls") };
    let wanted = names(&["hub.example.org", "192.168.1.20", "*.lab.example.org"]);
    certs::ensure_self_signed(&files, &wanted, now()).unwrap();

    let forged: Vec<(&str, Option<Name>)> = vec![
        ("bank.example.com", Some(Name::Dns("bank.example.com".into()))),
        // The parent of a permitted name, and a name that only ends with the same letters.
        ("example.org", Some(Name::Dns("example.org".into()))),
        ("xhub.example.org", Some(Name::Dns("xhub.example.org".into()))),
        ("203.0.113.9", Some(Name::Ip("203.0.113.9".parse().unwrap()))),
        // The neighbour of a permitted address, and an IPv6 address.
        ("192.168.1.21", Some(Name::Ip("192.168.1.21".parse().unwrap()))),
        ("2001:db8::9", Some(Name::Ip("2001:db8::9".parse().unwrap()))),
        // No subject alternative name: OpenSSL then checks the common name as the host name.
        ("bank.example.com", None),
    ];
    let mut accepted = Vec::new();
    for (index, (cn, san)) in forged.iter().enumerate() {
        let leaf = sign_with_the_ca(&files, &scratch.0, &format!("forged-{index}"), cn, san.as_ref());
        let target = san.clone().unwrap_or_else(|| Name::Dns(cn.to_string()));
        let (ok, said) = openssl_verify(&files.ca_cert(), &leaf, Some(&target));
        eprintln!("forged {target} ({}): openssl verify said: {said}", if san.is_some() { "SAN" } else { "CN only" });
        if ok || !said.contains("permitted subtree violation") {
            accepted.push(format!("{target}: {said}"));
        }
    }
    assert!(
        accepted.is_empty(),
        "a certificate signed with the stolen CA key was not refused as a name-constraint violation:\n{}",
        accepted.join("\n")
    );

    for name in &wanted {
        let (ok, said) = openssl_verify(&files.ca_cert(), &files.server_cert(), Some(name));
        assert!(ok, "the stack's own certificate must verify for {name}; openssl said: {said}");
    }
    // What per-user origins (`<user>.HOST`) need: the CA can issue the wildcard of each DNS name, and
    // names under it.
    let subdomains = ["*.hub.example.org", "alice.hub.example.org", "alice.lab.example.org", "*.hub.localhost", "alice.localhost"];
    for (index, name) in subdomains.iter().enumerate() {
        let leaf = sign_with_the_ca(&files, &scratch.0, &format!("subdomain-{index}"), name, Some(&Name::Dns(name.to_string())));
        let host = Name::Dns(name.replace('*', "alice"));
        let (ok, said) = openssl_verify(&files.ca_cert(), &leaf, Some(&host));
        assert!(ok, "a certificate for {name} must verify for {host}; openssl said: {said}");
    }
    // `*.localhost` is within the constraints too; OpenSSL (like browsers) matches no host name against a
    // wildcard over a single label, so its chain is checked without one.
    let leaf = sign_with_the_ca(&files, &scratch.0, "subdomain-localhost", "*.localhost", Some(&Name::Dns("*.localhost".into())));
    let (ok, said) = openssl_verify(&files.ca_cert(), &leaf, None);
    assert!(ok, "a certificate for *.localhost must be within the constraints; openssl said: {said}");
}

fn hosts(list: &str) -> Vec<Name> {
    certs::parse_public_hosts(list).unwrap()
}

#[test]
fn subdomains_are_on_whenever_tls_has_a_host_with_a_dot() {
    // The default: the first DNS name with a dot, skipping addresses, single labels and wildcards.
    let chosen = subdomain_host(Mode::SelfSigned, "", &hosts("192.168.1.20,myhost,*.lab.example.org,hub.example.org,b.example.org"));
    assert_eq!(chosen.unwrap().as_deref(), Some("hub.example.org"));
    assert_eq!(subdomain_host(Mode::Files, "", &hosts("hub.localhost")).unwrap().as_deref(), Some("hub.localhost"));
    assert_eq!(subdomain_host(Mode::SelfSigned, "true", &hosts("hub.localhost")).unwrap().as_deref(), Some("hub.localhost"));
    // Off by default without TLS or without such a name; off when asked.
    assert_eq!(subdomain_host(Mode::Off, "", &hosts("hub.example.org")).unwrap(), None);
    assert_eq!(subdomain_host(Mode::SelfSigned, "", &hosts("192.168.1.20,myhost")).unwrap(), None);
    assert_eq!(subdomain_host(Mode::SelfSigned, "false", &hosts("hub.example.org")).unwrap(), None);
}

#[test]
fn subdomains_asked_for_without_tls_or_a_host_are_refused() {
    let refused = [
        (Mode::Off, "true", "hub.example.org", "needs JHUB_TLS"),
        (Mode::SelfSigned, "true", "", "names no host with a dot"),
        (Mode::SelfSigned, "yes", "myhost,10.0.0.1", "names no host with a dot"),
        (Mode::SelfSigned, "maybe", "hub.example.org", "JHUB_SUBDOMAINS=maybe is neither true nor false"),
    ];
    for (tls, setting, public_hosts, said) in refused {
        let err = subdomain_host(tls, setting, &hosts(public_hosts)).unwrap_err();
        assert!(err.message.contains(said), "JHUB_SUBDOMAINS={setting} with {public_hosts:?}: {}", err.message);
        assert!(!err.hint.is_empty());
    }
}

#[test]
fn exposure_beyond_loopback_without_subdomains_warns() {
    for loopback in ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"] {
        assert_eq!(exposure_warning(loopback, Mode::Off, false), None, "{loopback}");
    }
    assert_eq!(exposure_warning("0.0.0.0", Mode::SelfSigned, true), None);
    for (address, tls) in [("0.0.0.0", Mode::Off), ("192.168.1.20", Mode::SelfSigned), ("::", Mode::Files)] {
        let (message, hint) = exposure_warning(address, tls, false).unwrap();
        assert!(message.contains(address) && message.contains("as any admin who opens it"), "{message}");
        assert!(hint.contains("*.hub.example.org"), "{hint}");
    }
}

/// With per-user origins the server certificate also names `*.HOST`: a CA made for HOST alone is kept
/// (the wildcard lies in HOST's subtree), and `openssl verify` accepts the certificate for a user's name
/// and for an escaped one JupyterHub makes (`u-bobsmith--…`), but not for a name two labels down.
#[test]
fn the_wildcard_for_users_is_signed_by_the_ca_kept_for_host() {
    let scratch = Scratch::new("wildcard");
    let files = SelfSignedFiles { dir: scratch.0.join("tls") };
    certs::ensure_self_signed(&files, &names(&["hub.localhost"]), now()).unwrap();
    let outcome = certs::ensure_self_signed(&files, &names(&["hub.localhost", "*.hub.localhost"]), now()).unwrap();
    assert_eq!(outcome.ca, CaChange::Kept);
    assert!(outcome.new_server.as_deref().is_some_and(|why| why.contains("names changed")), "{:?}", outcome.new_server);
    for user in ["alice.hub.localhost", "u-bobsmith--1a2b3c4.hub.localhost", "hub.localhost"] {
        let (ok, said) = openssl_verify(&files.ca_cert(), &files.server_cert(), Some(&Name::Dns(user.into())));
        assert!(ok, "{user}: {said}");
    }
    let (ok, said) = openssl_verify(&files.ca_cert(), &files.server_cert(), Some(&Name::Dns("a.b.hub.localhost".into())));
    assert!(!ok, "a.b.hub.localhost: {said}");
}

#[test]
fn files_for_per_user_origins_must_name_the_wildcard() {
    let cert = Path::new("/etc/ssl/hub.pem");
    let has = |list: &str| -> BTreeSet<Name> { hosts(list).into_iter().collect() };
    assert!(require_wildcard(&has("hub.example.org,*.hub.example.org"), "hub.example.org", cert).is_ok());
    for list in ["hub.example.org", "hub.example.org,*.example.org", "*.lab.hub.example.org"] {
        let err = require_wildcard(&has(list), "hub.example.org", cert).unwrap_err();
        assert_eq!(err.message, "/etc/ssl/hub.pem does not name *.hub.example.org, which per-user origins need (JHUB_SUBDOMAINS)");
        assert!(err.hint.contains("JHUB_SUBDOMAINS=false"), "{}", err.hint);
    }
}
