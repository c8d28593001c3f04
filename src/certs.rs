//! Certificates of the TLS front door, without I/O beyond the files named: the names a server certificate
//! must carry, a local CA name-constrained to them and the server certificates it signs (rcgen, ECDSA
//! P-256), and the checks a certificate and key must pass before nginx gets them (x509-parser). `cargo
//! xtask up` and the test harness's front door (crates/harness) both make their certificates here.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, NameConstraints, SanType,
};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

/// A server certificate is renewed when it expires within this many days (and the CA likewise).
pub const RENEW_WITHIN_DAYS: i64 = 30;
/// Validity of a server certificate `up` makes: one year (browsers accept longer only from a local CA,
/// and `up` renews it anyway).
const SERVER_DAYS: i64 = 365;
/// Validity of the local CA: three years (1095 days). Clients trust it once for a deployment's life
/// (`up` makes a new one RENEW_WITHIN_DAYS before the end, and every client must then trust that one);
/// short enough that a copied ca.key stops being useful, which its name constraints already limit to
/// the stack's own names. README ("Serving other machines with TLS") states it.
pub const CA_DAYS: i64 = 1095;

/// What went wrong, and the next step: the `error:` and `hint:` lines (the xtask's UserError).
pub type CertError = crate::HintedError;

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

/// A permitted subtree of a CA's name constraints (RFC 5280, 4.2.1.10): what the CA may sign for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Subtree {
    /// A DNS name and every name made by adding labels on its left: `hub.example.org` permits
    /// `alice.hub.example.org` and `*.hub.example.org`, not `example.org` nor `xhub.example.org`.
    Dns(String),
    /// The addresses that agree with this one in the first `prefix` bits (32 or 128: this one alone).
    Ip(IpAddr, u8),
}

impl Subtree {
    /// Whether the subtree contains `name`, as a verifier applies it (DNS names compared without case).
    pub fn permits(&self, name: &Name) -> bool {
        match (self, name) {
            (Subtree::Dns(base), Name::Dns(dns)) => {
                let (base, dns) = (base.to_ascii_lowercase(), dns.to_ascii_lowercase());
                dns == base || dns.strip_suffix(&base).is_some_and(|left| left.ends_with('.'))
            }
            (Subtree::Ip(IpAddr::V4(base), prefix), Name::Ip(IpAddr::V4(ip))) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                u32::from(*base) & mask == u32::from(*ip) & mask
            }
            (Subtree::Ip(IpAddr::V6(base), prefix), Name::Ip(IpAddr::V6(ip))) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
                u128::from(*base) & mask == u128::from(*ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Subtree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subtree::Dns(name) => f.write_str(name),
            Subtree::Ip(ip, 32 | 128) => write!(f, "{ip}"),
            Subtree::Ip(ip, prefix) => write!(f, "{ip}/{prefix}"),
        }
    }
}

/// The permitted subtrees of a CA made for `names`: each DNS name (a `*.` name without its wildcard
/// label), which also permits the names under it, so the wildcard `*.HOST` that per-user origins need
/// is covered; and each address alone. `names` always holds localhost, 127.0.0.1 and ::1, so the CA
/// has subtrees of both kinds a TLS client checks (a kind without any would be unconstrained).
pub fn permitted_subtrees(names: &BTreeSet<Name>) -> BTreeSet<Subtree> {
    names
        .iter()
        .map(|name| match name {
            Name::Dns(dns) => Subtree::Dns(dns.strip_prefix("*.").unwrap_or(dns).to_string()),
            Name::Ip(ip @ IpAddr::V4(_)) => Subtree::Ip(*ip, 32),
            Name::Ip(ip @ IpAddr::V6(_)) => Subtree::Ip(*ip, 128),
        })
        .collect()
}

