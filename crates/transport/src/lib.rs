//! # synod-transport
//!
//! Peer-to-peer transport for a Synod node (DESIGN.md §3).
#![deny(missing_docs)]
