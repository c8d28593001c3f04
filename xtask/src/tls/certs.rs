//! Certificates of the TLS front door, without I/O beyond the files named: the names a server certificate
//! must carry, a local CA and the server certificates it signs (rcgen, ECDSA P-256), and the checks a
//! certificate and key must pass before nginx gets them (x509-parser). Shared with the acceptance test.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

/// A server certificate is renewed when it expires within this many days (and the CA likewise).
pub const RENEW_WITHIN_DAYS: i64 = 30;
/// Validity of a server certificate `up` makes: one year (browsers accept longer only from a local CA,
/// and `up` renews it anyway).
const SERVER_DAYS: i64 = 365;
/// Validity of the local CA: ten years, so users trust it once.
const CA_DAYS: i64 = 3650;

/// What went wrong, and the next step: the `error:` and `hint:` lines (the xtask's UserError).
pub type CertError = jhub_docker::HintedError;

/// A name a server certificate is valid for (a subject alternative name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Name {
    Dns(String),
    Ip(IpAddr),
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Name::Dns(name) => f.write_str(name),
            Name::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Whether `name` is a DNS host name a certificate can carry: labels of letters, digits and inner
/// hyphens, 1-63 characters each, 253 in all, optionally one leading `*.` wildcard label.
pub fn is_dns_name(name: &str) -> bool {
    let rest = name.strip_prefix("*.").unwrap_or(name);
    !rest.is_empty()
        && name.len() <= 253
        && rest.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
        // An all-numeric last label is a mistyped IP address, not a host name.
        && !rest.rsplit('.').next().is_some_and(|last| last.bytes().all(|byte| byte.is_ascii_digit()))
}

/// Parses one name of JHUB_PUBLIC_HOSTS: an IPv4 or IPv6 address (brackets allowed) or a DNS name.
pub fn parse_name(raw: &str) -> Result<Name, CertError> {
    let hint = "JHUB_PUBLIC_HOSTS lists host names or IP addresses separated by commas or spaces, \
                e.g. JHUB_PUBLIC_HOSTS=hub.example.org,192.168.1.20 (no scheme, port or path)";
    let unbracketed = raw.strip_prefix('[').and_then(|inner| inner.strip_suffix(']')).unwrap_or(raw);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Ok(Name::Ip(ip));
    }
    if raw.contains("://") || raw.contains('/') || raw.contains(':') {
        return Err(CertError::new(format!("JHUB_PUBLIC_HOSTS: `{raw}` is not a host name or IP address"), hint));
    }
    let lower = raw.to_ascii_lowercase();
    if !is_dns_name(&lower) {
        return Err(CertError::new(format!("JHUB_PUBLIC_HOSTS: `{raw}` is not a valid DNS name or IP address"), hint));
    }
    Ok(Name::Dns(lower))
}

/// Parses JHUB_PUBLIC_HOSTS (names separated by commas and/or white space; empty means none).
pub fn parse_public_hosts(value: &str) -> Result<Vec<Name>, CertError> {
    value.split(|c: char| c == ',' || c.is_whitespace()).filter(|part| !part.is_empty()).map(parse_name).collect()
}

/// The names of a self-signed server certificate: localhost, 127.0.0.1, ::1, the machine's host name
/// (when it is a valid DNS name) and every extra name, without duplicates.
pub fn server_names(host_name: Option<&str>, public_hosts: &[Name]) -> BTreeSet<Name> {
    let mut names: BTreeSet<Name> =
        [Name::Dns("localhost".to_string()), Name::Ip(IpAddr::from([127, 0, 0, 1])), Name::Ip(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]))]
            .into();
    if let Some(Ok(name)) = host_name.map(|name| parse_name(name.trim())) {
        names.insert(name);
    }
    names.extend(public_hosts.iter().cloned());
    names
}

/// What a certificate says about itself, as far as `up` cares.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub names: BTreeSet<Name>,
    pub not_before: i64,
    pub not_after: i64,
    /// The raw subject public key (the BIT STRING of the SubjectPublicKeyInfo).
    pub public_key: Vec<u8>,
    /// sha256 of the DER SubjectPublicKeyInfo, base64: what Chromium's `--ignore-certificate-errors-spki-list`
    /// and HPKP-style pins name. Read by the acceptance test, which shares this file.
    #[allow(dead_code)]
    pub spki_sha256: String,
}