/// The names a CA constrained to `subtrees` may not sign for: a name is covered when a subtree of its own
/// kind contains it. (RFC 5280 leaves a kind without any subtree unconstrained; such a CA is not one
/// `up` keeps.)
pub fn uncovered<'a>(subtrees: &BTreeSet<Subtree>, names: &'a BTreeSet<Name>) -> Vec<&'a Name> {
    names.iter().filter(|name| !subtrees.iter().any(|subtree| subtree.permits(name))).collect()
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
    /// The permitted subtrees of a critical NameConstraints extension (a CA's); None without one. A
    /// non-critical one counts as none: a client that does not know the extension may ignore it.
    /// Excluded subtrees are not read: `up` writes none.
    pub name_constraints: Option<BTreeSet<Subtree>>,
    /// sha256 of the DER SubjectPublicKeyInfo, base64: what Chromium's `--ignore-certificate-errors-spki-list`
    /// and HPKP-style pins name. Read by the acceptance test's front door.
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
    let mut name_constraints = None;
    for extension in cert.extensions() {
        if let ParsedExtension::NameConstraints(constraints) = extension.parsed_extension()
            && extension.critical
        {
            let permitted = constraints.permitted_subtrees.iter().flatten().filter_map(|subtree| match &subtree.base {
                GeneralName::DNSName(dns) => Some(Subtree::Dns(dns.to_ascii_lowercase())),
                // An address and its mask, each 4 or 16 bytes; the prefix is the mask's leading ones.
                GeneralName::IPAddress(bytes) if bytes.len() == 8 => {
                    let prefix = u32::from_be_bytes(bytes[4..].try_into().expect("4 bytes")).leading_ones() as u8;
                    Some(Subtree::Ip(IpAddr::from(<[u8; 4]>::try_from(&bytes[..4]).expect("4 bytes")), prefix))
                }
                GeneralName::IPAddress(bytes) if bytes.len() == 32 => {
                    let prefix = u128::from_be_bytes(bytes[16..].try_into().expect("16 bytes")).leading_ones() as u8;
                    Some(Subtree::Ip(IpAddr::from(<[u8; 16]>::try_from(&bytes[..16]).expect("16 bytes")), prefix))
                }
                _ => None,
            });
            name_constraints = Some(permitted.collect());
        }
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
        name_constraints,
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

/// What `ensure_self_signed` did with the local CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaChange {
    /// The CA in place was kept: its key matches, it is valid for more than RENEW_WITHIN_DAYS, and its
    /// name constraints cover the names.
    Kept,
    /// There was no CA (neither ca.crt nor ca.key): one was made.
    Made,
    /// A CA was there and could not be kept (`why`): a new one replaced it, and its key replaced the old
    /// key. Clients that trusted the old one (`old_subject`, when it parsed) must trust the new one.
    Replaced { why: String, old_subject: Option<String> },
}

/// What `ensure_self_signed` did, and what `up` tells the user about the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ca: CaChange,
    /// Why a new server certificate was issued (None: the existing one was kept).
    pub new_server: Option<String>,
    /// The CA's last moment (Unix time).
    pub ca_not_after: i64,
    /// What the CA may sign for: its permitted subtrees.
    pub ca_permits: BTreeSet<Subtree>,
    /// The server certificate's last moment (Unix time).
    pub server_not_after: i64,
}

/// Why the CA in `files` cannot be kept for `names` at `now`, or None when it can. A CA is kept while it
/// can sign for every name, so clients trust it once; it is replaced when it cannot be used (missing
/// half, a key of another certificate, unparsable), when it expires within RENEW_WITHIN_DAYS, when it
/// has no name constraints (an older checkout's CA could sign for any name: keeping it would keep that
/// risk on every client that trusts it), or when its constraints do not cover a name (a server
/// certificate it signed would be refused by the clients that enforce them: OpenSSL, Firefox, Chromium).
fn ca_problem(files: &SelfSignedFiles, names: &BTreeSet<Name>, now: OffsetDateTime) -> Option<String> {
    let (cert, key) = match (std::fs::read_to_string(files.ca_cert()), std::fs::read_to_string(files.ca_key())) {
        (Ok(cert), Ok(key)) => (cert, key),
        (Ok(_), Err(err)) => return Some(format!("its key {} cannot be read: {err}", files.ca_key().display())),
        (Err(err), _) => return Some(format!("{} cannot be read: {err}", files.ca_cert().display())),
    };
    let info = match parse_cert_pem(&cert, &files.ca_cert()) {
        Ok(info) => info,
        Err(err) => return Some(err.message),
    };
    match KeyPair::from_pem(&key) {
        Err(err) => return Some(format!("its key does not parse: {err}")),
        Ok(key) if key.public_key_raw() != info.public_key.as_slice() => return Some("its key does not match".to_string()),
        Ok(_) => {}
    }
    if info.expires_within(now, RENEW_WITHIN_DAYS) {
        return Some(format!("it expires on {}", date(info.not_after)));
    }
    let Some(subtrees) = &info.name_constraints else {
        return Some("it could sign for any name: it was made before `up` constrained its CA to the stack's names".to_string());
    };
    let uncovered = uncovered(subtrees, names);
    if !uncovered.is_empty() {
        let shown: Vec<String> = uncovered.iter().map(|name| name.to_string()).collect();
        let permitted: Vec<String> = subtrees.iter().map(Subtree::to_string).collect();
        return Some(format!("its name constraints ({}) do not cover {}", permitted.join(", "), shown.join(", ")));
    }
    None
}

