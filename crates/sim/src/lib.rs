//! # synod-sim
//!
//! The deterministic simulator (skeleton; being written).
#![deny(missing_docs)]

pub mod invariant;
pub use invariant::{Invariant, StepView, Violation};
