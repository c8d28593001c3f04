//! `cargo xtask new-image`: a team's own image made from a template folder (such as the uv template,
//! `images/singleuser-uv`) in one step: the folder copied whole to `images/<name>`, and a catalog entry
//! whose parent, home and default URL are those of the catalog image built from the chosen flavour.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use jhub_docker::catalog::{self, Catalog, ImageEntry, SingleUser};
use serde::Serialize;

use crate::context::IGNORED_DIRS;
use crate::ui::{self, UserError};

/// What `new-image` was asked for (parsed in main.rs).
pub struct Options {
    pub name: String,
    /// A folder under `images/` that catalog images are built from.
    pub template: String,
    /// The suffix of one of the template's `Dockerfile.<flavour>` files.
    pub flavour: String,
    pub display_name: Option<String>,
    pub description: Option<String>,
}

/// The `[[image]]` entry `new-image` appends, in the order the catalog's own entries list their fields.
#[derive(Debug, Serialize)]
struct NewEntry {
    name: String,
    folder: String,
    dockerfile: String,
    parent: String,
    single_user: bool,
    display_name: String,
    description: String,
    home: String,
    default_url: String,
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let root = jhub_docker::repo_root();
    let entry = create(&root, options)?;
    let name = &entry.name;
    ui::note(&format!(
        "made image `{name}` from images/{} ({}): images/{name}/ and its entry in images/catalog.toml",
        template_name(&options.template),
        entry.dockerfile
    ));
    ui::note("next:");
    ui::note(&format!("  1. add your Python packages to images/{name}/requirements.in (Debian packages: build.sh)"));
    ui::note("  2. cargo xtask lock            hash-locks them into requirements.txt and the flavours' locks");
    ui::note(&format!("  3. cargo xtask build-images {name}"));
    ui::note(&format!("  4. cargo xtask up              the spawn dropdown then offers \"{}\"", entry.display_name));
    ui::note(&format!("commit images/{name}/, images/catalog.toml and images.lock"));
    Ok(())
}

/// Copies the template and adds the catalog entry; returns the entry. Every refusal comes before anything is
/// written, and a failure after the copy removes it, so the tree is either as it was or has the whole image.
fn create(root: &Path, options: &Options) -> Result<NewEntry, UserError> {
    let catalog = Catalog::load(root)?;
    let images = root.join("images");
    let Options { name, flavour, .. } = options;
    let template = template_name(&options.template);
    if !catalog::is_name(name) {
        return Err(UserError::new(
            format!("image name `{name}` is not valid"),
            "names use lowercase letters, digits and `-` (not first or last), such as `team-demo`",
        ));
    }
    if catalog.get(name).is_some() {
        return Err(UserError::new(
            format!("image `{name}` is already in images/catalog.toml"),
            "choose another name (`cargo xtask new-image` adds images; it does not change one)",
        ));
    }
    let target = images.join(name);
    if std::fs::symlink_metadata(&target).is_ok() {
        return Err(UserError::new(
            format!("images/{name} already exists"),
            "choose another name, or remove that folder if nothing uses it",
        ));
    }
    let templates = template_folders(&catalog);
    let is_plain_folder_name = !template.is_empty() && !template.contains('/') && template != "." && template != "..";
    if !is_plain_folder_name || !images.join(template).is_dir() {
        return Err(UserError::new(
            format!("template `{template}` is not a folder under images/"),
            format!("--from names a template folder under images/; the catalog's are: {}", templates.join(", ")),
        ));
    }
    let flavours: Vec<(&ImageEntry, &str, &SingleUser)> = catalog
        .single_user_images()
        .filter(|(image, _)| image.folder == template)
        .filter_map(|(image, single_user)| image.flavour().map(|flavour| (image, flavour, single_user)))
        .collect();
    if flavours.is_empty() {
        return Err(UserError::new(
            format!("images/{template} is not a template of the catalog"),
            format!(
                "a template is a folder that single-user images of images/catalog.toml build from its Dockerfile.<flavour> files; \
                 the catalog's are: {}",
                templates.join(", ")
            ),
        ));
    }
    let Some((from, _, single_user)) = flavours.iter().find(|(_, candidate, _)| candidate == flavour) else {
        let known: BTreeSet<&str> = flavours.iter().map(|(_, flavour, _)| *flavour).collect();
        return Err(UserError::new(
            format!("template `{template}` has no flavour `{flavour}`"),
            format!("its flavours: {}", known.into_iter().collect::<Vec<_>>().join(", ")),
        ));
    };
    let parent = from.parent().expect("a flavour is built from a Dockerfile, so it has a parent").to_string();
    let flavour_in_words = single_user.display_name.trim_end_matches("(template)").trim();
    let entry = NewEntry {
        name: name.clone(),
        folder: name.clone(),
        dockerfile: format!("Dockerfile.{flavour}"),
        parent,
        single_user: true,
        display_name: options.display_name.clone().unwrap_or_else(|| format!("{name} ({flavour_in_words})")),
        description: options
            .description
            .clone()
            .unwrap_or_else(|| format!("{name}, made from the {template} template's {flavour} flavour")),
        home: single_user.home.clone(),
        default_url: single_user.default_url.clone(),
    };

    // The catalog as it will be, validated by the catalog's own rules before anything is written.
    let catalog_path = jhub_docker::catalog_path(root);
    let old_text = std::fs::read_to_string(&catalog_path)
        .map_err(|err| UserError::new(format!("cannot read {}: {err}", catalog_path.display()), "run from a jhub-docker checkout"))?;
    let new_text = appended(&old_text, &entry, template);
    let new_catalog = Catalog::parse(&new_text)?;
    debug_assert!(new_catalog.get(name).is_some());

    copy_folder(&images.join(template), &target, template)?;
    let written = new_catalog.check_folders(root).and_then(|()| write_atomically(&catalog_path, &new_text));
    if let Err(err) = written {
        let _ = std::fs::remove_dir_all(&target);
        return Err(err);
    }
    Ok(entry)
}

