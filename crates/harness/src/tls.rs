//! The TLS front door under test: a local CA and server certificate made with the xtask's own code
//! (xtask/src/tls/certs.rs), and the checks only the real nginx can answer: the 301 from port 80, which
//! TLS versions it accepts, HTTP/2, Secure cookies, a 50 MB upload through the Lab, and the client's
//! address in the hub's log.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, ensure};
use serde_json::json;

use crate::browser::Browser;
use crate::stack::Stack;
use jhub_docker::certs::{self, SelfSignedFiles};

/// The front door of one test stack: its ports, its CA and the pin of its server key.
#[derive(Debug, Clone)]
pub struct Front {
    pub https_port: u16,
    pub http_port: u16,
    pub files: SelfSignedFiles,
    /// base64 sha256 of the server certificate's SubjectPublicKeyInfo: the only key Chromium accepts
    /// without a chain to its own store (`--ignore-certificate-errors-spki-list`).
    pub spki_sha256: String,
    /// With per-user origins, the hub's host name (SUBDOMAIN_HOST): the certificate also names it and
    /// `*.` it, as `cargo xtask up` makes it for JHUB_SUBDOMAINS.
    pub subdomain_host: Option<String>,
}

/// The hub's name in the per-user-origins set-up of the tests: Chromium and curl resolve every
/// `*.localhost` name to loopback, so users' names need no DNS, and two labels leave room for the
/// wildcard (`*.localhost` itself is refused by OpenSSL's and Chromium's name matching).
pub const SUBDOMAIN_HOST: &str = "hub.localhost";

impl Front {
    /// A CA and server certificate (localhost, 127.0.0.1, ::1, and with `subdomains` SUBDOMAIN_HOST and
    /// `*.SUBDOMAIN_HOST`) under `folder/tls`, as `up` makes them.
    pub fn make(folder: &Path, subdomains: bool) -> Result<Front> {
        let files = SelfSignedFiles { dir: folder.join("tls") };
        let subdomain_host = subdomains.then(|| SUBDOMAIN_HOST.to_string());
        let extra: Vec<certs::Name> =
            subdomain_host.iter().flat_map(|host| [certs::Name::Dns(host.clone()), certs::Name::Dns(format!("*.{host}"))]).collect();
        let names: BTreeSet<_> = certs::server_names(None, &extra);
        let now = time::OffsetDateTime::now_utc();
        certs::ensure_self_signed(&files, &names, now).map_err(|err| anyhow!("{err}"))?;
        let info = certs::check_pair(&files.server_cert(), &files.server_key(), now).map_err(|err| anyhow!("{err}"))?;
        Ok(Front {
            https_port: crate::stack::free_port()?,
            http_port: crate::stack::free_port()?,
            files,
            spki_sha256: info.spki_sha256,
            subdomain_host,
        })
    }

    /// The host (and port) browsers reach the hub at: SUBDOMAIN_HOST with per-user origins, else localhost.
    pub fn hub_authority(&self) -> String {
        format!("{}:{}", self.subdomain_host.as_deref().unwrap_or("localhost"), self.https_port)
    }

    /// Chromium's flag that trusts this server key and nothing else beyond its own store; and HTTP/1.1
    /// for the browser. Why: the browser runs on the Docker host, where stopping a user container
    /// removes its veth interface; Chromium on Linux takes that as a network change and closes its
    /// HTTP/2 sessions, failing the very request that stopped the server (seen: the home page's stop
    /// `DELETE` ended as status 0, nginx logged 499, the hub answered 204). HTTP/1.1 requests in flight
    /// survive it; clients on other machines see no such change. HTTP/2 itself is checked by ALPN.
    pub fn chromium_args(&self) -> Vec<String> {
        vec![format!("--ignore-certificate-errors-spki-list={}", self.spki_sha256), "--disable-http2".to_string()]
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.files.ca_cert()
    }
}

/// Port 80 answers `http://…/hub/login?x=1` with a 301 to the same host, path and query on https.
pub async fn redirects_to_https(front: &Front) -> Result<()> {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(Duration::from_secs(10)).build()?;
    let url = format!("http://127.0.0.1:{}/hub/login?x=1", front.http_port);
    let response = http.get(&url).header("Host", format!("localhost:{}", front.http_port)).send().await?;
    let location = response.headers().get("location").and_then(|value| value.to_str().ok()).unwrap_or_default().to_string();
    let expected = format!("https://localhost:{}/hub/login?x=1", front.https_port);
    ensure!(
        response.status().as_u16() == 301 && location == expected,
        "GET {url} (Host: localhost:{}) answered {} with Location `{location}`, expected 301 to {expected}",
        front.http_port,
        response.status()
    );
    progress!("port 80 → 301 {location}");
    Ok(())
}

