//! # synod-pbft
//!
//! Practical Byzantine Fault Tolerance (Castro & Liskov, OSDI'99 / TOCS'02)
//! as a sans-IO core behind [`synod_core::Protocol`].
#![deny(missing_docs)]
