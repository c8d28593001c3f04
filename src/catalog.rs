//! `images/catalog.toml`: every image the project builds, the parent each one builds from, and what the hub
//! shows users for the single-user ones. Parsing validates everything the pipeline and the hub rely on.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The parsed, validated catalog, images in file order (which is also the spawn dropdown's order).
#[derive(Debug, Clone)]
pub struct Catalog {
    pub images: Vec<ImageEntry>,
    pub profiles: Vec<Profile>,
    /// The groups images and profiles may be kept to, with the limits their members get.
    pub groups: Vec<Group>,
}

/// How an image comes to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipe {
    /// A Debian rootfs made by mmdebstrap from `<folder>/base.toml`, imported through the Engine API.
    Mmdebstrap,
    /// A Dockerfile built FROM the parent catalog image.
    Dockerfile { dockerfile: String, parent: String },
}

/// What the hub needs to offer an image to users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SingleUser {
    pub display_name: String,
    pub description: String,
    pub home: String,
    pub default_url: String,
    /// Swarm mode: the constraints a node must meet to run this image's servers (`node.labels.gpu==true`);
    /// empty: any node. The single-host mode has one node and ignores them.
    pub placement: Vec<String>,
    /// The groups whose members are offered this image (each a [[group]] of the catalog); empty: everyone.
    pub groups: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ImageEntry {
    pub name: String,
    /// The folder under `images/`.
    pub folder: String,
    pub recipe: Recipe,
    /// Catalog images this one copies files from (`COPY --from`) besides building FROM its parent: each is
    /// built first, passed as the build arg `<NAME>_IMAGE` (its image id; `code-server` → `CODE_SERVER_IMAGE`),
    /// chained into the content key, and its checks (with its ancestors') run on this image too.
    pub uses: Vec<String>,
    pub single_user: Option<SingleUser>,
}

impl ImageEntry {
    pub fn parent(&self) -> Option<&str> {
        match &self.recipe {
            Recipe::Mmdebstrap => None,
            Recipe::Dockerfile { parent, .. } => Some(parent),
        }
    }

    /// Every catalog image that must be built before this one: the parent, then the images it `uses`.
    pub fn inputs(&self) -> impl Iterator<Item = &str> {
        self.parent().into_iter().chain(self.uses.iter().map(String::as_str))
    }

    /// The build arg that carries a used image's id into the Dockerfile: `code-server` → `CODE_SERVER_IMAGE`.
    pub fn build_arg_for(used: &str) -> String {
        format!("{}_IMAGE", used.to_ascii_uppercase().replace('-', "_"))
    }

    pub fn folder_path(&self, root: &Path) -> PathBuf {
        root.join("images").join(&self.folder)
    }

    /// The flavour of an image built from `Dockerfile.<flavour>` (the flavours of a template share one
    /// folder); none for a plain `Dockerfile` or a bootstrapped image.
    pub fn flavour(&self) -> Option<&str> {
        match &self.recipe {
            Recipe::Dockerfile { dockerfile, .. } => dockerfile.strip_prefix("Dockerfile.").filter(|flavour| !flavour.is_empty()),
            Recipe::Mmdebstrap => None,
        }
    }
}

/// A choice of `SPAWNER=profiles`: an image with CPU and memory limits.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub name: String,
    pub display_name: String,
    pub image: String,
    pub cpu_limit: f64,
    pub mem_limit: String,
    /// The groups whose members are offered this profile (each a [[group]] of the catalog); empty: everyone.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A group of users (a course, a lab) that images and profiles may be kept to: its members come from the
/// hub's admin panel or REST API (native accounts) or from the directory (LDAP). Its limits, each
/// optional, apply to its members' servers of an image (a profile carries its own CPU and memory); a member
/// of several groups gets the largest of each.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    pub cpu_limit: Option<f64>,
    pub mem_limit: Option<String>,
    pub named_server_limit: Option<u32>,
    /// A folder of course material at `~/<group>/course`: read-only for members (the mount is read-only,
    /// whatever the files' modes: every user is uid 1000), read-write for the instructors.
    #[serde(default)]
    pub course_folder: bool,
    /// A folder the members (and instructors) share read-write at `~/<group>/shared`.
    #[serde(default)]
    pub shared_folder: bool,
    /// Another [[group]] whose members are this group's instructors: they get its folders, the course
    /// folder read-write.
    pub instructors: Option<String>,
}

/// A catalog that cannot be used, with the one-line reason and a hint for the admin.
pub type CatalogError = crate::HintedError;

fn error(message: impl Into<String>, hint: impl Into<String>) -> CatalogError {
    CatalogError::new(message, hint)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    #[serde(default)]
    image: Vec<RawImage>,
    #[serde(default)]
    profile: Vec<Profile>,
    #[serde(default)]
    group: Vec<Group>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    name: String,
    folder: Option<String>,
    dockerfile: Option<String>,
    parent: Option<String>,
    #[serde(default)]
    uses: Vec<String>,
    bootstrap: Option<String>,
    #[serde(default)]
    single_user: bool,
    display_name: Option<String>,
    description: Option<String>,
    home: Option<String>,
    default_url: Option<String>,
    placement: Option<Vec<String>>,
    groups: Option<Vec<String>>,
}

