//! The buckets of this process: `scope: local` limits, and `scope: global` ones
//! while Redis is out of reach. A bucket is its TAT under a 128-bit id (a hash
//! of the rule and the key, so no raw key is kept), in shards each behind its
//! own lock.
//!
//! Bounded, and fair between rules: a full shard forgets a bucket whose TAT
//! has passed (a full bucket, the same as no bucket at all) if it finds one,
//! else the bucket closest to full among a few of the rule holding the most
//! buckets in the shard. So a client cannot reset its own bucket by filling
//! the shard with buckets of another (slower) rule: those are the ones that
//! go. The shard of a bucket is a keyed hash (a secret drawn at start), so
//! which buckets share a shard cannot be worked out from outside; and making
//! room looks at a few buckets, not all of them.

use super::gcra::{Gcra, Verdict};
use indexmap::IndexMap;
use rand::Rng;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

/// The shards: enough that two checks rarely wait for the same lock.
const SHARDS: usize = 32;
/// Making room compares this many buckets of the largest rule (or stops at
/// the first full bucket it meets).
const CANDIDATES: usize = 8;

/// What one bucket is known by: 128 bits of SHA-256 over the rule and the key.
pub type BucketId = u128;

pub struct LocalBuckets {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    /// Picks the shard: keyed with a secret of this process.
    shard_key: std::collections::hash_map::RandomState,
}

#[derive(Default)]
struct Shard {
    /// Indexed, so a bucket at a random place is found and removed in O(1).
    buckets: IndexMap<BucketId, Bucket>,
    /// How many buckets each rule holds here.
    per_rule: HashMap<Arc<str>, usize>,
}

struct Bucket {
    tat: u64,
    rule: Arc<str>,
}

impl LocalBuckets {
    /// Buckets for at most `capacity` keys at once.
    pub fn new(capacity: usize) -> Self {
        Self::sharded(SHARDS, capacity)
    }

