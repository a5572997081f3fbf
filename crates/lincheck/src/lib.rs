//! # synod-lincheck
//!
//! Linearizability checking of client histories (skeleton; being written).
#![deny(missing_docs)]
