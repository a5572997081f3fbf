//! The hard state: one small opaque value (Raft's term and vote, a Paxos
//! acceptor's promised ballot, a PBFT view) that must survive a crash and
//! is replaced whole. Each [`HardStateFile::save`] writes a temporary file,
//! fsyncs it, renames it over `hardstate` and fsyncs the directory, so a
//! crash leaves the old value or the new one, never a mix.
//!
//! Layout of `hardstate` (little-endian, CRC-32C):
//!
//! ```text
//! offset  size  field
//!      0     8  magic     b"SYNODHST"
//!      8     4  version   1
//!     12     4  len       payload bytes (<= 1 MiB)
//!     16     4  crc       CRC-32C of bytes 0..16 followed by the payload
//!     20   len  payload
//! ```

use crate::atomic::replace_file;
use crate::error::{Error, Poison, Result};
use crate::vfs::{StdFs, Vfs, read_exact_at};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const MAGIC: [u8; 8] = *b"SYNODHST";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 20;
/// The largest hard state accepted.
const MAX_HARD_STATE_BYTES: usize = 1 << 20;
const FILE_NAME: &str = "hardstate";

/// The hard-state file in a directory.
#[derive(Debug)]
pub struct HardStateFile {
    fs: Arc<dyn Vfs>,
    dir: PathBuf,
    poison: Poison,
}

impl HardStateFile {
    /// Opens `dir/hardstate` on the real file system (creating `dir`);
    /// returns the saved value, if any. A damaged file is an
    /// [`Error::Corrupt`].
    pub fn open(dir: impl AsRef<Path>) -> Result<(HardStateFile, Option<Vec<u8>>)> {
        HardStateFile::open_with(Arc::new(StdFs), dir)
    }

    /// [`HardStateFile::open`] on any file layer.
    pub fn open_with(
        fs: Arc<dyn Vfs>,
        dir: impl AsRef<Path>,
    ) -> Result<(HardStateFile, Option<Vec<u8>>)> {
        let dir = dir.as_ref().to_path_buf();
        fs.create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        let names = fs.list_dir(&dir).map_err(|e| Error::io("list directory", &dir, e))?;
        let temp_name = format!("{FILE_NAME}.tmp");
        if names.contains(&temp_name) {
            let temp = dir.join(&temp_name);
            fs.remove_file(&temp).map_err(|e| Error::io("remove", &temp, e))?;
        }
        let state = if names.iter().any(|n| n == FILE_NAME) {
            Some(read_hard_state(&*fs, &dir.join(FILE_NAME))?)
        } else {
            None
        };
        Ok((HardStateFile { fs, dir, poison: Poison::default() }, state))
    }

    /// Replaces the hard state with `state`, durably before returning. A
    /// fatal error ([`Error::is_fatal`]) poisons this object.
    pub fn save(&mut self, state: &[u8]) -> Result<()> {
        self.poison.check()?;
        if state.len() > MAX_HARD_STATE_BYTES {
            return Err(Error::InvalidArgument(format!(
                "hard state of {} bytes is over the {MAX_HARD_STATE_BYTES}-byte limit",
                state.len()
            )));
        }
        let mut bytes = Vec::with_capacity(HEADER_LEN + state.len());
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&(state.len() as u32).to_le_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes), state);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes.extend_from_slice(state);
        replace_file(&*self.fs, &self.dir, FILE_NAME, &bytes, &self.poison)
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }
}

fn read_hard_state(fs: &dyn Vfs, path: &Path) -> Result<Vec<u8>> {
    let file = fs.open_file(path).map_err(|e| Error::io("open", path, e))?;
    let len = file.len().map_err(|e| Error::io("stat", path, e))?;
    if len < HEADER_LEN as u64 || len > (HEADER_LEN + MAX_HARD_STATE_BYTES) as u64 {
        return Err(Error::corrupt(
            path,
            0,
            format!("hard state file has an impossible length {len}"),
        ));
    }
    let mut bytes = vec![0u8; len as usize];
    read_exact_at(&*file, &mut bytes, 0).map_err(|e| Error::io("read", path, e))?;
    decode(&bytes).map_err(|(offset, reason)| Error::corrupt(path, offset, reason))
}

fn decode(bytes: &[u8]) -> Result<Vec<u8>, (u64, String)> {
    if bytes[0..8] != MAGIC {
        return Err((0, "bad magic: not a Synod hard state file".into()));
    }
    let field =
        |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    let payload_len = field(12) as usize;
    if HEADER_LEN + payload_len != bytes.len() {
        return Err((
            12,
            format!("length field {payload_len} does not match the file's {} bytes", bytes.len()),
        ));
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&bytes[0..16]), &bytes[HEADER_LEN..]);
    if crc != field(16) {
        return Err((16, "hard state checksum mismatch".into()));
    }
    if field(8) != VERSION {
        return Err((8, format!("unsupported hard state version {}", field(8))));
    }
    Ok(bytes[HEADER_LEN..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FaultFs;

    fn dir() -> PathBuf {
        PathBuf::from("/node")
    }

    #[test]
    fn saved_state_survives_a_crash_and_a_crash_mid_save_keeps_old_or_new() {
        let fs = FaultFs::new();
        let (mut hs, state) = HardStateFile::open_with(Arc::new(fs.clone()), dir()).expect("open");
        assert_eq!(state, None);
        hs.save(b"term=1").expect("save");
        fs.crash(7);
        let (mut hs, state) = HardStateFile::open_with(Arc::new(fs.clone()), dir()).expect("open");
        assert_eq!(state.as_deref(), Some(b"term=1".as_slice()));
        // A crash with the second save only partly done (its fsync failed
        // and poisoned the file) leaves one of the two values whole.
        fs.fail_next_syncs(1);
        let err = hs.save(b"term=2 vote=3").expect_err("fsync fails");
        assert!(err.is_fatal());
        assert!(matches!(hs.save(b"x"), Err(Error::Poisoned { .. })));
        for seed in 0..16 {
            fs.crash(seed);
            let (_, state) = HardStateFile::open_with(Arc::new(fs.clone()), dir()).expect("open");
            assert_eq!(state.as_deref(), Some(b"term=1".as_slice()));
        }
    }

    #[test]
    fn every_flipped_bit_is_reported_as_corruption_of_the_file() {
        let fs = FaultFs::new();
        let (mut hs, _) = HardStateFile::open_with(Arc::new(fs.clone()), dir()).expect("open");
        hs.save(b"term=9").expect("save");
        let path = hs.path();
        for bit in 0..((HEADER_LEN as u64 + 6) * 8) {
            assert!(fs.flip_bit(&path, bit));
            match HardStateFile::open_with(Arc::new(fs.clone()), dir()) {
                Err(Error::Corrupt { path: p, .. }) => assert_eq!(p, path),
                other => panic!("bit {bit}: expected corruption, got {other:?}"),
            }
            assert!(fs.flip_bit(&path, bit));
        }
    }

    #[test]
    fn a_full_disk_fails_the_save_and_keeps_the_old_value() {
        let fs = FaultFs::new();
        let (mut hs, _) = HardStateFile::open_with(Arc::new(fs.clone()), dir()).expect("open");
        hs.save(b"old").expect("save");
        fs.set_space_limit(Some(fs.used_bytes() + 4));
        assert!(matches!(hs.save(b"new value"), Err(Error::NoSpace { .. })));
        fs.set_space_limit(None);
        let (_, state) = HardStateFile::open_with(Arc::new(fs.clone()), dir()).expect("open");
        assert_eq!(state.as_deref(), Some(b"old".as_slice()));
    }
}
