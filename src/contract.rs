//! The names and labels the stack's parts agree on: the `io.jhub-docker.*` labels, the default stack name
//! and user-volume prefix, how a user's volume and the hub's data volume are named and labelled. The hub
//! writes the same values from its side (`images/hub/jhub_hub/spawner.py`); every Rust reader and writer
//! (`down`, `backup`, `restore`, `adopt-volumes`, the tests) takes them from here.

use std::collections::BTreeMap;

/// On user containers and user volumes: the stack (`JHUB_STACK_NAME`) they belong to.
pub const STACK_LABEL: &str = "io.jhub-docker.stack";
/// On user containers and user volumes: the JupyterHub user name, as the hub's database spells it.
pub const USER_LABEL: &str = "io.jhub-docker.user";
/// On user volumes: when the account the volume was made for was created (the hub's `users.created`, as
/// Python's `isoformat()` writes it), so a volume of an earlier account of the same name is never mounted.
pub const ACCOUNT_LABEL: &str = "io.jhub-docker.account-created";
/// On user containers: the catalog image the server runs.
pub const IMAGE_LABEL: &str = "io.jhub-docker.image";
/// On an archive of a deleted user's files (the hub makes them; `xtask archives` lists and purges them):
/// the user it was, and when (UTC).
pub const ARCHIVED_USER_LABEL: &str = "io.jhub-docker.archived-user";
pub const ARCHIVED_AT_LABEL: &str = "io.jhub-docker.archived-at";
/// On a group folder's volume (the hub makes them at a member's first spawn): the catalog group, and which
/// of its folders it is (`course` or `shared`).
pub const GROUP_LABEL: &str = "io.jhub-docker.group";
pub const GROUP_FOLDER_LABEL: &str = "io.jhub-docker.group-folder";
/// The folders a catalog [[group]] may have, as their volumes and mount points name them.
pub const GROUP_FOLDERS: [&str; 2] = ["course", "shared"];

/// The volume of `group`'s folder `folder` (`course`, `shared`) in `stack` (the hub's `group_volume_name`).
pub fn group_folder_volume(stack: &str, group: &str, folder: &str) -> String {
    format!("{}{group}-{folder}", group_folder_prefix(stack))
}

/// What the names of `stack`'s group folder volumes start with.
pub fn group_folder_prefix(stack: &str) -> String {
    format!("{stack}-group-")
}

/// The labels the hub gives a group folder's volume.
pub fn group_folder_labels(stack: &str, group: &str, folder: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (STACK_LABEL.to_string(), stack.to_string()),
        (GROUP_LABEL.to_string(), group.to_string()),
        (GROUP_FOLDER_LABEL.to_string(), folder.to_string()),
    ])
}

/// On throwaway containers and volumes the xtask makes, so a leftover one is recognisable.
pub const PURPOSE_LABEL: &str = "io.jhub-docker.purpose";

/// Swarm mode, on a node: the one node that runs the hub, the proxy and their volumes (a manager).
pub const HUB_NODE_LABEL: &str = "io.jhub-docker.hub";

/// The home label's value while it pins a home, and once the home's account was deleted (its files set
/// aside on that node, which a new account of the same name avoids; the hub's `placement.py` has the same).
pub const HOME_PINNED: &str = "true";
pub const HOME_DELETED: &str = "deleted";

/// Swarm mode: the node label that pins a user to the node holding their home (a node-local volume), set
/// by the hub's swarm spawner at the user's first start and moved by `cargo xtask move-home`. Exactly one
/// node carries it with the value `true`; the spawner adds `node.labels.<this>==true` to the service.
pub fn home_node_label(stack: &str, escaped_user: &str) -> String {
    format!("io.jhub-docker.home.{stack}.{escaped_user}")
}

/// The test cluster (`cargo xtask cluster up`): its bridge network on this machine's engine, the label
/// value of its node containers, and where this machine reaches each node's engine (a socket file).
pub const CLUSTER_NETWORK: &str = "jhub-cluster";
pub const CLUSTER_NODE_PURPOSE: &str = "cluster-node";
const CLUSTER_SOCKET_ROOT: &str = "/run/jhub-cluster";

/// The name of the test cluster's node `index` (1-based, 1 is the manager): its container, hostname and
/// swarm node name.
pub fn cluster_node_name(index: usize) -> String {
    format!("{CLUSTER_NETWORK}-node-{index}")
}

/// The socket through which this machine reaches the test cluster's node `index`.
pub fn cluster_node_socket(index: usize) -> std::path::PathBuf {
    std::path::Path::new(CLUSTER_SOCKET_ROOT).join(cluster_node_name(index)).join("docker.sock")
}

/// `JHUB_STACK_NAME` when the settings name none (also compose's project name).
pub const DEFAULT_STACK_NAME: &str = "jhub";
/// `JHUB_USER_VOLUME_PREFIX` when the settings name none.
pub const DEFAULT_USER_VOLUME_PREFIX: &str = "jupyterhub-user-";

/// The hub's data volume in the compose file; compose names it `<project>_jupyterhub_data`.
pub const DATA_VOLUME_KEY: &str = "jupyterhub_data";