impl Catalog {
    /// Reads and validates the catalog at `path`; `root` is the checkout, whose `images/` holds the folders.
    pub fn load(root: &Path) -> Result<Catalog, CatalogError> {
        let path = crate::catalog_path(root);
        let text = std::fs::read_to_string(&path).map_err(|err| {
            error(
                format!("cannot read the catalog {}: {err}", path.display()),
                "run from a jhub-docker checkout; the catalog lives at images/catalog.toml",
            )
        })?;
        let catalog = Catalog::parse(&text)?;
        catalog.check_folders(root)?;
        Ok(catalog)
    }

    /// Parses and validates catalog text, without looking at the file system.
    pub fn parse(text: &str) -> Result<Catalog, CatalogError> {
        let raw: RawCatalog = toml::from_str(text).map_err(|err| {
            let first_line = err.to_string().lines().next().unwrap_or_default().to_string();
            error(
                format!("images/catalog.toml is not a valid catalog: {first_line}"),
                "the fields an [[image]] may have are listed at the top of images/catalog.toml",
            )
        })?;
        let groups = validate_groups(&raw.group)?;
        let mut seen = BTreeSet::new();
        let mut images = Vec::new();
        for raw_image in raw.image {
            let image = validate_image(raw_image, &seen)?;
            seen.insert(image.name.clone());
            images.push(image);
        }
        if images.is_empty() {
            return Err(error("images/catalog.toml lists no image", "add an [[image]] entry"));
        }
        let mut display_names = BTreeSet::new();
        for (image, single_user) in images.iter().filter_map(|image| image.single_user.as_ref().map(|single_user| (image, single_user))) {
            if !display_names.insert(single_user.display_name.as_str()) {
                return Err(error(
                    format!("image `{}` has the display_name `{}` of an earlier image", image.name, single_user.display_name),
                    "users choose by display_name: give every single-user image its own",
                ));
            }
            check_group_list(&format!("image `{}`", image.name), &single_user.groups, &groups)?;
        }
        let mut profile_names = BTreeSet::new();
        let mut profile_display_names = BTreeSet::new();
        for profile in &raw.profile {
            if !profile_names.insert(profile.name.clone()) {
                return Err(error(
                    format!("profile `{}` is listed twice in images/catalog.toml", profile.name),
                    "give every [[profile]] its own name",
                ));
            }
            if !profile_display_names.insert(profile.display_name.clone()) {
                return Err(error(
                    format!("profile `{}` has the display_name `{}` of an earlier profile", profile.name, profile.display_name),
                    "users choose by display_name: give every [[profile]] its own",
                ));
            }
            if !is_name(&profile.name) {
                return Err(error(
                    format!("profile name `{}` in images/catalog.toml is not valid", profile.name),
                    "names use lowercase letters, digits and `-`, such as `lab-small`",
                ));
            }
            let target = images.iter().find(|image| image.name == profile.image);
            if target.is_none_or(|image| image.single_user.is_none()) {
                return Err(error(
                    format!("profile `{}` names `{}`, which is not a single-user image", profile.name, profile.image),
                    "a profile's image must be an [[image]] with single_user = true",
                ));
            }
            if !profile.cpu_limit.is_finite() || profile.cpu_limit <= 0.0 {
                return Err(error(
                    format!("profile `{}` has cpu_limit {}", profile.name, profile.cpu_limit),
                    "cpu_limit is a number of CPUs above 0, such as 1.0 or 0.5",
                ));
            }
            if profile.display_name.trim().is_empty() {
                return Err(error(
                    format!("profile `{}` has an empty display_name", profile.name),
                    "display_name is the text users choose from",
                ));
            }
            if !is_memory_size(&profile.mem_limit) {
                return Err(error(
                    format!("profile `{}` has mem_limit `{}`", profile.name, profile.mem_limit),
                    "mem_limit is a size such as 512M, 1.5G or 4G (upper-case unit)",
                ));
            }
            check_group_list(&format!("profile `{}`", profile.name), &profile.groups, &groups)?;
        }
        Ok(Catalog { images, profiles: raw.profile, groups })
    }

