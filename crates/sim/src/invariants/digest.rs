//! Cheap fingerprints of what log entries and committed positions carry, so
//! checkers can remember a whole history in 8 bytes per position.
//!
//! The hash is a word-at-a-time multiply–rotate (the Fx hash of rustc), a
//! few times faster than SipHash on the short commands the simulator
//! replicates, and deterministic, so violations replay. Each step
//! `h → (rotl(h, 5) ^ word) · K` is a bijection of `h` for a fixed word, so
//! two inputs of equal length that differ in a single word never collide;
//! lengths are hashed too. Collisions are not a security concern here: a
//! checker compares what correct nodes produced, not adversarial input.

use std::hash::{Hash, Hasher};
use synod_core::Command;
use synod_raft::Payload;

/// A fingerprint of a position's content: a command, or `None` for a no-op.
/// Deterministic across runs (fixed-key SipHash), so violations replay.
pub(crate) fn command_digest(command: Option<&Command>) -> u64 {
    let mut hasher = WordHasher(0);
    command.hash(&mut hasher);
    hasher.finish()
}

/// The Fx hash: fold each 64-bit word in with a rotate, xor and multiply.
struct WordHasher(u64);

impl WordHasher {
    const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The fingerprint of a Raft entry's payload; equal to the
/// [`command_digest`] of the `Committed` it becomes (a configuration entry
/// is applied as a no-op).
pub(crate) fn payload_digest(payload: &Payload) -> u64 {
    match payload {
        Payload::Noop | Payload::Config(_) => command_digest(None),
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

    #[test]
    fn digests_tell_apart_commands_differing_in_one_byte_or_in_length() {
        let base = Command::new(ClientId(1), 1, vec![0u8; 20]);
        let digest = command_digest(Some(&base));
        for position in 0..20 {
            let mut op = vec![0u8; 20];
            op[position] = 1;
            assert_ne!(digest, command_digest(Some(&Command::new(ClientId(1), 1, op))));
        }
        assert_ne!(digest, command_digest(Some(&Command::new(ClientId(1), 1, vec![0u8; 21]))));
        assert_ne!(digest, command_digest(Some(&Command::new(ClientId(2), 1, vec![0u8; 20]))));
        assert_ne!(digest, command_digest(Some(&Command::new(ClientId(1), 2, vec![0u8; 20]))));
    }
}
