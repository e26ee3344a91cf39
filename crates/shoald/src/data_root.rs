//! The data root's permissions: the store, the node's keys and the task logs
//! hold the CA key, join-token secrets and services' environment values, so
//! the data root and every directory in it are 0700 and every file 0600,
//! whatever the umask. [`prepare`] makes it so at start (also fixing an
//! install made before this rule); [`write_private_file`] is how identity,
//! keys and certificates are written: whole or not at all, even across a
//! power cut.

use std::fs::{File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;

/// Mode of the data root and of every directory in it.
pub const DIR_MODE: u32 = 0o700;

/// Mode of every file in the data root.
pub const FILE_MODE: u32 = 0o600;

/// Creates the data root if missing, then makes it and everything in it
/// private. Returns how many entries had a wider mode (and were fixed).
pub fn prepare(root: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(root)
        .with_context(|| format!("create --data-root {}", root.display()))?;
    let fixed = restrict_tree(root)?;
    if fixed > 0 {
        tracing::info!(
            fixed,
            data_root = %root.display(),
            "data root: made {fixed} files and directories private (0700 directories, 0600 files)"
        );
    }
    Ok(fixed)
}

/// Sets `path` (a directory) and everything under it to [`DIR_MODE`] /
/// [`FILE_MODE`]. Symbolic links are not followed; sockets and other
/// special files are left alone. Returns how many modes changed.
fn restrict_tree(path: &Path) -> anyhow::Result<usize> {
    let mut fixed = 0;
    let mut pending = vec![path.to_path_buf()];
    while let Some(dir) = pending.pop() {
        fixed += usize::from(restrict(&dir, DIR_MODE)?);
        let entries = std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("read {}", dir.display()))?;
            let kind = entry
                .file_type()
                .with_context(|| format!("stat {}", entry.path().display()))?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file() {
                fixed += usize::from(restrict(&entry.path(), FILE_MODE)?);
            }
        }
    }
    Ok(fixed)
}

/// Sets `mode` when the permission bits differ; true when it did.
fn restrict(path: &Path, mode: u32) -> anyhow::Result<bool> {
    let meta =
        std::fs::symlink_metadata(path).with_context(|| format!("stat {}", path.display()))?;
    if meta.permissions().mode() & 0o7777 == mode {
        return Ok(false);
    }
    std::fs::set_permissions(path, Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))?;
    Ok(true)
}

/// Creates `dir` (and missing parents) and makes it [`DIR_MODE`].
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    restrict(dir, DIR_MODE)?;
    Ok(())
}

/// Writes `body` to `path` as a [`FILE_MODE`] file that is either the old
/// one or the new one, never empty or half-written: a temporary file in the
/// same directory, fsynced, renamed over `path`, then the directory fsynced
/// so the rename itself survives a power cut.
pub fn write_private_file(path: &Path, body: &[u8]) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .with_context(|| format!("{} has no parent directory", path.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} has no file name", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    // The mode given to open(2) is narrowed by the umask, and an old
    // temporary file keeps its mode: set it outright.
    file.set_permissions(Permissions::from_mode(FILE_MODE))
        .with_context(|| format!("chmod {}", tmp.display()))?;
    file.write_all(body)
        .with_context(|| format!("write {}", tmp.display()))?;
    file.sync_all()
        .with_context(|| format!("fsync {}", tmp.display()))?;
    drop(file);
    std::fs::rename(&tmp, path)
        .with_context(|| format!("rename {} to {}", tmp.display(), path.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync directory {}", dir.display()))
}

#[cfg(test)]
mod tests;
