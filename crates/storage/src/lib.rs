//! # synod-storage
//!
//! Durable storage for a Synod node (DESIGN.md §3).
#![deny(missing_docs)]