/// `openssl s_client` against the front door with `args`; returns (succeeded, everything it printed).
fn s_client(front: &Front, args: &[&str]) -> Result<(bool, String)> {
    s_client_for(front, "localhost", args)
}

/// `openssl s_client` against the front door as a client of `name` (SNI); returns (succeeded, output).
fn s_client_for(front: &Front, name: &str, args: &[&str]) -> Result<(bool, String)> {
    let connect = format!("127.0.0.1:{}", front.https_port);
    let ca = front.ca_cert();
    let output = Command::new("openssl")
        .args(["s_client", "-connect", &connect, "-servername", name, "-CAfile"])
        .arg(&ca)
        .arg("-verify_return_error")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run `openssl s_client`\nhint: apt-get install -y openssl")?;
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Ok((output.status.success(), said))
}

/// TLS 1.1 is refused by the server (the client offers it: OpenSSL's security level 0 allows it), 1.2 and
/// 1.3 are accepted with a certificate that verifies against the CA alone, and ALPN picks HTTP/2.
pub fn tls_versions(front: &Front) -> Result<()> {
    let (ok, said) = s_client(front, &["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"])?;
    ensure!(
        !ok && said.contains("alert protocol version"),
        "a TLS 1.1 handshake should end in the server's protocol_version alert; openssl said:\n{said}"
    );
    progress!("TLS 1.1: refused ({})", said.lines().find(|line| line.contains("alert")).unwrap_or("").trim());
    for (flag, version) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
        let (ok, said) = s_client(front, &[flag, "-alpn", "h2,http/1.1"])?;
        let session = said.lines().find(|line| line.starts_with("New, ")).unwrap_or("").trim().to_string();
        ensure!(
            ok && session.starts_with(&format!("New, {version},")) && said.contains("Verify return code: 0 (ok)"),
            "a {version} handshake verified against the CA should succeed; openssl said:\n{said}"
        );
        ensure!(said.contains("ALPN protocol: h2"), "nginx should offer HTTP/2 over {version}; openssl said:\n{said}");
        progress!("{version}: accepted, verified against the test CA alone, ALPN h2 ({session})");
    }
    Ok(())
}

/// With per-user origins: nginx's certificate verifies, against the test's CA alone (whose name
/// constraints OpenSSL enforces), for the hub's name and for each user's name under it (`labels`).
pub fn user_names_verify(front: &Front, labels: &[String]) -> Result<()> {
    let host = front.subdomain_host.as_deref().ok_or_else(|| anyhow!("the front door has no per-user origins"))?;
    let names = std::iter::once(host.to_string()).chain(labels.iter().map(|label| format!("{label}.{host}")));
    for name in names {
        let (ok, said) = s_client_for(front, &name, &["-verify_hostname", &name])?;
        ensure!(
            ok && said.contains("Verify return code: 0 (ok)"),
            "the certificate should verify for {name} against the test CA; openssl said:\n{said}"
        );
        progress!("TLS for {name}: verified against the test CA alone");
    }
    Ok(())
}

/// The hub's cookies reach `browser` (on a /hub/ page) with the Secure flag.
pub async fn hub_cookies_are_secure(browser: &Browser) -> Result<()> {
    let cookies = browser.client.get_all_cookies().await?;
    let hub: Vec<_> = cookies.iter().filter(|cookie| cookie.name().starts_with("jupyterhub-")).collect();
    ensure!(!hub.is_empty(), "no jupyterhub-* cookie is visible on {}", browser.url().await?);
    for cookie in &hub {
        ensure!(cookie.secure() == Some(true), "the cookie {} came without Secure over https", cookie.name());
    }
    let names: Vec<&str> = hub.iter().map(|cookie| cookie.name()).collect();
    progress!("Secure cookies: {names:?}");
    Ok(())
}

