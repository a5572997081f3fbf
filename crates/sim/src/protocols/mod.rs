//! [`SimProtocol`](crate::SimProtocol) implementations for Synod's protocols.

pub mod raft;