/// Makes sure `files` holds a CA valid for more than RENEW_WITHIN_DAYS whose name constraints cover
/// `names`, and a server certificate it signed for exactly `names`, valid for more than RENEW_WITHIN_DAYS:
/// keeps what qualifies, makes what does not (the CA only when `ca_problem` names a reason: users trusted
/// it). Keys are written mode 600.
pub fn ensure_self_signed(files: &SelfSignedFiles, names: &BTreeSet<Name>, now: OffsetDateTime) -> Result<Outcome, CertError> {
    let dir_hint = format!("check the permissions of {} (or remove it to start over)", files.dir.display());
    std::fs::create_dir_all(&files.dir)
        .map_err(|err| CertError::new(format!("cannot create {}: {err}", files.dir.display()), dir_hint.clone()))?;
    let ca_change = if !files.ca_cert().exists() && !files.ca_key().exists() {
        CaChange::Made
    } else {
        match ca_problem(files, names, now) {
            None => CaChange::Kept,
            Some(why) => {
                let old_subject = std::fs::read_to_string(files.ca_cert())
                    .ok()
                    .and_then(|pem| parse_cert_pem(&pem, &files.ca_cert()).ok())
                    .map(|info| info.subject);
                CaChange::Replaced { why, old_subject }
            }
        }
    };
    if ca_change != CaChange::Kept {
        let key =
            KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|err| CertError::new(format!("cannot make a key: {err}"), ""))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "jhub-docker");
        dn.push(DnType::CommonName, format!("jhub-docker local CA {}", now.unix_timestamp()));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        // Critical (rcgen marks it so, as RFC 5280 requires): a client that cannot apply it refuses the
        // chain rather than trusting the CA for every name.
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: permitted_subtrees(names)
                .into_iter()
                .map(|subtree| match subtree {
                    Subtree::Dns(dns) => GeneralSubtree::DnsName(dns),
                    Subtree::Ip(ip, prefix) => GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(ip, prefix)),
                })
                .collect(),
            excluded_subtrees: Vec::new(),
        });
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(CA_DAYS);
        let cert = params.self_signed(&key).map_err(|err| CertError::new(format!("cannot make the CA certificate: {err}"), ""))?;
        write_file(&files.ca_key(), &key.serialize_pem(), 0o600, &dir_hint)?;
        write_file(&files.ca_cert(), &cert.pem(), 0o644, &dir_hint)?;
    }
    let ca_pem = read(&files.ca_cert(), "CA certificate", &dir_hint)?;
    let ca_info = parse_cert_pem(&ca_pem, &files.ca_cert())?;
    let existing_server = std::fs::read_to_string(files.server_cert()).ok().and_then(|pem| parse_cert_pem(&pem, &files.server_cert()).ok());
    let server_problem = if ca_change != CaChange::Kept {
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
    let server_not_after = match (&server_problem, existing_server) {
        (None, Some(info)) => info.not_after,
        _ => issue_server_certificate(files, names, now, &ca_pem, ca_info.not_after, &dir_hint)?,
    };
    Ok(Outcome {
        ca: ca_change,
        new_server: server_problem,
        ca_not_after: ca_info.not_after,
        ca_permits: ca_info.name_constraints.unwrap_or_default(),
        server_not_after,
    })
}

/// Signs a server certificate for `names` with the CA in `files` and writes it and its new key; returns
/// its last moment: SERVER_DAYS from now, or the CA's end if that comes first (a certificate that
/// outlives its issuer only looks valid).
fn issue_server_certificate(
    files: &SelfSignedFiles,
    names: &BTreeSet<Name>,
    now: OffsetDateTime,
    ca_pem: &str,
    ca_not_after: i64,
    dir_hint: &str,
) -> Result<i64, CertError> {
    let ca_key_pem = read(&files.ca_key(), "CA key", dir_hint)?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)
        .map_err(|err| CertError::new(format!("the CA key {} does not parse: {err}", files.ca_key().display()), dir_hint))?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key)
        .map_err(|err| CertError::new(format!("the CA certificate {} cannot sign: {err}", files.ca_cert().display()), dir_hint))?;
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
    let ca_end = OffsetDateTime::from_unix_timestamp(ca_not_after).unwrap_or(now);
    params.not_after = (now + Duration::days(SERVER_DAYS)).min(ca_end);
    let not_after = params.not_after.unix_timestamp();
    let cert = params.signed_by(&key, &issuer).map_err(|err| CertError::new(format!("cannot sign the server certificate: {err}"), ""))?;
    write_file(&files.server_key(), &key.serialize_pem(), 0o600, dir_hint)?;
    write_file(&files.server_cert(), &cert.pem(), 0o644, dir_hint)?;
    Ok(not_after)
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