    fn sharded(shards: usize, capacity: usize) -> Self {
        Self {
            shards: (0..shards).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(shards).max(1),
            shard_key: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Counts a request at `now` (µs) in bucket `id` of `rule`.
    pub fn check(&self, gcra: &Gcra, rule: &Arc<str>, id: BucketId, now: u64) -> Verdict {
        let index = (self.shard_key.hash_one(id) as usize) % self.shards.len();
        let mut shard = self.shards[index].lock().unwrap_or_else(|e| e.into_inner());
        let stored = shard.buckets.get(&id).map(|bucket| bucket.tat);
        let (verdict, new_tat) = gcra.check(stored, now);
        if let Some(tat) = new_tat {
            match shard.buckets.get_mut(&id) {
                Some(bucket) => bucket.tat = tat,
                None => {
                    if shard.buckets.len() >= self.per_shard {
                        shard.make_room(now);
                    }
                    shard.insert(id, tat, rule);
                }
            }
        }
        verdict
    }

    /// How many buckets are held (tests).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).buckets.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Shard {
    fn insert(&mut self, id: BucketId, tat: u64, rule: &Arc<str>) {
        self.buckets.insert(
            id,
            Bucket {
                tat,
                rule: Arc::clone(rule),
            },
        );
        *self.per_rule.entry(Arc::clone(rule)).or_default() += 1;
    }

    /// Forgets one bucket: the first full one met, walking from a random
    /// place, else the one closest to full among [`CANDIDATES`] of the rule
    /// holding the most buckets here. Looks at about `CANDIDATES` × the
    /// number of rules buckets, not the whole shard.
    fn make_room(&mut self, now: u64) {
        let Some(largest) = self
            .per_rule
            .iter()
            .max_by_key(|(_, count)| **count)
            .map(|(rule, _)| Arc::clone(rule))
        else {
            return;
        };
        let len = self.buckets.len();
        let start = rand::rng().random_range(0..len);
        let mut victim: Option<(usize, u64)> = None;
        let mut candidates = 0;
        for step in 0..len {
            let index = (start + step) % len;
            let Some((_, bucket)) = self.buckets.get_index(index) else {
                break;
            };
            if bucket.tat <= now {
                victim = Some((index, bucket.tat));
                break;
            }
            if bucket.rule == largest {
                if victim.is_none_or(|(_, tat)| bucket.tat < tat) {
                    victim = Some((index, bucket.tat));
                }
                candidates += 1;
                if candidates == CANDIDATES {
                    break;
                }
            }
        }
        let Some((index, _)) = victim else { return };
        if let Some((_, bucket)) = self.buckets.swap_remove_index(index) {
            if let Some(count) = self.per_rule.get_mut(&bucket.rule) {
                *count -= 1;
                if *count == 0 {
                    self.per_rule.remove(&bucket.rule);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;
    const T0: u64 = 1_700_000_000 * S;

    fn rule(name: &str) -> Arc<str> {
        name.into()
    }

    #[test]
    fn buckets_are_apart() {
        let local = LocalBuckets::new(1_000);
        let gcra = Gcra::new(S, 1);
        let r = rule("r");
        assert!(matches!(
            local.check(&gcra, &r, 1, T0),
            Verdict::Allowed { .. }
        ));
        assert!(matches!(
            local.check(&gcra, &r, 1, T0),
            Verdict::Limited { .. }
        ));
        assert!(matches!(
            local.check(&gcra, &r, 2, T0),
            Verdict::Allowed { .. }
        ));
        assert!(matches!(
            local.check(&gcra, &r, 1, T0 + S),
            Verdict::Allowed { .. }
        ));
    }

    #[test]
    fn bounded_forgetting_full_buckets_first() {
        // One shard of one slot.
        let local = LocalBuckets::sharded(1, 1);
        let gcra = Gcra::new(S, 1);
        let r = rule("r");
        local.check(&gcra, &r, 1, T0);
        // `1` is still counting at T0: the newcomer pushes it out (the only one).
        local.check(&gcra, &r, 2, T0);
        assert_eq!(local.len(), 1);
        assert!(
            matches!(local.check(&gcra, &r, 2, T0), Verdict::Limited { .. }),
            "2 is kept"
        );
        // A second later `2` is full again: forgotten first, losing nothing.
        local.check(&gcra, &r, 1, T0 + S);
        assert_eq!(local.len(), 1);
        assert!(matches!(
            local.check(&gcra, &r, 2, T0 + S),
            Verdict::Allowed { .. }
        ));
    }

    #[test]
    fn another_rules_buckets_never_push_out_a_busy_bucket() {
        // The attack: empty one's own bucket of a fast rule, then fill the
        // shard with buckets of a slow rule (their TATs far ahead) so that the
        // fast bucket, closest to full, is the one forgotten — a fresh burst.
        let local = LocalBuckets::sharded(1, 16);
        let (fast, slow) = (Gcra::new(S, 1), Gcra::new(3_600 * S, 1));
        let (fast_rule, slow_rule) = (rule("fast"), rule("slow"));
        let victim = 7;
        assert!(matches!(
            local.check(&fast, &fast_rule, victim, T0),
            Verdict::Allowed { .. }
        ));
        for id in 1_000..11_000 {
            local.check(&slow, &slow_rule, id, T0);
        }
        assert_eq!(local.len(), 16);
        assert!(
            matches!(
                local.check(&fast, &fast_rule, victim, T0),
                Verdict::Limited { .. }
            ),
            "the fast rule's bucket is kept"
        );
    }

    #[test]
    fn many_keys_stay_within_the_bound() {
        let local = LocalBuckets::new(320);
        let gcra = Gcra::new(S, 5);
        let r = rule("r");
        for id in 0..10_000u128 {
            local.check(&gcra, &r, id.wrapping_mul(0x9e37_79b9_7f4a_7c15), T0);
        }
        assert!(local.len() <= 320, "{}", local.len());
    }

    #[test]
    fn shards_are_keyed_per_process() {
        // Two sets of buckets (two processes) place the same ids differently.
        let (a, b) = (LocalBuckets::new(1_000), LocalBuckets::new(1_000));
        let differs = (0..64u128).any(|id| {
            a.shard_key.hash_one(id) as usize % SHARDS != b.shard_key.hash_one(id) as usize % SHARDS
        });
        assert!(differs);
    }
}
