//! # synod-paxos
//!
//! Single-decree Paxos (the Synod protocol) and Multi-Paxos as sans-IO
//! cores behind [`synod_core::Protocol`].
#![deny(missing_docs)]