/// From alice's Lab page: one contents API PUT of a 50 MiB file (base64 in JSON, about 67 MB on the
/// wire, through nginx's body limit), then its size as the server reports it.
pub async fn upload_50mb(alice: &Browser) -> Result<()> {
    const SIZE: u64 = 50 * 1024 * 1024;
    let answer = alice
        .js(
            r#"
            const size = arguments[0];
            return (async () => {
            const cookie = document.cookie.split('; ').find(c => c.startsWith('_xsrf='));
            const base = location.pathname.replace(/\/lab.*$/, '/');
            const bytes = new Uint8Array(size);
            for (let i = 0; i < size; i++) { bytes[i] = (i * 2654435761) >>> 24; }
            const content = await new Promise((resolve, reject) => {
                const reader = new FileReader();
                reader.onload = () => resolve(reader.result.slice(reader.result.indexOf(',') + 1));
                reader.onerror = () => reject(reader.error);
                reader.readAsDataURL(new Blob([bytes]));
            });
            const headers = { 'Content-Type': 'application/json' };
            if (cookie) { headers['X-XSRFToken'] = cookie.slice('_xsrf='.length); }
            const started = performance.now();
            const put = await fetch(`${base}api/contents/upload-50mb.bin`, {
                method: 'PUT', headers, body: JSON.stringify({ type: 'file', format: 'base64', content }),
            });
            const seconds = (performance.now() - started) / 1000;
            const putBody = await put.text();
            // Cookie-authenticated API calls need the XSRF header, reads included.
            const model = await fetch(`${base}api/contents/upload-50mb.bin?content=0`, { headers }).then(r => r.json());
            return { status: put.status, body: putBody.slice(0, 300), size: model.size, seconds, sent: content.length };
            })();
            "#,
            vec![json!(SIZE)],
        )
        .await?;
    let status = answer["status"].as_u64().unwrap_or_default();
    ensure!(status == 201 || status == 200, "the 50 MiB upload answered {status}: {}", answer["body"]);
    ensure!(answer["size"].as_u64() == Some(SIZE), "the uploaded file has size {} on the server, expected {SIZE}", answer["size"]);
    progress!(
        "50 MiB upload through the Lab: {status}, {} bytes of JSON in {:.1} s, size on the server {}",
        answer["sent"],
        answer["seconds"].as_f64().unwrap_or_default(),
        answer["size"]
    );
    Ok(())
}

/// The hub logs the client address nginx saw (its access log's first field), never nginx's own address.
pub async fn hub_logs_client_address(stack: &Stack) -> Result<()> {
    let nginx_ip = stack
        .compose(&["exec", "-T", "nginx", "sh", "-c", "hostname -i"])?
        .split_whitespace()
        .next()
        .ok_or_else(|| anyhow!("nginx has no address"))?
        .to_string();
    let nginx_log = strip_ansi(&stack.compose(&["--ansi", "never", "logs", "--no-color", "--no-log-prefix", "nginx"])?);
    let clients: BTreeSet<String> = nginx_log
        .lines()
        .filter(|line| line.contains("\"GET /hub/") || line.contains("\"POST /hub/"))
        // nginx's own healthcheck comes from loopback, not from a client.
        .filter(|line| !line.contains("\"GET /hub/health "))
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect();
    ensure!(!clients.is_empty(), "nginx logged no /hub/ request");
    let hub_log = strip_ansi(&stack.compose(&["--ansi", "never", "logs", "--no-color", "--no-log-prefix", "hub"])?);
    // JupyterHub's request log: `200 GET /hub/home (alice@172.18.0.1) 12.34ms`.
    let logged: BTreeSet<String> = hub_log
        .lines()
        .filter_map(|line| line.split_once(" (").and_then(|(_, rest)| rest.split_once(')')).map(|(who, _)| who.to_string()))
        .filter_map(|who| who.rsplit_once('@').map(|(_, address)| address.to_string()))
        .collect();
    ensure!(!logged.contains(&nginx_ip), "the hub logged nginx's own address {nginx_ip} as a client ({logged:?})");
    ensure!(
        clients.iter().any(|client| logged.contains(client)),
        "the hub logged client addresses {logged:?}, none of which is one nginx saw ({clients:?})"
    );
    progress!("client address: nginx saw {clients:?}, the hub logged {logged:?}, nginx itself is {nginx_ip}");
    Ok(())
}

/// `text` without terminal escape sequences (`ESC [ … letter`), which compose may put before log lines.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}
