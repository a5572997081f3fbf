//! The hook through which checkers watch a simulation.
//!
//! The simulator calls every [`Invariant`] after each event a node handles,
//! handing it the node's core and the output that event produced, and tells
//! it when writes become durable and when nodes crash and restart. Checkers
//! must be incremental — look at what this step changed, not at every log
//! from the start — because they run after every one of millions of events.
//! Each checker is its own small module under `invariants/`, naming the
//! property it checks and where it comes from.

use std::fmt;
use synod_core::{NodeId, Output, Protocol, Time};

/// A broken property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The property, as named in its checker (e.g. `"election safety"`).
    pub property: &'static str,
    /// The node at which it was seen, if one.
    pub node: Option<NodeId>,
    /// What exactly was seen.
    pub detail: String,
}

impl Violation {
    /// A violation of `property` seen at `node`.
    pub fn new(property: &'static str, node: Option<NodeId>, detail: impl Into<String>) -> Self {
        Violation { property, node, detail: detail.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node {
            Some(n) => write!(f, "{} violated at {}: {}", self.property, n, self.detail),
            None => write!(f, "{} violated: {}", self.property, self.detail),
        }
    }
}

/// What a checker sees after one node handled one event.
pub struct StepView<'a, P: Protocol> {
    /// Global virtual time of the event.
    pub now: Time,
    /// The node that handled it.
    pub node: NodeId,
    /// The node's core, after the event.
    pub core: &'a P,
    /// What the event produced.
    pub output: &'a Output<P::Message, P::Write>,
}

/// A safety property checked as the simulation runs.
pub trait Invariant<P: Protocol> {
    /// The property's name, as printed in violations.
    fn name(&self) -> &'static str;

    /// Called after `step.node` handled one event (tick, message, proposal,
    /// read), with the output that event produced.
    fn after_step(&mut self, step: &StepView<'_, P>) -> Result<(), Violation>;

    /// `writes` of `node` became durable, in this order.
    fn on_synced(&mut self, _node: NodeId, _writes: &[P::Write]) -> Result<(), Violation> {
        Ok(())
    }

    /// `node` crashed: its volatile state is gone.
    fn on_crash(&mut self, _node: NodeId) {}

    /// `node` restarted from its durable state; `core` is the rebuilt core.
    fn on_restart(&mut self, _node: NodeId, _core: &P) -> Result<(), Violation> {
        Ok(())
    }
}