/// The labels the hub's spawner gives a user's volume when it creates it (`JhubDockerSpawner.user_volume`):
/// whatever else creates such a volume (a restore, an adoption) gives exactly these, so `down --volumes`,
/// backups and every other reader find it as one of the stack's, and the hub mounts it for that account.
/// `account_created` is empty for a user the hub's database does not know.
pub fn user_volume_labels(stack: &str, user: &str, account_created: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([(STACK_LABEL.to_string(), stack.to_string()), (USER_LABEL.to_string(), user.to_string())]);
    if !account_created.is_empty() {
        labels.insert(ACCOUNT_LABEL.to_string(), account_created.to_string());
    }
    labels
}

/// The user volume of `user` (an escaped name, as DockerSpawner forms it) under `prefix`.
pub fn user_volume_name(prefix: &str, escaped_user: &str) -> String {
    format!("{prefix}{escaped_user}")
}

/// The compose-made name of the stack's hub data volume.
pub fn data_volume_name(stack: &str) -> String {
    format!("{stack}_{DATA_VOLUME_KEY}")
}

/// The labels compose gives the hub's data volume when it creates it: its project, its key in the file,
/// and the version of compose (`compose::label_version`).
pub fn data_volume_labels(stack: &str, compose_version: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("com.docker.compose.project".to_string(), stack.to_string()),
        ("com.docker.compose.volume".to_string(), DATA_VOLUME_KEY.to_string()),
        ("com.docker.compose.version".to_string(), compose_version.to_string()),
    ])
}

/// A user name as DockerSpawner 14 escapes it into volume names and the home label (the inverse of
/// `user_of_escaped_name`): every byte of its UTF-8 outside `[a-z0-9]` becomes `-` and two lower-case hex
/// digits.
pub fn escaped_user_name(user: &str) -> String {
    user.bytes()
        .map(|byte| match byte {
            b'a'..=b'z' | b'0'..=b'9' => (byte as char).to_string(),
            _ => format!("-{byte:02x}"),
        })
        .collect()
}

/// The JupyterHub user whose escaped name is `escaped`, or `None` when `escaped` is not an escaped name.
///
/// DockerSpawner 14 names volumes with `escapism.escape(name, safe=[a-z0-9], escape_char="-").lower()`:
/// every other byte of the name's UTF-8 becomes `-` and two hex digits, so `-` in an escaped name always
/// starts such a pair and the escaping can be undone exactly (`alice-2d2` is the user `alice-2`). A name
/// with any other character (`.`, `_`, upper case) was never made by the spawner.
pub fn user_of_escaped_name(escaped: &str) -> Option<String> {
    let bytes = escaped.as_bytes();
    let mut name = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'-' => {
                let pair = escaped.get(index + 1..index + 3)?;
                if !pair.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)) {
                    return None;
                }
                name.push(u8::from_str_radix(pair, 16).ok()?);
                index += 3;
            }
            byte if byte.is_ascii_lowercase() || byte.is_ascii_digit() => {
                name.push(byte);
                index += 1;
            }
            _ => return None,
        }
    }
    if name.is_empty() {
        return None;
    }
    String::from_utf8(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_names_are_undone_as_dockerspawner_made_them() {
        assert_eq!(user_of_escaped_name("alice").as_deref(), Some("alice"));
        // escapism.escape("alice-2", safe=[a-z0-9], escape_char="-").lower() == "alice-2d2"
        assert_eq!(user_of_escaped_name("alice-2d2").as_deref(), Some("alice-2"));
        assert_eq!(user_of_escaped_name("a-2eb-5fc").as_deref(), Some("a.b_c"));
        // "Zoë": Z is not safe (upper case), ë is two UTF-8 bytes.
        assert_eq!(user_of_escaped_name("-5ao-c3-ab").as_deref(), Some("Zoë"));
    }

    #[test]
    fn escaping_is_what_the_spawner_does_and_undoes_exactly() {
        assert_eq!(escaped_user_name("alice-2"), "alice-2d2");
        assert_eq!(escaped_user_name("Zoë"), "-5ao-c3-ab");
        for user in ["alice", "a.b_c", "Zoë", "bob.smith", "x{y}"] {
            assert_eq!(user_of_escaped_name(&escaped_user_name(user)).as_deref(), Some(user));
        }
    }

    #[test]
    fn names_the_spawner_never_makes_are_not_users() {
        for name in ["", "alice.adopting", "Alice", "a_b", "bob-", "bob-2", "bob-zz", "-ff"] {
            assert_eq!(user_of_escaped_name(name), None, "{name:?}");
        }
    }

    #[test]
    fn user_volume_labels_name_the_stack_and_the_user() {
        let labels = user_volume_labels("jhub", "alice-2", "2026-12-05T07:10:11.123456");
        assert_eq!(labels.get(STACK_LABEL).map(String::as_str), Some("jhub"));
        assert_eq!(labels.get(USER_LABEL).map(String::as_str), Some("alice-2"));
        assert_eq!(labels.get(ACCOUNT_LABEL).map(String::as_str), Some("2026-12-05T07:10:11.123456"));
        assert_eq!(user_volume_labels("jhub", "x", "").len(), 2);
        assert_eq!(data_volume_name("jhub"), "jhub_jupyterhub_data");
        assert_eq!(data_volume_labels("jhub", "2.26.1").get("com.docker.compose.project").map(String::as_str), Some("jhub"));
    }
}
