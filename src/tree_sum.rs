//! The checksum of a file tree in a volume, as Python run in a throwaway container computes it: every
//! entry's path, type, mode, owner and modification time (whole seconds: Docker's archive, which a backup
//! streams, keeps no more), and each file's content, link target or device number. `adopt-volumes` compares a copy with its original by it; the tests compare a home before and
//! after a backup round trip by it. Sockets are left out: they are a running program's meeting point, not
//! data, and Docker's archive (what a backup streams) skips them.

/// Python defining `tree_sum(root: bytes) -> str` (hex sha256). The root's own mode and owner count, not
/// its times (a restore or a copy writes into a root that already exists).
pub const TREE_SUM_PY: &str = r#"
import hashlib, os, stat

def tree_sum(root):
    digest = hashlib.sha256()
    def entry(path, relative):
        info = os.lstat(path)
        if stat.S_ISSOCK(info.st_mode):
            return
        digest.update(b"%s\0%o\0%d\0%d\0" % (relative, info.st_mode, info.st_uid, info.st_gid))
        if relative != b".":
            digest.update(b"%d\0" % int(info.st_mtime))
        if stat.S_ISREG(info.st_mode):
            with open(path, "rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
        elif stat.S_ISLNK(info.st_mode):
            digest.update(os.readlink(path))
        elif stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
            digest.update(b"%d" % info.st_rdev)
        digest.update(b"\0\0")
    entry(root, b".")
    for folder, folders, files in os.walk(root):
        folders.sort()
        for name in sorted(folders + files):
            path = os.path.join(folder, name)
            entry(path, os.path.relpath(path, root))
    return digest.hexdigest()
"#;

/// A whole script: prints `tree_sum` of the folder named by its first argument.
pub fn print_tree_sum_script() -> String {
    format!("{TREE_SUM_PY}\nimport sys\nprint(tree_sum(os.fsencode(sys.argv[1])))\n")
}
