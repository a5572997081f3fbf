//! Cheap fingerprints of what log entries and committed positions carry, so
//! checkers can remember a whole history in 8 bytes per position.

use std::hash::{Hash, Hasher};
use synod_core::Command;
use synod_raft::Payload;

/// A fingerprint of a position's content: a command, or `None` for a no-op.
/// Deterministic across runs (fixed-key SipHash), so violations replay.
pub(crate) fn command_digest(command: Option<&Command>) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    command.hash(&mut hasher);
    hasher.finish()
}

/// The fingerprint of a Raft entry's payload; equal to the
/// [`command_digest`] of the `Committed` it becomes.
pub(crate) fn payload_digest(payload: &Payload) -> u64 {
    match payload {
        Payload::Noop => command_digest(None),
        Payload::Command(command) => command_digest(Some(command)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synod_core::ClientId;

    #[test]
    fn digests_tell_commands_and_noops_apart() {
        let a = Command::new(ClientId(1), 1, "put x 1");
        let b = Command::new(ClientId(1), 1, "put x 2");
        assert_eq!(command_digest(Some(&a)), command_digest(Some(&a.clone())));
        assert_ne!(command_digest(Some(&a)), command_digest(Some(&b)));
        assert_ne!(command_digest(Some(&a)), command_digest(None));
        assert_eq!(payload_digest(&Payload::Command(a.clone())), command_digest(Some(&a)));
        assert_eq!(payload_digest(&Payload::Noop), command_digest(None));
    }
}