impl CertInfo {
    pub fn expires_within(&self, now: OffsetDateTime, days: i64) -> bool {
        self.not_after <= (now + Duration::days(days)).unix_timestamp()
    }
}

/// Reads a file, saying which one and why it cannot be read.
fn read(path: &Path, what: &str, hint: &str) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|err| CertError::new(format!("cannot read the {what} {}: {err}", path.display()), hint))
}

/// The first certificate of a PEM file, parsed.
pub fn parse_cert_pem(pem_text: &str, path: &Path) -> Result<CertInfo, CertError> {
    let hint = "the file must hold a PEM certificate (-----BEGIN CERTIFICATE-----), the server's first";
    let block = pem_blocks(pem_text)
        .into_iter()
        .find(|(label, _)| label == "CERTIFICATE")
        .ok_or_else(|| CertError::new(format!("{} holds no PEM certificate", path.display()), hint))?;
    let (_, cert) = X509Certificate::from_der(&block.1)
        .map_err(|err| CertError::new(format!("{} holds a certificate that does not parse: {err}", path.display()), hint))?;
    let mut names = BTreeSet::new();
    for extension in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = extension.parsed_extension() {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(dns) => {
                        names.insert(Name::Dns(dns.to_ascii_lowercase()));
                    }
                    GeneralName::IPAddress(bytes) => {
                        let ip = match bytes.len() {
                            4 => Some(IpAddr::from(<[u8; 4]>::try_from(*bytes).expect("4 bytes"))),
                            16 => Some(IpAddr::from(<[u8; 16]>::try_from(*bytes).expect("16 bytes"))),
                            _ => None,
                        };
                        names.extend(ip.map(Name::Ip));
                    }
                    _ => {}
                }
            }
        }
    }
    let spki = cert.public_key().raw;
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        names,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        public_key: cert.public_key().subject_public_key.data.to_vec(),
        spki_sha256: base64(&Sha256::digest(spki)),
    })
}

/// Checks a certificate and its key as nginx will use them: both readable, the certificate parses and is
/// valid now, and (for a PKCS#8 key, what openssl, certbot and `up` write) the key is the certificate's.
/// A PKCS#1 or SEC1 key (`RSA PRIVATE KEY`, `EC PRIVATE KEY`) is matched by the `nginx -t` that follows.
pub fn check_pair(cert_path: &Path, key_path: &Path, now: OffsetDateTime) -> Result<CertInfo, CertError> {
    let cert_hint = "set JHUB_TLS_CERT in stack/.env to a readable PEM file with the server certificate (and its chain)";
    let key_hint = "set JHUB_TLS_KEY in stack/.env to a readable PEM file with the certificate's private key (unencrypted)";
    let cert_text = read(cert_path, "certificate", cert_hint)?;
    let key_text = read(key_path, "private key", key_hint)?;
    let info = parse_cert_pem(&cert_text, cert_path)?;
    let key_blocks = pem_blocks(&key_text);
    let Some((label, _)) = key_blocks.iter().find(|(label, _)| label.ends_with("PRIVATE KEY")) else {
        return Err(CertError::new(format!("{} holds no PEM private key", key_path.display()), key_hint));
    };
    if label == "ENCRYPTED PRIVATE KEY" {
        return Err(CertError::new(
            format!("{} holds an encrypted private key; nginx cannot ask for its passphrase", key_path.display()),
            "decrypt it once: `openssl pkey -in encrypted.key -out server.key`, then keep server.key mode 600",
        ));
    }
    if label == "PRIVATE KEY" {
        let key = KeyPair::from_pem(&key_text)
            .map_err(|err| CertError::new(format!("{} holds a private key that does not parse: {err}", key_path.display()), key_hint))?;
        if key.public_key_raw() != info.public_key.as_slice() {
            return Err(CertError::new(
                format!("the private key {} does not belong to the certificate {}", key_path.display(), cert_path.display()),
                "JHUB_TLS_KEY must be the key the certificate was issued for (compare `openssl x509 -noout -pubkey -in CERT` \
                 with `openssl pkey -pubout -in KEY`)",
            ));
        }
    }
    let now_ts = now.unix_timestamp();
    if info.not_after <= now_ts {
        return Err(CertError::new(
            format!("the certificate {} expired on {}", cert_path.display(), date(info.not_after)),
            "renew it with its CA and point JHUB_TLS_CERT / JHUB_TLS_KEY at the new files (or use JHUB_TLS=self-signed)",
        ));
    }
    if info.not_before > now_ts {
        return Err(CertError::new(
            format!("the certificate {} is not valid before {}", cert_path.display(), date(info.not_before)),
            "check this machine's clock, or use a certificate valid today",
        ));
    }
    Ok(info)
}