/// The template folder `--from` names: `images/singleuser-uv/`, as a shell completes it, is `singleuser-uv`.
fn template_name(from: &str) -> &str {
    let trimmed = from.trim_end_matches('/');
    trimmed.strip_prefix("images/").unwrap_or(trimmed)
}

/// The folders single-user catalog images build from a `Dockerfile.<flavour>`: the templates.
fn template_folders(catalog: &Catalog) -> Vec<String> {
    let folders: BTreeSet<&str> =
        catalog.single_user_images().filter(|(image, _)| image.flavour().is_some()).map(|(image, _)| image.folder.as_str()).collect();
    if folders.is_empty() { vec!["(none)".to_string()] } else { folders.into_iter().map(str::to_string).collect() }
}

/// The catalog text with the new entry appended: the file's comments and order are kept. An `[[image]]` may
/// follow the `[[profile]]` tables (TOML appends it to the `image` array).
fn appended(text: &str, entry: &NewEntry, template: &str) -> String {
    let fields = toml::to_string(entry).expect("an entry of strings and a bool always serializes");
    let mut new_text = text.to_string();
    if !new_text.is_empty() && !new_text.ends_with('\n') {
        new_text.push('\n');
    }
    new_text.push_str(&format!(
        "\n# Made by `cargo xtask new-image` from the {template} template ({}).\n[[image]]\n{fields}",
        entry.dockerfile
    ));
    new_text
}

