//! # synod-kv
//!
//! The replicated multi-version key-value state machine (DESIGN.md §4).
#![deny(missing_docs)]