    /// Checks that every entry's folder and Dockerfile (or base.toml) exists under `root/images`.
    pub fn check_folders(&self, root: &Path) -> Result<(), CatalogError> {
        for image in &self.images {
            let folder = image.folder_path(root);
            if !folder.is_dir() {
                return Err(error(
                    format!("image `{}`: folder images/{} does not exist", image.name, image.folder),
                    format!("create images/{}/ or fix `folder` in images/catalog.toml", image.folder),
                ));
            }
            let recipe_file = match &image.recipe {
                Recipe::Mmdebstrap => "base.toml",
                Recipe::Dockerfile { dockerfile, .. } => dockerfile.as_str(),
            };
            if !folder.join(recipe_file).is_file() {
                return Err(error(
                    format!("image `{}`: images/{}/{recipe_file} does not exist", image.name, image.folder),
                    format!("add images/{}/{recipe_file} or fix the entry in images/catalog.toml", image.folder),
                ));
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&ImageEntry> {
        self.images.iter().find(|image| image.name == name)
    }

    /// The single-user images, in catalog (dropdown) order.
    pub fn single_user_images(&self) -> impl Iterator<Item = (&ImageEntry, &SingleUser)> {
        self.images.iter().filter_map(|image| image.single_user.as_ref().map(|single_user| (image, single_user)))
    }

    /// Resolves image names given on a command line, with every image they build on (parents and the
    /// images they use, and theirs), in build order (inputs first). An empty selection means every image.
    pub fn with_ancestors(&self, selection: &[String]) -> Result<Vec<&ImageEntry>, CatalogError> {
        let mut wanted = BTreeSet::new();
        for name in selection {
            let image = self.get(name).ok_or_else(|| {
                let known: Vec<&str> = self.images.iter().map(|image| image.name.as_str()).collect();
                error(format!("unknown image `{name}`"), format!("the catalog has: {}", known.join(", ")))
            })?;
            let mut pending = vec![image];
            while let Some(current) = pending.pop() {
                if wanted.insert(current.name.as_str()) {
                    pending.extend(current.inputs().map(|input| self.get(input).expect("validated: inputs exist")));
                }
            }
        }
        // Catalog order already has parents before children (validated at parse time).
        Ok(self.images.iter().filter(|image| selection.is_empty() || wanted.contains(image.name.as_str())).collect())
    }
}

fn validate_image(raw: RawImage, earlier: &BTreeSet<String>) -> Result<ImageEntry, CatalogError> {
    let name = raw.name;
    if !is_name(&name) {
        return Err(error(
            format!("image name `{name}` in images/catalog.toml is not valid"),
            "names use lowercase letters, digits and `-` (not first or last), such as `datascience` or `uv-lab`",
        ));
    }
    if earlier.contains(&name) {
        return Err(error(format!("image `{name}` is listed twice in images/catalog.toml"), "give every [[image]] its own name"));
    }
    let folder = raw.folder.unwrap_or_else(|| name.clone());
    if folder.is_empty() || folder.contains("..") || folder.starts_with('/') {
        return Err(error(
            format!("image `{name}`: folder `{folder}` is not a folder under images/"),
            "`folder` names a folder directly under images/, such as `datascience`",
        ));
    }
    let raw_parent = raw.parent.clone();
    let recipe = match (raw.bootstrap.as_deref(), raw.parent) {
        (Some("mmdebstrap"), None) => {
            if raw.dockerfile.is_some() {
                return Err(error(
                    format!("image `{name}` is bootstrapped and also names a dockerfile"),
                    "a bootstrapped image is made from base.toml: drop `dockerfile`",
                ));
            }
            Recipe::Mmdebstrap
        }
        (Some("mmdebstrap"), Some(_)) => {
            return Err(error(
                format!("image `{name}` is bootstrapped and also has a parent"),
                "a bootstrapped image is the root of a chain: drop `parent`",
            ));
        }
        (Some(other), _) => {
            return Err(error(format!("image `{name}`: unknown bootstrap `{other}`"), "the only bootstrap is \"mmdebstrap\""));
        }
        (None, None) => {
            return Err(error(
                format!("image `{name}` has neither a parent nor a bootstrap"),
                "set parent = \"base\" (or bootstrap = \"mmdebstrap\" for a root image)",
            ));
        }
        (None, Some(parent)) => {
            if !earlier.contains(&parent) {
                return Err(error(
                    format!("image `{name}`: parent `{parent}` is not listed before it in images/catalog.toml"),
                    "list every parent image above the images built from it",
                ));
            }
            Recipe::Dockerfile { dockerfile: raw.dockerfile.unwrap_or_else(|| "Dockerfile".to_string()), parent }
        }
    };
    let mut uses = Vec::new();
    for used in raw.uses {
        if matches!(recipe, Recipe::Mmdebstrap) {
            return Err(error(
                format!("image `{name}` is bootstrapped and also uses `{used}`"),
                "a bootstrapped image is made from base.toml alone: drop `uses`",
            ));
        }
        if !earlier.contains(&used) {
            return Err(error(
                format!("image `{name}`: it uses `{used}`, which is not listed before it in images/catalog.toml"),
                "list every image another one uses above it",
            ));
        }
        if Some(used.as_str()) == raw_parent.as_deref() || uses.contains(&used) {
            return Err(error(
                format!("image `{name}` names `{used}` twice (as its parent or in `uses`)"),
                "an image is either the parent or used, once",
            ));
        }
        uses.push(used);
    }
    let single_user = if raw.single_user {
        let require = |field: Option<String>, key: &str| {
            field.filter(|value| !value.trim().is_empty()).ok_or_else(|| {
                error(
                    format!("single-user image `{name}` has no `{key}`"),
                    format!("add {key} = \"…\" to its entry in images/catalog.toml"),
                )
            })
        };
        let home = require(raw.home, "home")?;
        if !home.starts_with('/') || home.contains(char::is_whitespace) || home.contains(':') {
            return Err(error(format!("image `{name}`: home `{home}` is not an absolute path"), "use a path such as /home/jovyan"));
        }
        let default_url = require(raw.default_url, "default_url")?;
        // A path inside the user's server: "//host" would be another site, and JupyterHub prefixes it.
        if !default_url.starts_with('/') || default_url.starts_with("//") || default_url.contains(char::is_whitespace) {
            return Err(error(
                format!("image `{name}`: default_url `{default_url}` is not a path inside the user's server"),
                "use a path starting with one `/`, such as /lab or /vscode/",
            ));
        }
        let display_name = require(raw.display_name, "display_name")?;
        if display_name.contains('\n') {
            return Err(error(format!("image `{name}`: display_name spans lines"), "a display_name is one line of the dropdown"));
        }
        let placement = raw.placement.unwrap_or_default();
        for constraint in &placement {
            if !is_placement_constraint(constraint) {
                return Err(error(
                    format!("image `{name}`: placement `{constraint}` is not a Swarm constraint"),
                    "write `node.labels.<key>==<value>` (or `!=`; node.role, node.hostname, node.platform.os also work)",
                ));
            }
        }
        Some(SingleUser {
            display_name,
            description: raw.description.unwrap_or_default(),
            home,
            default_url,
            placement,
            groups: raw.groups.unwrap_or_default(),
        })
    } else {
        if raw.display_name.is_some() || raw.home.is_some() || raw.default_url.is_some() || raw.placement.is_some() || raw.groups.is_some()
        {
            return Err(error(
                format!("image `{name}` has single-user fields but not single_user = true"),
                "add single_user = true, or drop display_name / home / default_url / placement / groups",
            ));
        }
        None
    };
    Ok(ImageEntry { name, folder, recipe, uses, single_user })
}

/// Checks the [[group]] entries: names a hub and a directory can both carry, each once, sensible limits.
fn validate_groups(groups: &[Group]) -> Result<Vec<Group>, CatalogError> {
    let mut names = BTreeSet::new();
    for group in groups {
        let name = &group.name;
        if !is_group_name(name) {
            return Err(error(
                format!("group name `{name}` in images/catalog.toml is not valid"),
                "group names use letters, digits, `-`, `_` and `.` (not first), at most 64, such as `physics-101`",
            ));
        }
        if !names.insert(name.as_str()) {
            return Err(error(format!("group `{name}` is listed twice in images/catalog.toml"), "give every [[group]] its own name"));
        }
        if let Some(cpus) = group.cpu_limit
            && (!cpus.is_finite() || cpus <= 0.0)
        {
            return Err(error(format!("group `{name}` has cpu_limit {cpus}"), "cpu_limit is a number of CPUs above 0, such as 1.0 or 0.5"));
        }
        if let Some(memory) = &group.mem_limit
            && !is_memory_size(memory)
        {
            return Err(error(
                format!("group `{name}` has mem_limit `{memory}`"),
                "mem_limit is a size such as 512M, 1.5G or 4G (upper-case unit)",
            ));
        }
    }
    for group in groups {
        let Some(instructors) = &group.instructors else { continue };
        let name = &group.name;
        if instructors == name || !groups.iter().any(|other| &other.name == instructors) {
            return Err(error(
                format!("group `{name}` names `{instructors}` as its instructors, which is not another [[group]] of images/catalog.toml"),
                format!("declare [[group]] name = \"{instructors}\" (its members are the instructors), or fix `instructors`"),
            ));
        }
        if !group.course_folder && !group.shared_folder {
            return Err(error(
                format!("group `{name}` has instructors but no folder"),
                "instructors get the group's folders: add course_folder = true (or shared_folder = true), or drop `instructors`",
            ));
        }
    }
    Ok(groups.to_vec())
}

/// An image's or profile's `groups`: each declared as a [[group]], none twice. An empty list, like none,
/// offers it to everyone.
fn check_group_list(owner: &str, list: &[String], groups: &[Group]) -> Result<(), CatalogError> {
    if list.is_empty() {
        return Ok(());
    }
    let mut seen = BTreeSet::new();
    for name in list {
        if !groups.iter().any(|group| &group.name == name) {
            return Err(error(
                format!("{owner} is kept to group `{name}`, which images/catalog.toml does not declare"),
                format!("add [[group]] with name = \"{name}\" (or fix the name in `groups`)"),
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(error(format!("{owner} lists group `{name}` twice"), "list each group once in `groups`"));
        }
    }
    Ok(())
}

/// A group name both JupyterHub and an LDAP directory carry unchanged: letters, digits, `-`, `_` and `.`,
/// starting with a letter or digit, at most 64 characters.
pub fn is_group_name(name: &str) -> bool {
    name.len() <= 64
        && name.chars().next().is_some_and(|first| first.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Whether `text` is a Swarm placement constraint the engine accepts: `<attribute> == <value>` or `!=`,
/// where the attribute is a node label (`node.labels.<key>`, `engine.labels.<key>`) or one of the node's
/// fields, and neither side is empty or holds another operator.
pub fn is_placement_constraint(text: &str) -> bool {
    let Some((attribute, value)) = text.split_once("==").or_else(|| text.split_once("!=")) else {
        return false;
    };
    let (attribute, value) = (attribute.trim(), value.trim());
    let fields = ["node.id", "node.hostname", "node.role", "node.platform.os", "node.platform.arch"];
    let label_key = attribute.strip_prefix("node.labels.").or_else(|| attribute.strip_prefix("engine.labels."));
    let known = fields.contains(&attribute)
        || label_key.is_some_and(|key| !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)));
    known && !value.is_empty() && !value.contains(['=', '!', '\n', ',']) && !value.contains(char::is_whitespace)
}

/// An image or profile name: lowercase letters, digits and `-`, not starting with `-`. Public so that
/// `cargo xtask new-image` refuses a bad name by this same rule before it writes anything.
/// A catalog name: lowercase letters, digits and `-`, starting and ending with a letter or digit, because
/// it becomes a Docker repository name (`jhub/<name>`), which may not begin or end with a separator.
pub fn is_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A memory size as Docker takes it and the hub's JHUB_MEM_LIMIT accepts it
/// (`^[1-9][0-9]*(\.[0-9]+)?[KMGT]?$`): a positive number, optionally with a fraction, and an upper-case
/// unit (bytes without one).
pub fn is_memory_size(text: &str) -> bool {
    let number = text.strip_suffix(['K', 'M', 'G', 'T']).unwrap_or(text);
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    digits(whole) && !whole.starts_with('0') && fraction.is_none_or(digits)
}

/// The bytes a memory size (as `is_memory_size` accepts it) stands for; units are powers of 1024, as Docker
/// reads them.
pub fn memory_bytes(text: &str) -> Option<u64> {
    if !is_memory_size(text) {
        return None;
    }
    let (number, factor) = match text.chars().last() {
        Some('K') => (&text[..text.len() - 1], 1u64 << 10),
        Some('M') => (&text[..text.len() - 1], 1 << 20),
        Some('G') => (&text[..text.len() - 1], 1 << 30),
        Some('T') => (&text[..text.len() - 1], 1 << 40),
        _ => (text, 1),
    };
    let value: f64 = number.parse().ok()?;
    Some((value * factor as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_constraints_are_what_swarm_accepts() {
        for good in ["node.labels.gpu==true", "node.labels.io.jhub-docker.users == yes", "node.role!=manager", "node.hostname==n1"] {
            assert!(is_placement_constraint(good), "{good}");
        }
        for bad in ["gpu", "node.labels.==x", "node.labels.gpu==", "node.color==red", "node.labels.gpu==a,b", "node.labels.a b==c"] {
            assert!(!is_placement_constraint(bad), "{bad}");
        }
    }

    const GOOD: &str = r#"
[[image]]
name = "base"
bootstrap = "mmdebstrap"

[[image]]
name = "lab"
parent = "base"
single_user = true
display_name = "Lab"
home = "/home/jovyan"
default_url = "/lab"

[[profile]]
name = "lab-small"
display_name = "Lab, small"
image = "lab"
cpu_limit = 1.0
mem_limit = "1G"
"#;

    #[test]
    fn images_and_profiles_may_be_kept_to_declared_groups_with_their_limits() {
        let text = GOOD.replacen("default_url = \"/lab\"\n", "default_url = \"/lab\"\ngroups = [\"physics-101\"]\n", 1).replacen(
            "[[profile]]",
            "[[group]]\nname = \"physics-101\"\ncpu_limit = 1.5\nmem_limit = \"2G\"\nnamed_server_limit = 1\n\n[[group]]\nname = \"Staff_2026.a\"\n\n[[profile]]",
            1,
        ) + "groups = [\"Staff_2026.a\", \"physics-101\"]\n";
        let catalog = Catalog::parse(&text).unwrap();
        assert_eq!(catalog.get("lab").unwrap().single_user.as_ref().unwrap().groups, ["physics-101"]);
        assert_eq!(catalog.profiles[0].groups, ["Staff_2026.a", "physics-101"]);
        let physics = &catalog.groups[0];
        assert_eq!((physics.cpu_limit, physics.mem_limit.as_deref(), physics.named_server_limit), (Some(1.5), Some("2G"), Some(1)));
        assert_eq!((catalog.groups[1].cpu_limit, catalog.groups[1].named_server_limit), (None, None));
        assert!(Catalog::parse(GOOD).unwrap().groups.is_empty());
        assert!(!physics.course_folder && !physics.shared_folder && physics.instructors.is_none());
        let folders = Catalog::parse(&GOOD.replacen(
            "[[profile]]",
            "[[group]]\nname = \"physics-101\"\ncourse_folder = true\nshared_folder = true\ninstructors = \"physics-101-staff\"\n\n\
             [[group]]\nname = \"physics-101-staff\"\n\n[[profile]]",
            1,
        ))
        .unwrap();
        let course = &folders.groups[0];
        assert_eq!((course.course_folder, course.shared_folder, course.instructors.as_deref()), (true, true, Some("physics-101-staff")));
    }

    #[test]
    fn an_image_that_uses_another_builds_after_it_and_its_parents() {
        let text = format!(
            "{GOOD}\n[[image]]\nname = \"shared\"\nparent = \"base\"\n\n[[image]]\nname = \"tools\"\nparent = \"base\"\n\n\
             [[image]]\nname = \"full\"\nparent = \"tools\"\nuses = [\"shared\"]\n"
        );
        let catalog = Catalog::parse(&text).unwrap();
        let full = catalog.get("full").unwrap();
        assert_eq!(full.inputs().collect::<Vec<_>>(), ["tools", "shared"]);
        let names: Vec<&str> = catalog.with_ancestors(&["full".to_string()]).unwrap().iter().map(|image| image.name.as_str()).collect();
        assert_eq!(names, ["base", "shared", "tools", "full"]);
        assert_eq!(ImageEntry::build_arg_for("code-server"), "CODE_SERVER_IMAGE");
    }

    #[test]
    fn parses_a_good_catalog() {
        let catalog = Catalog::parse(GOOD).unwrap();
        assert_eq!(catalog.images.len(), 2);
        assert_eq!(catalog.get("lab").unwrap().parent(), Some("base"));
        assert!(catalog.get("lab").unwrap().uses.is_empty());
        assert_eq!(catalog.single_user_images().count(), 1);
        assert_eq!(catalog.profiles[0].image, "lab");
    }

    /// Every catalog the pipeline must refuse, as an edit of GOOD, with the message it must give. The hub
    /// reads only the resolved view, so this table is the whole of the catalog's rules.
    const BAD_CATALOGS: &[(&str, &str, &str, &str)] = &[
        (
            "unknown parent",
            "parent = \"base\"",
            "parent = \"nope\"",
            "image `lab`: parent `nope` is not listed before it in images/catalog.toml",
        ),
        (
            "an image kept to an undeclared group",
            "default_url = \"/lab\"\n",
            "default_url = \"/lab\"\ngroups = [\"physics-101\"]\n",
            "image `lab` is kept to group `physics-101`, which images/catalog.toml does not declare",
        ),
        (
            "a profile kept to an undeclared group",
            "mem_limit = \"1G\"\n",
            "mem_limit = \"1G\"\ngroups = [\"staff\"]\n",
            "profile `lab-small` is kept to group `staff`, which images/catalog.toml does not declare",
        ),
        (
            "a group listed twice in groups",
            "default_url = \"/lab\"\n",
            "default_url = \"/lab\"\ngroups = [\"physics-101\", \"physics-101\"]\n\n[[group]]\nname = \"physics-101\"\n",
            "image `lab` lists group `physics-101` twice",
        ),
        (
            "a group name with a space",
            "[[profile]]",
            "[[group]]\nname = \"physics 101\"\n\n[[profile]]",
            "group name `physics 101` in images/catalog.toml is not valid",
        ),
        (
            "a group declared twice",
            "[[profile]]",
            "[[group]]\nname = \"staff\"\n\n[[group]]\nname = \"staff\"\n\n[[profile]]",
            "group `staff` is listed twice in images/catalog.toml",
        ),
        (
            "a group without CPUs",
            "[[profile]]",
            "[[group]]\nname = \"staff\"\ncpu_limit = 0.0\n\n[[profile]]",
            "group `staff` has cpu_limit 0",
        ),
        (
            "a group's memory without a unit's case",
            "[[profile]]",
            "[[group]]\nname = \"staff\"\nmem_limit = \"2g\"\n\n[[profile]]",
            "group `staff` has mem_limit `2g`",
        ),
        (
            "instructors that are not a group",
            "[[profile]]",
            "[[group]]\nname = \"staff\"\ncourse_folder = true\ninstructors = \"teachers\"\n\n[[profile]]",
            "group `staff` names `teachers` as its instructors, which is not another [[group]] of images/catalog.toml",
        ),
        (
            "a group its own instructors",
            "[[profile]]",
            "[[group]]\nname = \"staff\"\ncourse_folder = true\ninstructors = \"staff\"\n\n[[profile]]",
            "group `staff` names `staff` as its instructors, which is not another [[group]] of images/catalog.toml",
        ),
        (
            "instructors without a folder",
            "[[profile]]",
            "[[group]]\nname = \"staff\"\ninstructors = \"teachers\"\n\n[[group]]\nname = \"teachers\"\n\n[[profile]]",
            "group `staff` has instructors but no folder",
        ),
        (
            "groups on an image nobody spawns",
            "bootstrap = \"mmdebstrap\"",
            "bootstrap = \"mmdebstrap\"\ngroups = [\"staff\"]",
            "image `base` has single-user fields but not single_user = true",
        ),
        (
            "uses an unknown image",
            "parent = \"base\"",
            "parent = \"base\"\nuses = [\"nope\"]",
            "image `lab`: it uses `nope`, which is not listed before it in images/catalog.toml",
        ),
        (
            "uses its parent",
            "parent = \"base\"",
            "parent = \"base\"\nuses = [\"base\"]",
            "image `lab` names `base` twice (as its parent or in `uses`)",
        ),
        (
            "a bootstrapped image that uses another",
            "bootstrap = \"mmdebstrap\"",
            "bootstrap = \"mmdebstrap\"\nuses = [\"lab\"]",
            "image `base` is bootstrapped and also uses `lab`",
        ),
        ("no home", "home = \"/home/jovyan\"\n", "", "single-user image `lab` has no `home`"),
        ("relative home", "home = \"/home/jovyan\"", "home = \"home/jovyan\"", "image `lab`: home `home/jovyan` is not an absolute path"),
        ("no default_url", "default_url = \"/lab\"\n", "", "single-user image `lab` has no `default_url`"),
        (
            "relative default_url",
            "default_url = \"/lab\"",
            "default_url = \"lab\"",
            "image `lab`: default_url `lab` is not a path inside the user's server",
        ),
        (
            "another site as default_url",
            "default_url = \"/lab\"",
            "default_url = \"//evil.example/lab\"",
            "image `lab`: default_url `//evil.example/lab` is not a path inside the user's server",
        ),
        ("empty display_name", "display_name = \"Lab\"", "display_name = \" \"", "single-user image `lab` has no `display_name`"),
        (
            "placement that is no constraint",
            "default_url = \"/lab\"",
            "default_url = \"/lab\"\nplacement = [\"gpu\"]",
            "image `lab`: placement `gpu` is not a Swarm constraint",
        ),
        ("bad image name", "name = \"lab\"", "name = \"Lab!\"", "image name `Lab!` in images/catalog.toml is not valid"),
        ("image name ending in -", "name = \"lab\"", "name = \"lab-\"", "image name `lab-` in images/catalog.toml is not valid"),
        ("unknown field", "bootstrap", "bootstrapp", "images/catalog.toml is not a valid catalog: TOML parse error at line 4, column 1"),
        (
            "single-user fields without single_user",
            "single_user = true\n",
            "",
            "image `lab` has single-user fields but not single_user = true",
        ),
        ("bad profile memory", "mem_limit = \"1G\"", "mem_limit = \"lots\"", "profile `lab-small` has mem_limit `lots`"),
        ("lower-case memory unit", "mem_limit = \"1G\"", "mem_limit = \"1g\"", "profile `lab-small` has mem_limit `1g`"),
        ("memory with a byte suffix", "mem_limit = \"1G\"", "mem_limit = \"1GB\"", "profile `lab-small` has mem_limit `1GB`"),
        ("zero memory", "mem_limit = \"1G\"", "mem_limit = \"0G\"", "profile `lab-small` has mem_limit `0G`"),
        ("zero CPUs", "cpu_limit = 1.0", "cpu_limit = 0.0", "profile `lab-small` has cpu_limit 0"),
        ("infinite CPUs", "cpu_limit = 1.0", "cpu_limit = inf", "profile `lab-small` has cpu_limit inf"),
        (
            "profile of a non-user image",
            "image = \"lab\"",
            "image = \"base\"",
            "profile `lab-small` names `base`, which is not a single-user image",
        ),
        (
            "profile of an unknown image",
            "image = \"lab\"",
            "image = \"nope\"",
            "profile `lab-small` names `nope`, which is not a single-user image",
        ),
        (
            "empty profile display_name",
            "display_name = \"Lab, small\"",
            "display_name = \"\"",
            "profile `lab-small` has an empty display_name",
        ),
        (
            "bad profile name",
            "name = \"lab-small\"",
            "name = \"Lab small\"",
            "profile name `Lab small` in images/catalog.toml is not valid",
        ),
        (
            "bootstrap with a parent",
            "bootstrap = \"mmdebstrap\"",
            "bootstrap = \"mmdebstrap\"\nparent = \"lab\"",
            "image `base` is bootstrapped and also has a parent",
        ),
        ("neither parent nor bootstrap", "bootstrap = \"mmdebstrap\"\n", "", "image `base` has neither a parent nor a bootstrap"),
        (
            "folder outside images/",
            "name = \"lab\"\n",
            "name = \"lab\"\nfolder = \"../etc\"\n",
            "image `lab`: folder `../etc` is not a folder under images/",
        ),
    ];

    #[test]
    fn bad_catalogs_are_refused_with_their_message() {
        for (case, from, to, expected) in BAD_CATALOGS {
            assert!(GOOD.contains(from), "case `{case}`: GOOD has no `{from}`");
            let text = GOOD.replacen(from, to, 1);
            let err = Catalog::parse(&text).err().unwrap_or_else(|| panic!("case `{case}`: the catalog was accepted"));
            assert_eq!(err.message, *expected, "case `{case}`");
            assert!(!err.hint.is_empty(), "case `{case}`: no hint");
        }
    }

    #[test]
    fn duplicates_are_refused_with_their_message() {
        let second_image = "\n[[image]]\nname = \"lab2\"\nparent = \"base\"\nsingle_user = true\ndisplay_name = \"Lab\"\nhome = \"/home/jovyan\"\ndefault_url = \"/lab\"\n";
        let second_profile =
            "\n[[profile]]\nname = \"lab-big\"\ndisplay_name = \"Lab, small\"\nimage = \"lab\"\ncpu_limit = 2.0\nmem_limit = \"4G\"\n";
        let cases = [
            (format!("{GOOD}\n[[image]]\nname = \"lab\"\nparent = \"base\"\n"), "image `lab` is listed twice in images/catalog.toml"),
            (format!("{GOOD}{second_image}"), "image `lab2` has the display_name `Lab` of an earlier image"),
            (
                format!("{GOOD}{second_profile}").replacen("name = \"lab-big\"", "name = \"lab-small\"", 1),
                "profile `lab-small` is listed twice in images/catalog.toml",
            ),
            (format!("{GOOD}{second_profile}"), "profile `lab-big` has the display_name `Lab, small` of an earlier profile"),
            (String::new(), "images/catalog.toml lists no image"),
        ];
        for (text, expected) in cases {
            assert_eq!(Catalog::parse(&text).unwrap_err().message, expected);
        }
    }

    #[test]
    fn missing_folder_and_dockerfile_are_named() {
        let root = std::env::temp_dir().join(format!("jhub-catalog-test-{}", std::process::id()));
        std::fs::create_dir_all(root.join("images/base")).unwrap();
        std::fs::write(root.join("images/base/base.toml"), "").unwrap();
        let catalog = Catalog::parse(GOOD).unwrap();
        let missing_folder = catalog.check_folders(&root).unwrap_err();
        assert_eq!(missing_folder.message, "image `lab`: folder images/lab does not exist");
        std::fs::create_dir_all(root.join("images/lab")).unwrap();
        let missing_dockerfile = catalog.check_folders(&root).unwrap_err();
        assert_eq!(missing_dockerfile.message, "image `lab`: images/lab/Dockerfile does not exist");
        std::fs::write(root.join("images/lab/Dockerfile"), "FROM scratch\n").unwrap();
        catalog.check_folders(&root).unwrap();
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn memory_sizes_convert_to_bytes() {
        assert_eq!(memory_bytes("1.5G"), Some(3 << 29));
        assert_eq!(memory_bytes("512M"), Some(512 << 20));
        assert_eq!(memory_bytes("4096"), Some(4096));
        assert_eq!(memory_bytes("1g"), None);
    }

    #[test]
    fn memory_sizes_follow_the_hubs_rule() {
        for good in ["1G", "512M", "1.5G", "4096", "2T", "1K"] {
            assert!(is_memory_size(good), "{good} should be accepted");
        }
        for bad in ["2g", "0G", "01G", "1.G", ".5G", "G", "", "lots", "1GB", "-1G"] {
            assert!(!is_memory_size(bad), "{bad} should be refused");
        }
    }

    #[test]
    fn selection_pulls_in_ancestors_and_rejects_unknown_names() {
        let catalog = Catalog::parse(GOOD).unwrap();
        let names = |selection: &[&str]| -> Vec<String> {
            let selection: Vec<String> = selection.iter().map(|s| s.to_string()).collect();
            catalog.with_ancestors(&selection).unwrap().iter().map(|image| image.name.clone()).collect()
        };
        assert_eq!(names(&["lab"]), ["base", "lab"]);
        assert_eq!(names(&[]), ["base", "lab"]);
        let unknown = catalog.with_ancestors(&["labb".to_string()]).unwrap_err();
        assert_eq!(unknown.message, "unknown image `labb`");
        assert_eq!(unknown.hint, "the catalog has: base, lab");
    }
}
