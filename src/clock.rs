//! The time every TTL and `exp` is computed against. Production reads the system
//! clock; tests hold a [`Clock::manual`] and move it, so no test sleeps past a TTL.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall-clock time in milliseconds since the Unix epoch, system or manual.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// A clock that moves only when told to (tests).
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// A manual clock reading the system time now (to the whole second, so
    /// tests can count seconds from it), until moved.
    pub fn manual() -> Clock {
        Clock::Manual(Arc::new(AtomicU64::new(system_millis() / 1000 * 1000)))
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(&self) -> u64 {
        match self {
            Clock::System => system_millis(),
            Clock::Manual(at) => at.load(Ordering::Relaxed),
        }
    }

    /// Whole seconds since the Unix epoch (token times are in seconds).
    pub fn unix_secs(&self) -> u64 {
        self.unix_millis() / 1000
    }

    /// Moves a manual clock forward; the system clock cannot be moved.
    pub fn advance(&self, by: Duration) {
        match self {
            Clock::System => panic!("the system clock cannot be moved"),
            Clock::Manual(at) => {
                let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
                at.fetch_add(by, Ordering::Relaxed);
            }
        }
    }
}

fn system_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `duration` in milliseconds, saturating.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// A set of keys each remembered until an instant of a [`Clock`] (user tombstones,
/// webhook ids): bounded, and an entry past its instant is gone.
pub struct ExpiringSet {
    entries: quick_cache::sync::Cache<Arc<str>, u64>,
    clock: Clock,
    /// Makes [`ExpiringSet::insert_new`] one step: two deliveries of one id
    /// racing each other are one accepted, one refused.
    claim: std::sync::Mutex<()>,
}

impl ExpiringSet {
    pub fn new(capacity: usize, clock: Clock) -> Self {
        Self {
            entries: quick_cache::sync::Cache::new(capacity.max(1)),
            clock,
            claim: std::sync::Mutex::new(()),
        }
    }

    /// Remembers `key` for `ttl` from now.
    pub fn insert(&self, key: &str, ttl: Duration) {
        let until = self.clock.unix_millis().saturating_add(millis(ttl));
        self.entries.insert(key.into(), until);
    }

    /// Whether `key` is remembered now.
    pub fn contains(&self, key: &str) -> bool {
        let now = self.clock.unix_millis();
        match self.entries.get(key) {
            Some(until) if until > now => true,
            Some(_) => {
                self.entries.remove_if(key, |until| *until <= now);
                false
            }
            None => false,
        }
    }

    /// Remembers `key` for `ttl` unless it is remembered already; true when it
    /// was new (a replay check and its record in one step).
    pub fn insert_new(&self, key: &str, ttl: Duration) -> bool {
        let _one_at_a_time = self.claim.lock().unwrap_or_else(|e| e.into_inner());
        if self.contains(key) {
            return false;
        }
        self.insert(key, ttl);
        true
    }

    pub fn remove(&self, key: &str) {
        self.entries.remove(key);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_end_at_their_instant() {
        let clock = Clock::manual();
        let set = ExpiringSet::new(10, clock.clone());
        set.insert("a", Duration::from_secs(10));
        assert!(set.contains("a"));
        assert!(!set.insert_new("a", Duration::from_secs(10)), "seen");
        clock.advance(Duration::from_millis(9_999));
        assert!(set.contains("a"));
        clock.advance(Duration::from_millis(1));
        assert!(!set.contains("a"), "gone at its instant");
        assert!(set.insert_new("a", Duration::from_secs(1)));
    }
}