/// Copies `from` to `to` through a temporary folder beside `to`, renamed into place once complete. Regular
/// files only, modes kept (the executable bit matters to the build context); `IGNORED_DIRS` are left out.
fn copy_folder(from: &Path, to: &Path, template: &str) -> Result<(), UserError> {
    let file_name = to.file_name().expect("images/<name>").to_string_lossy();
    let temporary = to.with_file_name(format!(".{file_name}.new-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&temporary);
    let result = copy_tree(from, &temporary, template).and_then(|()| {
        std::fs::rename(&temporary, to)
            .map_err(|err| UserError::new(format!("cannot create {}: {err}", to.display()), "check that images/ is writable"))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&temporary);
    }
    result
}

fn copy_tree(from: &Path, to: &Path, template: &str) -> Result<(), UserError> {
    let io_error = |path: &Path, err: std::io::Error| {
        UserError::new(format!("cannot copy {}: {err}", path.display()), "check the permissions of images/ and the template")
    };
    std::fs::create_dir(to).map_err(|err| io_error(to, err))?;
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(from).map_err(|err| io_error(from, err))?.filter_map(|entry| entry.ok().map(|entry| entry.path())).collect();
    entries.sort();
    for path in entries {
        let metadata = std::fs::symlink_metadata(&path).map_err(|err| io_error(&path, err))?;
        let file_name = path.file_name().expect("entries have names");
        let destination = to.join(file_name);
        if metadata.is_dir() {
            if !IGNORED_DIRS.iter().any(|ignored| file_name == *ignored) {
                copy_tree(&path, &destination, template)?;
            }
        } else if metadata.is_file() {
            // std::fs::copy copies the permission bits too.
            std::fs::copy(&path, &destination).map_err(|err| io_error(&path, err))?;
        } else {
            let relative = path.strip_prefix(from).unwrap_or(&path).display().to_string();
            return Err(UserError::new(
                format!("template `{template}`: {relative} is a link or special file"),
                "image folders hold regular files only: copy the file in instead of linking it",
            ));
        }
    }
    Ok(())
}

/// Replaces `path` with `text` through a temporary file and a rename: the catalog is never half-written.
fn write_atomically(path: &Path, text: &str) -> Result<(), UserError> {
    jhub_docker::write_atomically(path, text.as_bytes(), 0o644)
        .map_err(|err| UserError::new(format!("cannot write {}: {err}", path.display()), "check that images/ is writable"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use jhub_docker::catalog::Recipe;

    const CATALOG: &str = r#"# The catalog's own comment, kept by new-image.

[[image]]
name = "base"
bootstrap = "mmdebstrap"

[[image]]
name = "middle"
parent = "base"

[[image]]
name = "minimal"
parent = "base"
single_user = true
display_name = "Minimal"
home = "/home/jovyan"
default_url = "/lab"

# The template's flavours.
[[image]]
name = "tmpl-lab"
folder = "tmpl"
dockerfile = "Dockerfile.lab"
parent = "middle"
single_user = true
display_name = "Lab (template)"
home = "/home/ewn"
default_url = "/lab"

[[image]]
name = "tmpl-solo"
folder = "tmpl"
dockerfile = "Dockerfile.solo"
parent = "base"
single_user = true
display_name = "solo only (template)"
home = "/home/ewn"
default_url = "/"

[[profile]]
name = "minimal-small"
display_name = "Minimal, small"
image = "minimal"
cpu_limit = 1.0
mem_limit = "1G"
"#;

    /// A checkout with the catalog above, its folders, and a template with an executable script, a
    /// subfolder and a byte-code cache (left out of the copy). Removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        fn new(case: &str) -> Tree {
            let root = std::env::temp_dir().join(format!("jhub-new-image-{case}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&root);
            let files = [
                ("images/catalog.toml", CATALOG),
                ("images/base/base.toml", ""),
                ("images/middle/Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"),
                ("images/minimal/Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"),
                ("images/tmpl/Dockerfile.lab", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"),
                ("images/tmpl/Dockerfile.solo", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"),
                ("images/tmpl/requirements.in", "numpy==2.5.5\n"),
                ("images/tmpl/start.sh", "#!/bin/sh\nexec true\n"),
                ("images/tmpl/checks.toml", "[[check]]\nname = \"x\"\nargv = [\"true\"]\n"),
                ("images/tmpl/flavours/solo.in", "-r ../requirements.in\n"),
                ("images/tmpl/__pycache__/x.cpython-313.pyc", "cache"),
                ("images/tmpl/flavours/node_modules/x.js", "cache"),
            ];
            for (relative, text) in files {
                let path = root.join(relative);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            }
            std::fs::set_permissions(root.join("images/tmpl/start.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
            Tree(root)
        }

        /// Every file under images/ with its contents and whether it is executable.
        fn snapshot(&self) -> BTreeMap<String, (Vec<u8>, bool)> {
            let mut files = BTreeMap::new();
            let mut pending = vec![self.0.join("images")];
            while let Some(directory) = pending.pop() {
                for entry in std::fs::read_dir(&directory).unwrap() {
                    let path = entry.unwrap().path();
                    let metadata = std::fs::symlink_metadata(&path).unwrap();
                    if metadata.is_dir() {
                        pending.push(path);
                    } else {
                        let relative = path.strip_prefix(&self.0).unwrap().display().to_string();
                        files.insert(relative, (std::fs::read(&path).unwrap(), metadata.permissions().mode() & 0o111 != 0));
                    }
                }
            }
            files
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn options(name: &str, template: &str, flavour: &str) -> Options {
        Options { name: name.into(), template: template.into(), flavour: flavour.into(), display_name: None, description: None }
    }

    #[test]
    fn the_template_is_copied_and_the_entry_takes_the_flavours_parent_home_and_url() {
        let tree = Tree::new("success");
        let entry = create(&tree.0, &options("team-demo", "tmpl", "lab")).unwrap();
        assert_eq!(entry.display_name, "team-demo (Lab)");

        let copied = tree.0.join("images/team-demo");
        for relative in ["Dockerfile.lab", "Dockerfile.solo", "requirements.in", "start.sh", "checks.toml", "flavours/solo.in"] {
            assert_eq!(
                std::fs::read(copied.join(relative)).unwrap(),
                std::fs::read(tree.0.join("images/tmpl").join(relative)).unwrap(),
                "{relative} is copied as it is"
            );
        }
        let mode = |relative: &str| std::fs::metadata(copied.join(relative)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("start.sh"), 0o755, "the executable bit is kept");
        assert_eq!(mode("requirements.in") & 0o111, 0);
        assert!(!copied.join("__pycache__").exists() && !copied.join("flavours/node_modules").exists(), "caches are left out");
        let images: Vec<String> = std::fs::read_dir(tree.0.join("images"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!images.iter().any(|name| name.starts_with('.')), "no temporary folder is left: {images:?}");

        let text = std::fs::read_to_string(tree.0.join("images/catalog.toml")).unwrap();
        assert!(text.starts_with(CATALOG), "the catalog's text, comments included, is kept as it was");
        let catalog = Catalog::load(&tree.0).unwrap();
        let image = catalog.get("team-demo").unwrap();
        assert_eq!(image.folder, "team-demo");
        assert_eq!(image.recipe, Recipe::Dockerfile { dockerfile: "Dockerfile.lab".into(), parent: "middle".into() });
        let single_user = image.single_user.as_ref().unwrap();
        assert_eq!(single_user.home, "/home/ewn");
        assert_eq!(single_user.default_url, "/lab");
        assert_eq!(single_user.display_name, "team-demo (Lab)");
        assert_eq!(single_user.description, "team-demo, made from the tmpl template's lab flavour");
        assert_eq!(catalog.images.last().unwrap().name, "team-demo", "the new image comes last in the dropdown");
        assert_eq!(catalog.profiles.len(), 1);

        // A second flavour, with a name and description that need TOML's escaping.
        let mut solo = options("team-solo", "tmpl", "solo");
        solo.display_name = Some("Team \"solo\" \\ ünïcode".into());
        solo.description = Some("tab\there, # not a comment".into());
        create(&tree.0, &solo).unwrap();
        let catalog = Catalog::load(&tree.0).unwrap();
        let image = catalog.get("team-solo").unwrap();
        assert_eq!(image.parent(), Some("base"));
        let single_user = image.single_user.as_ref().unwrap();
        assert_eq!((single_user.home.as_str(), single_user.default_url.as_str()), ("/home/ewn", "/"));
        assert_eq!(single_user.display_name, "Team \"solo\" \\ ünïcode");
        assert_eq!(single_user.description, "tab\there, # not a comment");
    }

    #[test]
    fn refusals_name_the_problem_and_write_nothing() {
        let tree = Tree::new("refusals");
        std::fs::create_dir_all(tree.0.join("images/leftover")).unwrap();
        let mut taken_display_name = options("team-demo", "tmpl", "solo");
        taken_display_name.display_name = Some("Minimal".into());
        let cases = [
            (options("Team_Demo", "tmpl", "lab"), "image name `Team_Demo` is not valid"),
            (options("-demo", "tmpl", "lab"), "image name `-demo` is not valid"),
            (options("tmpl-lab", "tmpl", "lab"), "image `tmpl-lab` is already in images/catalog.toml"),
            (options("leftover", "tmpl", "lab"), "images/leftover already exists"),
            (options("team-demo", "nope", "lab"), "template `nope` is not a folder under images/"),
            (options("team-demo", "../images/tmpl", "lab"), "template `../images/tmpl` is not a folder under images/"),
            (options("team-demo", "tmpl", "marimo"), "template `tmpl` has no flavour `marimo`"),
            (options("team-demo", "minimal", "lab"), "images/minimal is not a template of the catalog"),
            (options("team-demo", "leftover", "lab"), "images/leftover is not a template of the catalog"),
            (taken_display_name, "image `team-demo` has the display_name `Minimal` of an earlier image"),
        ];
        let before = tree.snapshot();
        for (options, expected) in cases {
            let err = create(&tree.0, &options).err().unwrap_or_else(|| panic!("`{expected}`: the image was made"));
            assert_eq!(err.message, expected);
            assert!(!err.hint.is_empty(), "`{expected}`: no hint");
            assert_eq!(tree.snapshot(), before, "`{expected}`: something was written");
        }
        let unknown_flavour = create(&tree.0, &options("team-demo", "tmpl", "marimo")).unwrap_err();
        assert_eq!(unknown_flavour.hint, "its flavours: lab, solo");
        let unknown_template = create(&tree.0, &options("team-demo", "nope", "lab")).unwrap_err();
        assert_eq!(unknown_template.hint, "--from names a template folder under images/; the catalog's are: tmpl");
    }

    #[test]
    fn a_template_with_a_link_is_refused_and_leaves_no_folder() {
        let tree = Tree::new("link");
        std::os::unix::fs::symlink("/etc/hostname", tree.0.join("images/tmpl/hostname")).unwrap();
        let before = tree.snapshot();
        let err = create(&tree.0, &options("team-demo", "tmpl", "lab")).unwrap_err();
        assert_eq!(err.message, "template `tmpl`: hostname is a link or special file");
        assert_eq!(tree.snapshot(), before);
        let leftovers: Vec<_> =
            std::fs::read_dir(tree.0.join("images")).unwrap().filter(|entry| entry.as_ref().unwrap().file_name() == "team-demo").collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_catalog_that_cannot_be_written_leaves_no_folder_behind() {
        let tree = Tree::new("readonly");
        // A folder where the temporary catalog file would go makes the write fail after the copy.
        let blocker = tree.0.join(format!("images/.catalog.toml.tmp-{}", std::process::id()));
        std::fs::create_dir_all(blocker.join("x")).unwrap();
        let err = create(&tree.0, &options("team-demo", "tmpl", "lab")).unwrap_err();
        assert!(err.message.starts_with("cannot write "), "{}", err.message);
        assert!(!tree.0.join("images/team-demo").exists(), "the copied folder is removed");
        assert_eq!(std::fs::read_to_string(tree.0.join("images/catalog.toml")).unwrap(), CATALOG, "the catalog is untouched");
    }
}

#[cfg(test)]
mod copies {
    /// The uv template keeps its own copy of the shared Jupyter layer's `jhub-start` (a team copies the
    /// template's folder alone): the two stay the same file, executable.
    #[test]
    fn the_templates_jhub_start_is_the_layers() {
        use std::os::unix::fs::PermissionsExt;
        let root = jhub_docker::repo_root();
        let layer = root.join("images/jupyter/jhub-start");
        let template = root.join("images/singleuser-uv/jupyter/jhub-start");
        let read = |path: &std::path::Path| std::fs::read(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        assert!(read(&layer) == read(&template), "{} differs from {}: copy it over", template.display(), layer.display());
        for path in [&layer, &template] {
            let mode = std::fs::metadata(path).expect("read above").permissions().mode();
            assert!(mode & 0o111 != 0, "{} is not executable", path.display());
        }
    }
}