/// The files of the self-signed mode, all in one folder (stack/tls, git-ignored).
#[derive(Debug, Clone)]
pub struct SelfSignedFiles {
    pub dir: PathBuf,
}

impl SelfSignedFiles {
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
}

/// What `ensure_self_signed` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Why a new CA was made (None: the existing one was kept).
    pub new_ca: Option<String>,
    /// Why a new server certificate was issued (None: the existing one was kept).
    pub new_server: Option<String>,
}

/// Makes sure `files` holds a CA valid for more than RENEW_WITHIN_DAYS and a server certificate it signed
/// for exactly `names`, valid for more than RENEW_WITHIN_DAYS: keeps what qualifies, makes what does not
/// (the CA only when it is missing, unreadable or expiring; users trusted it). Keys are written mode 600.
pub fn ensure_self_signed(files: &SelfSignedFiles, names: &BTreeSet<Name>, now: OffsetDateTime) -> Result<Outcome, CertError> {
    let dir_hint = format!("check the permissions of {} (or remove it to start over)", files.dir.display());
    std::fs::create_dir_all(&files.dir)
        .map_err(|err| CertError::new(format!("cannot create {}: {err}", files.dir.display()), dir_hint.clone()))?;
    let ca_problem = match (std::fs::read_to_string(files.ca_cert()), std::fs::read_to_string(files.ca_key())) {
        (Ok(cert), Ok(key)) => match (parse_cert_pem(&cert, &files.ca_cert()), KeyPair::from_pem(&key)) {
            (Ok(info), Ok(key)) if key.public_key_raw() != info.public_key.as_slice() => Some("its key does not match".to_string()),
            (Ok(info), Ok(_)) if info.expires_within(now, RENEW_WITHIN_DAYS) => Some(format!("it expires on {}", date(info.not_after))),
            (Ok(_), Ok(_)) => None,
            (Err(err), _) => Some(err.message),
            (_, Err(err)) => Some(format!("its key does not parse: {err}")),
        },
        _ => Some("there was none".to_string()),
    };
    let new_ca = ca_problem.clone();
    if ca_problem.is_some() {
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|err| CertError::new(format!("cannot make a key: {err}"), ""))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "jhub-docker");
        dn.push(DnType::CommonName, format!("jhub-docker local CA {}", now.unix_timestamp()));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(CA_DAYS);
        let cert = params.self_signed(&key).map_err(|err| CertError::new(format!("cannot make the CA certificate: {err}"), ""))?;
        write_file(&files.ca_key(), &key.serialize_pem(), 0o600, &dir_hint)?;
        write_file(&files.ca_cert(), &cert.pem(), 0o644, &dir_hint)?;
    }
    let ca_pem = read(&files.ca_cert(), "CA certificate", &dir_hint)?;
    let ca_info = parse_cert_pem(&ca_pem, &files.ca_cert())?;
    let server_problem = if new_ca.is_some() {
        Some("the CA is new".to_string())
    } else {
        match (std::fs::read_to_string(files.server_cert()), std::fs::read_to_string(files.server_key())) {
            (Ok(cert), Ok(key)) => match (parse_cert_pem(&cert, &files.server_cert()), KeyPair::from_pem(&key)) {
                (Ok(info), Ok(key)) if key.public_key_raw() != info.public_key.as_slice() => Some("its key does not match".to_string()),
                (Ok(info), _) if info.issuer != ca_info.subject => Some("another CA signed it".to_string()),
                (Ok(info), _) if info.expires_within(now, RENEW_WITHIN_DAYS) => Some(format!("it expires on {}", date(info.not_after))),
                (Ok(info), _) if &info.names != names => Some(format!("its names changed ({} → {})", list(&info.names), list(names))),
                (Ok(_), Ok(_)) => None,
                (Err(err), _) => Some(err.message),
                (_, Err(err)) => Some(format!("its key does not parse: {err}")),
            },
            _ => Some("there was none".to_string()),
        }
    };
    if server_problem.is_some() {
        let ca_key_pem = read(&files.ca_key(), "CA key", &dir_hint)?;
        let ca_key = KeyPair::from_pem(&ca_key_pem)
            .map_err(|err| CertError::new(format!("the CA key {} does not parse: {err}", files.ca_key().display()), dir_hint.clone()))?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|err| {
            CertError::new(format!("the CA certificate {} cannot sign: {err}", files.ca_cert().display()), dir_hint.clone())
        })?;
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|err| CertError::new(format!("cannot make a key: {err}"), ""))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "jhub-docker");
        dn.push(DnType::CommonName, names.iter().find(|name| !matches!(name, Name::Ip(_))).map(Name::to_string).unwrap_or_default());
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .map(|name| match name {
                Name::Dns(dns) => dns
                    .as_str()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|err| CertError::new(format!("`{dns}` cannot be a certificate name: {err}"), "fix JHUB_PUBLIC_HOSTS")),
                Name::Ip(ip) => Ok(SanType::IpAddress(*ip)),
            })
            .collect::<Result<_, _>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(SERVER_DAYS);
        let cert =
            params.signed_by(&key, &issuer).map_err(|err| CertError::new(format!("cannot sign the server certificate: {err}"), ""))?;
        write_file(&files.server_key(), &key.serialize_pem(), 0o600, &dir_hint)?;
        write_file(&files.server_cert(), &cert.pem(), 0o644, &dir_hint)?;
    }
    Ok(Outcome { new_ca, new_server: server_problem })
}

