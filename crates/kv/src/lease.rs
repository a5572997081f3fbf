//! Leases as replicated state: id, granted TTL, deadline, attached keys.
//!
//! Nothing here reads a clock. Deadlines are [`Time`]s that commands carry:
//! the leader stamps `now` into grant, keep-alive and promote commands, finds
//! expired leases with [`Leases::expired`] at a time it passes in, and
//! proposes their expiry; every replica then applies the same decisions.
//! A new leader's clock is unrelated to the old one's, so on taking office it
//! proposes a promote, which restarts every lease's full TTL from its `now`
//! (etcd's `lessor.Promote` without checkpoints, the 3.4 default).

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use synod_core::Time;

/// etcd's largest lease TTL in seconds (`lease.MaxLeaseTTL`).
pub const MAX_LEASE_TTL_SECS: i64 = 9_000_000_000;

/// One lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Lease {
    /// Granted TTL in seconds (after raising to the minimum).
    pub(crate) ttl_secs: i64,
    /// When it expires unless kept alive.
    pub(crate) deadline: Time,
    /// Keys whose current version carries this lease.
    pub(crate) keys: BTreeSet<Bytes>,
}

/// Every live lease, indexed by id and by deadline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Leases {
    pub(crate) by_id: BTreeMap<i64, Lease>,
    by_deadline: BTreeSet<(Time, i64)>,
}

/// `now + ttl_secs`, saturating.
pub(crate) fn deadline(now: Time, ttl_secs: i64) -> Time {
    now + Duration::from_secs(ttl_secs.max(0) as u64)
}

/// A deterministic, well-spread, positive lease id derived from `seed`
/// (splitmix64, top bit cleared): etcd's ids look random, and clients print
/// them in hex.
pub(crate) fn derive_id(seed: u64) -> i64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ((z ^ (z >> 31)) & (i64::MAX as u64)) as i64
}

impl Leases {
    pub(crate) fn get(&self, id: i64) -> Option<&Lease> {
        self.by_id.get(&id)
    }

    pub(crate) fn contains(&self, id: i64) -> bool {
        self.by_id.contains_key(&id)
    }

    /// A fresh id for a grant at log position `index`.
    pub(crate) fn fresh_id(&self, index: u64) -> i64 {
        let mut seed = index;
        loop {
            let id = derive_id(seed);
            if id != 0 && !self.contains(id) {
                return id;
            }
            seed = seed.wrapping_add(0x1_0000_0000);
        }
    }

    /// Adds a lease (the id must be free).
    pub(crate) fn grant(&mut self, id: i64, ttl_secs: i64, now: Time) {
        let deadline = deadline(now, ttl_secs);
        let old = self.by_id.insert(id, Lease { ttl_secs, deadline, keys: BTreeSet::new() });
        assert!(old.is_none(), "lease {id} granted twice");
        self.by_deadline.insert((deadline, id));
    }

    /// Removes a lease, returning it.
    pub(crate) fn remove(&mut self, id: i64) -> Option<Lease> {
        let lease = self.by_id.remove(&id)?;
        assert!(self.by_deadline.remove(&(lease.deadline, id)), "deadline index out of sync");
        Some(lease)
    }

    /// Restarts the lease's TTL from `now`.
    pub(crate) fn refresh(&mut self, id: i64, now: Time) {
        let lease = self.by_id.get_mut(&id).expect("refresh of a live lease");
        assert!(self.by_deadline.remove(&(lease.deadline, id)), "deadline index out of sync");
        lease.deadline = deadline(now, lease.ttl_secs);
        self.by_deadline.insert((lease.deadline, id));
    }

    /// Restarts every lease's TTL from `now`.
    pub(crate) fn refresh_all(&mut self, now: Time) {
        let ids: Vec<i64> = self.by_id.keys().copied().collect();
        for id in ids {
            self.refresh(id, now);
        }
    }

    pub(crate) fn attach(&mut self, id: i64, key: &Bytes) {
        let lease = self.by_id.get_mut(&id).expect("attach to a live lease");
        lease.keys.insert(key.clone());
    }

    pub(crate) fn detach(&mut self, id: i64, key: &[u8]) {
        if let Some(lease) = self.by_id.get_mut(&id) {
            lease.keys.remove(key);
        }
    }

    /// Leases whose deadline is at or before `now`, earliest first, at most
    /// `max`.
    pub(crate) fn expired(&self, now: Time, max: usize) -> Vec<i64> {
        self.by_deadline
            .iter()
            .take_while(|(d, _)| *d <= now)
            .take(max)
            .map(|(_, id)| *id)
            .collect()
    }

    /// Rebuilds a lease table from its parts (snapshot restore).
    pub(crate) fn from_parts(leases: BTreeMap<i64, Lease>) -> Leases {
        let by_deadline = leases.iter().map(|(id, l)| (l.deadline, *id)).collect();
        Leases { by_id: leases, by_deadline }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_follows_deadlines_and_refresh_moves_them() {
        let mut l = Leases::default();
        l.grant(1, 10, Time::from_millis(0));
        l.grant(2, 5, Time::from_millis(0));
        assert_eq!(l.expired(Time::from_millis(4_999), 10), Vec::<i64>::new());
        assert_eq!(l.expired(Time::from_millis(5_000), 10), vec![2]);
        assert_eq!(l.expired(Time::from_millis(10_000), 10), vec![2, 1]);
        assert_eq!(l.expired(Time::from_millis(10_000), 1), vec![2], "bounded");
        l.refresh(2, Time::from_millis(8_000));
        assert_eq!(l.expired(Time::from_millis(10_000), 10), vec![1]);
        l.refresh_all(Time::from_millis(20_000));
        assert_eq!(l.expired(Time::from_millis(25_000), 10), vec![2]);
        assert!(l.remove(2).is_some());
        assert_eq!(l.expired(Time::MAX, 10), vec![1]);
    }

    #[test]
    fn fresh_ids_are_positive_deterministic_and_unused() {
        let mut l = Leases::default();
        let a = l.fresh_id(7);
        assert!(a > 0);
        assert_eq!(a, Leases::default().fresh_id(7));
        l.grant(a, 5, Time::ZERO);
        let b = l.fresh_id(7);
        assert!(b > 0 && b != a);
    }
}
