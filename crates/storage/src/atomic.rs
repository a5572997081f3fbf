//! Replacing a file atomically: write a temporary file, fsync it, rename it
//! over the target, fsync the directory. A crash at any point leaves either
//! the old file or the new one, whole.

use crate::error::{Error, Poison, Result};
use crate::vfs::{Vfs, VfsFile};
use std::path::Path;

/// Makes `temp` (already fully written through `file`) durable and renames
/// it to `path` in `dir`, durably. fsync failures are fatal and poison
/// `poison`; a failed rename removes `temp` and is not fatal.
pub(crate) fn commit_temp(
    fs: &dyn Vfs,
    file: &dyn VfsFile,
    temp: &Path,
    path: &Path,
    dir: &Path,
    poison: &Poison,
) -> Result<()> {
    file.sync_data().map_err(|e| poison.taint(Error::fatal("fsync", temp, e)))?;
    if let Err(e) = fs.rename(temp, path) {
        let _ = fs.remove_file(temp);
        return Err(Error::io("rename", temp, e));
    }
    fs.sync_dir(dir).map_err(|e| poison.taint(Error::fatal("fsync", dir, e)))
}

/// Replaces `dir/name` with `bytes` atomically (via `dir/name.tmp`).
pub(crate) fn replace_file(
    fs: &dyn Vfs,
    dir: &Path,
    name: &str,
    bytes: &[u8],
    poison: &Poison,
) -> Result<()> {
    let temp = dir.join(format!("{name}.tmp"));
    let path = dir.join(name);
    let file = fs.create_file(&temp).map_err(|e| Error::io("create", &temp, e))?;
    if let Err(e) = file.write_all_at(bytes, 0) {
        let _ = fs.remove_file(&temp);
        return Err(Error::io("write", &temp, e));
    }
    commit_temp(fs, &*file, &temp, &path, dir, poison)
}