/// Writes `text` to `path` with `mode`, through a temporary file renamed into place (a reader never sees
/// half a key, and the mode is set before any byte is written).
fn write_file(path: &Path, text: &str, mode: u32, hint: &str) -> Result<(), CertError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut file| file.write_all(text.as_bytes()).and_then(|()| file.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    result.map_err(|err| CertError::new(format!("cannot write {}: {err}", path.display()), hint))
}

/// The PEM blocks of a text: (label, DER bytes).
pub fn pem_blocks(text: &str) -> Vec<(String, Vec<u8>)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in text.lines().map(str::trim) {
        if let Some(label) = line.strip_prefix("-----BEGIN ").and_then(|rest| rest.strip_suffix("-----")) {
            current = Some((label.to_string(), String::new()));
        } else if line.starts_with("-----END ") {
            if let Some((label, body)) = current.take()
                && let Some(der) = unbase64(&body)
            {
                blocks.push((label, der));
            }
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
        }
    }
    blocks
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16) | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8) | u32::from(*chunk.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            out.push(if i <= chunk.len() { BASE64[(n >> shift) as usize & 63] as char } else { '=' });
        }
    }
    out
}

fn unbase64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for byte in text.bytes().filter(|byte| !byte.is_ascii_whitespace() && *byte != b'=') {
        let value = BASE64.iter().position(|c| *c == byte)? as u32;
        acc = (acc << 6) | value;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// A Unix time as a UTC date, for messages.
pub fn date(timestamp: i64) -> String {
    OffsetDateTime::from_unix_timestamp(timestamp).map(|t| t.date().to_string()).unwrap_or_else(|_| timestamp.to_string())
}

fn list(names: &BTreeSet<Name>) -> String {
    names.iter().map(Name::to_string).collect::<Vec<_>>().join(", ")
}
