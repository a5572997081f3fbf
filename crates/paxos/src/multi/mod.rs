//! Multi-Paxos ("Paxos Made Simple" §3; "Paxos Made Live"; Van Renesse &
//! Altinbuken, "Paxos Made Moderately Complex") as a sans-IO
//! [`Protocol`](synod_core::Protocol): a distinguished leader runs Phase 1
//! once for every slot from its first unchosen one, then only Phase 2 per
//! slot.
//!
//! Where things live:
//!
//! - [`node`]: [`PaxosNode`], the protocol — leadership, Phase 1 adoption,
//!   Phase 2, commit notifications, catch-up, reads;
//! - [`window`]: the leader's per-slot acceptance tally;
//! - [`reads`]: linearizable read barriers;
//! - [`log`]: the acceptor's slot log, after the compacted prefix;
//! - [`snapshot`]: snapshot bookkeeping (taken, received, sent);
//! - [`config`], [`message`], [`storage`]: the types.

pub mod config;
pub mod log;
pub mod message;
pub mod node;
pub mod reads;
pub mod snapshot;
pub mod storage;
pub mod window;

pub use config::{Config, InjectedBug};
pub use message::{Message, SlotEntry, Value};
pub use node::{PaxosNode, PaxosOutput, Peer};
pub use snapshot::{SnapshotPoint, Transfer};
pub use storage::{Durable, Write};
