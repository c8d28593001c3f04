//! What a user's container can reach, probed from inside it (a Python script run by exec): the Docker
//! socket, the proxy's API, the hub's API beyond the server's own user, another user's server, and any
//! `host:port` the caller names (on a swarm: the registry, the swarm's control plane, the engines). Shared
//! by the security test (one host) and the cluster test (a swarm), which judge the answers alike.

use serde_json::{Value, json};

/// The probe: `python3 -c REACH_PROBE OTHER_USER OTHER_IP [HOST:PORT …]` prints one JSON object. TCP
/// targets are tried at once, each for 3 s (a dropped connection times out rather than being refused).
pub const REACH_PROBE: &str = r#"
import concurrent.futures, json, os, socket, sys, urllib.error, urllib.request

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None

opener = urllib.request.build_opener(NoRedirect)

def tcp(host, port):
    try:
        socket.create_connection((host, port), 3).close()
        return "open"
    except Exception as e:
        return type(e).__name__

def get(url, token=None, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    if token:
        request.add_header("Authorization", "token " + token)
    try:
        return opener.open(request, timeout=5).status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception as e:
        return type(e).__name__

other, other_ip, targets = sys.argv[1], sys.argv[2], sys.argv[3:]
token = os.environ.get("JUPYTERHUB_API_TOKEN", "")
with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
    tried = dict(zip(targets, pool.map(lambda target: tcp(target.rsplit(":", 1)[0], int(target.rsplit(":", 1)[1])), targets)))
print(json.dumps({
    "docker_socket": any(os.path.exists(p) for p in ("/var/run/docker.sock", "/run/docker.sock")),
    "proxy_api_tcp": tcp("proxy", 8001),
    "proxy_api_routes": get("http://proxy:8001/api/routes"),
    "hub_own_user": get("http://hub:8081/hub/api/user", token),
    "hub_users_list": get("http://hub:8081/hub/api/users", token),
    "hub_other_user": get(f"http://hub:8081/hub/api/users/{other}", token),
    "hub_proxy_api": get("http://hub:8081/hub/api/proxy", token),
    "other_server_no_token": get(f"http://{other_ip}:8888/user/{other}/api/contents"),
    "other_server_own_token": get(f"http://{other_ip}:8888/user/{other}/api/contents", token),
    "tcp": tried,
}))
"#;

/// What the probe's answers `seen` show a user's container reaching beyond its own: empty when nothing.
/// A server needs only its own user's entry in the hub's API; everything else must be closed, refused or
/// forbidden.
pub fn reach_problems(seen: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if seen["docker_socket"] != json!(false) {
        problems.push("the Docker socket is present".to_string());
    }
    if seen["proxy_api_tcp"] == json!("open") {
        problems.push(format!("the proxy's API port 8001 is reachable (GET /api/routes without its token: {})", seen["proxy_api_routes"]));
    }
    if seen["hub_own_user"] != json!(200) {
        problems.push(format!("the server's own token cannot read its user (what a server needs): {}", seen["hub_own_user"]));
    }
    for key in ["hub_users_list", "hub_other_user", "hub_proxy_api"] {
        if !matches!(seen[key].as_u64(), Some(403 | 404)) {
            problems.push(format!("{key} answered {} to the server's token (expected 403/404)", seen[key]));
        }
    }
    for key in ["other_server_no_token", "other_server_own_token"] {
        if !matches!(seen[key].as_u64(), Some(401 | 403)) {
            problems.push(format!("the other user's server answered {} ({key}); expected 401/403", seen[key]));
        }
    }
    if let Some(tried) = seen["tcp"].as_object() {
        for (target, outcome) in tried.iter().filter(|(_, outcome)| **outcome == json!("open")) {
            problems.push(format!("{target} accepts a connection ({outcome})"));
        }
    }
    problems
}
