use std::fs::Permissions;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::{prepare, write_private_file, DIR_MODE, FILE_MODE};

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, Permissions::from_mode(mode)).unwrap();
}

#[test]
fn prepare_makes_an_existing_install_private_and_counts_what_it_fixed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    let store = root.join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::write(store.join("state.redb"), b"secret").unwrap();
    std::fs::write(root.join("node.json"), b"{}").unwrap();
    chmod(&root, 0o755);
    chmod(&store, 0o755);
    chmod(&store.join("state.redb"), 0o644);
    chmod(&root.join("node.json"), 0o600);

    assert_eq!(prepare(&root).unwrap(), 3, "root, store/, state.redb");
    assert_eq!(mode(&root), DIR_MODE);
    assert_eq!(mode(&store), DIR_MODE);
    assert_eq!(mode(&store.join("state.redb")), FILE_MODE);
    assert_eq!(mode(&root.join("node.json")), FILE_MODE);
    assert_eq!(prepare(&root).unwrap(), 0, "nothing left to fix");
}

#[test]
fn prepare_creates_a_missing_root_private() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("a/b/data");
    prepare(&root).unwrap();
    assert_eq!(mode(&root), DIR_MODE);
}

#[test]
fn prepare_does_not_follow_symbolic_links() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside.txt");
    std::fs::write(&outside, b"not ours").unwrap();
    chmod(&outside, 0o644);
    let root = tmp.path().join("data");
    std::fs::create_dir(&root).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
    prepare(&root).unwrap();
    assert_eq!(mode(&outside), 0o644);
}

#[test]
fn write_private_file_replaces_whole_and_is_0600_whatever_was_there() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("node.key");
    std::fs::write(&path, b"old").unwrap();
    chmod(&path, 0o644);
    // A temporary file left by a crash, with a wide mode.
    let stale = tmp.path().join(".node.key.tmp");
    std::fs::write(&stale, b"half").unwrap();
    chmod(&stale, 0o666);

    write_private_file(&path, b"new key").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new key");
    assert_eq!(mode(&path), FILE_MODE);
    assert!(!stale.exists(), "the temporary file was renamed into place");
}
