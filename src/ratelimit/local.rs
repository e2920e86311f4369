//! The buckets of this process: `scope: local` limits, and `scope: global` ones
//! while Redis is out of reach. A bucket is its TAT under a 128-bit id (a hash
//! of the rule and the key, so no raw key is kept), in shards each behind its
//! own lock. Bounded: a full shard first forgets every bucket whose TAT has
//! passed (a full bucket, the same as no bucket at all), then, if it must, the
//! one closest to full.

use super::gcra::{Gcra, Verdict};
use std::collections::HashMap;
use std::sync::Mutex;

/// The shards: enough that two checks rarely wait for the same lock.
const SHARDS: usize = 32;

/// What one bucket is known by: 128 bits of SHA-256 over the rule and the key.
pub type BucketId = u128;

pub struct LocalBuckets {
    shards: Box<[Mutex<HashMap<BucketId, u64>>]>,
    per_shard: usize,
}

impl LocalBuckets {
    /// Buckets for at most `capacity` keys at once.
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    /// Counts a request at `now` (µs) in bucket `id`.
    pub fn check(&self, gcra: &Gcra, id: BucketId, now: u64) -> Verdict {
        // The id is a hash already: its low bits pick the shard.
        let shard = &self.shards[(id as usize) % SHARDS];
        let mut buckets = shard.lock().unwrap_or_else(|e| e.into_inner());
        let (verdict, new_tat) = gcra.check(buckets.get(&id).copied(), now);
        if let Some(tat) = new_tat {
            if buckets.len() >= self.per_shard && !buckets.contains_key(&id) {
                make_room(&mut buckets, self.per_shard, now);
            }
            buckets.insert(id, tat);
        }
        verdict
    }

    /// How many buckets are held (tests).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Frees a slot: forgets the full buckets (TAT passed), else the fullest one.
fn make_room(buckets: &mut HashMap<BucketId, u64>, limit: usize, now: u64) {
    buckets.retain(|_, tat| *tat > now);
    if buckets.len() >= limit {
        if let Some(fullest) = buckets
            .iter()
            .min_by_key(|(_, tat)| **tat)
            .map(|(id, _)| *id)
        {
            buckets.remove(&fullest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;
    const T0: u64 = 1_700_000_000 * S;

    #[test]
    fn buckets_are_apart() {
        let local = LocalBuckets::new(1_000);
        let gcra = Gcra::new(S, 1);
        assert!(matches!(local.check(&gcra, 1, T0), Verdict::Allowed { .. }));
        assert!(matches!(local.check(&gcra, 1, T0), Verdict::Limited { .. }));
        assert!(matches!(local.check(&gcra, 2, T0), Verdict::Allowed { .. }));
        assert!(matches!(
            local.check(&gcra, 1, T0 + S),
            Verdict::Allowed { .. }
        ));
    }

    #[test]
    fn bounded_forgetting_full_buckets_first() {
        // One slot per shard: ids 0 and SHARDS share shard 0.
        let local = LocalBuckets::new(SHARDS);
        let gcra = Gcra::new(S, 1);
        let (a, b) = (0u128, SHARDS as u128);
        local.check(&gcra, a, T0);
        // `a` is still counting at T0: the newcomer pushes it out (the only one).
        local.check(&gcra, b, T0);
        assert_eq!(local.len(), 1);
        assert!(
            matches!(local.check(&gcra, b, T0), Verdict::Limited { .. }),
            "b is kept"
        );
        // A second later `b` is full again: forgotten first, losing nothing.
        local.check(&gcra, a, T0 + S);
        assert_eq!(local.len(), 1);
        assert!(matches!(
            local.check(&gcra, b, T0 + S),
            Verdict::Allowed { .. }
        ));
    }

    #[test]
    fn many_keys_stay_within_the_bound() {
        let local = LocalBuckets::new(320);
        let gcra = Gcra::new(S, 5);
        for id in 0..10_000u128 {
            local.check(&gcra, id.wrapping_mul(0x9e37_79b9_7f4a_7c15), T0);
        }
        assert!(local.len() <= 320, "{}", local.len());
    }
}
