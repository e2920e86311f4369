//! Revocation (docs/revocation.md): tokens refused before their `exp` — one
//! token by `jti`, every token of a subject issued before a second (`sub`), or
//! every token of a Clerk session (`sid`).
//!
//! [`Revocations`] is the in-memory set every check reads (a read lock and at
//! most three hash lookups; most tokens match nothing). It lives in the
//! runtime, so a reload keeps it. With `state.redis`, [`store`] keeps each
//! revocation in Redis until it stops mattering, announces it to the other
//! replicas, and loads the whole set at start and after every resubscription;
//! a replica is not ready until it has loaded it once.
//!
//! This room reads verified tokens and the clock; Redis I/O goes through the
//! shared connection of `replicas`.

pub mod store;

use crate::clock::{millis, Clock};
use crate::identity::{TokenError, VerifiedToken};
use crate::metrics::{Metrics, RevokedLabels};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// How long a revocation lasts when no TTL is given: longer than any session
/// token portcullis has been seen to verify (Clerk's live for a minute).
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest TTL accepted.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// The longest value (`jti`, `sub`, `sid`) accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024;
/// Expired entries are dropped at most this often (on a write).
const PURGE_EVERY_MS: u64 = 60_000;

/// What a revocation matches a token by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One token: its `jti`.
    Jti,
    /// Every token of a subject whose `iat` is before the revocation's second,
    /// and every token of that subject without `iat`.
    Sub,
    /// Every token carrying this Clerk session id (`sid`).
    Sid,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Jti => "jti",
            Kind::Sub => "sub",
            Kind::Sid => "sid",
        }
    }
}

/// One revocation: what it matches, since when and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub kind: Kind,
    pub value: String,
    /// When it was made, milliseconds since the epoch. A `sub` revocation
    /// refuses the subject's tokens issued before this second.
    pub revoked_at_ms: u64,
    /// When it stops mattering (no token it refuses can still be valid),
    /// milliseconds since the epoch.
    pub expires_at_ms: u64,
    /// Who made it: `admin:<SPIFFE ID>` or `webhook:<event type>` (shown by
    /// `ListRevocations` and logged).
    pub by: String,
}

/// Why a revocation was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// The value to revoke is empty.
    #[error("the {0} to revoke is empty")]
    EmptyValue(&'static str),
    /// The value is longer than any token claim portcullis accepts.
    #[error("the {0} to revoke is longer than {MAX_VALUE_BYTES} bytes")]
    ValueTooLong(&'static str),
    /// The TTL is zero or over [`MAX_TTL`].
    #[error("the TTL must be between 1s and 365d")]
    Ttl,
    /// Applied in this process, but Redis did not take it: the other
    /// replicas do not know it (retry).
    #[error("applied on this replica only: Redis did not store it ({0}); retry")]
    NotShared(String),
}

impl Revocation {
    /// A revocation of `value` made at `now_ms`, lasting `ttl`.
    pub fn new(
        kind: Kind,
        value: &str,
        ttl: Duration,
        now_ms: u64,
        by: String,
    ) -> Result<Revocation, RevocationError> {
        if value.is_empty() {
            return Err(RevocationError::EmptyValue(kind.as_str()));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(RevocationError::ValueTooLong(kind.as_str()));
        }
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(RevocationError::Ttl);
        }
        Ok(Revocation {
            kind,
            value: value.to_owned(),
            revoked_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(millis(ttl)),
            by,
        })
    }

    /// Whether it refuses `token` (whose `jti`, `sid` or `sub` it names).
    fn refuses(&self, token: &VerifiedToken) -> bool {
        match self.kind {
            Kind::Jti | Kind::Sid => true,
            // Whole seconds, no leeway (docs/revocation.md): a token issued in
            // the revocation's own second is a new sign-in.
            Kind::Sub => token
                .ids
                .issued_at
                .is_none_or(|iat| iat < self.revoked_at_ms / 1000),
        }
    }
}

#[derive(Default)]
struct Entries {
    jti: HashMap<String, Revocation>,
    sub: HashMap<String, Revocation>,
    sid: HashMap<String, Revocation>,
    /// When expired entries are next dropped.
    next_purge_ms: u64,
}

impl Entries {
    fn of(&mut self, kind: Kind) -> &mut HashMap<String, Revocation> {
        match kind {
            Kind::Jti => &mut self.jti,
            Kind::Sub => &mut self.sub,
            Kind::Sid => &mut self.sid,
        }
    }

    fn is_empty(&self) -> bool {
        self.jti.is_empty() && self.sub.is_empty() && self.sid.is_empty()
    }

    fn purge(&mut self, now_ms: u64) {
        if now_ms < self.next_purge_ms {
            return;
        }
        self.next_purge_ms = now_ms + PURGE_EVERY_MS;
        for map in [&mut self.jti, &mut self.sub, &mut self.sid] {
            map.retain(|_, r| r.expires_at_ms > now_ms);
        }
    }
}

/// The revocations in force in this process.
pub struct Revocations {
    entries: RwLock<Entries>,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// False until the set was loaded from Redis once (true without Redis).
    loaded: AtomicBool,
    /// Why the last load from Redis failed, while none succeeded since.
    load_error: Mutex<Option<String>>,
}

impl Revocations {
    pub fn new(clock: Clock, metrics: Arc<Metrics>) -> Self {
        Self {
            entries: RwLock::new(Entries::default()),
            clock,
            metrics,
            loaded: AtomicBool::new(true),
            load_error: Mutex::new(None),
        }
    }

    /// Refuses a token that a revocation in force names (401 "token revoked").
    pub fn check(&self, token: &VerifiedToken) -> Result<(), TokenError> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        if entries.is_empty() {
            return Ok(());
        }
        let now = self.clock.unix_millis();
        fn in_force<'m>(
            map: &'m HashMap<String, Revocation>,
            value: Option<&str>,
            now: u64,
            token: &VerifiedToken,
        ) -> Option<&'m Revocation> {
            value
                .and_then(|v| map.get(v))
                .filter(|r| r.expires_at_ms > now && r.refuses(token))
        }
        let revoked = in_force(&entries.jti, token.ids.jti.as_deref(), now, token)
            .or_else(|| in_force(&entries.sid, token.ids.sid.as_deref(), now, token))
            .or_else(|| in_force(&entries.sub, Some(&token.subject), now, token));
        match revoked {
            None => Ok(()),
            Some(revocation) => {
                self.metrics
                    .revoked
                    .get_or_create(&RevokedLabels {
                        kind: revocation.kind.as_str(),
                    })
                    .inc();
                Err(TokenError::Revoked)
            }
        }
    }

    /// Adds (or replaces: the later one wins) a revocation; one already past
    /// its end is ignored.
    pub fn insert(&self, revocation: Revocation) {
        let now = self.clock.unix_millis();
        if revocation.expires_at_ms <= now {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        entries.purge(now);
        entries
            .of(revocation.kind)
            .insert(revocation.value.clone(), revocation);
    }

    /// Adds every revocation of a full load (from Redis) and marks the set
    /// loaded. Entries already held stay: one made here while Redis was away is
    /// not forgotten.
    pub fn load(&self, revocations: Vec<Revocation>) {
        let count = revocations.len();
        for revocation in revocations {
            self.insert(revocation);
        }
        *self.load_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if !self.loaded.swap(true, Ordering::SeqCst) {
            tracing::info!(count, "revocations loaded");
        } else {
            tracing::debug!(count, "revocations reloaded");
        }
    }

    /// From now on not loaded until [`Revocations::load`] (a replica with
    /// `state.redis`, at start).
    pub fn expect_load(&self) {
        self.loaded.store(false, Ordering::SeqCst);
    }

    /// Records why a load failed (shown by readiness while none succeeded).
    pub fn load_failed(&self, error: &str) {
        *self.load_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_owned());
    }

    /// Whether the set is loaded; when not, why.
    pub fn status(&self) -> Result<usize, String> {
        if self.loaded.load(Ordering::SeqCst) {
            let now = self.clock.unix_millis();
            let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
            return Ok([&entries.jti, &entries.sub, &entries.sid]
                .into_iter()
                .flat_map(|map| map.values())
                .filter(|r| r.expires_at_ms > now)
                .count());
        }
        Err(self
            .load_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or_else(
                || "revocations not loaded from Redis yet".to_owned(),
                |e| format!("revocations not loaded from Redis: {e}"),
            ))
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::SeqCst)
    }

    /// The revocations in force, by kind then value.
    pub fn list(&self) -> Vec<Revocation> {
        let now = self.clock.unix_millis();
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<Revocation> = [&entries.jti, &entries.sub, &entries.sid]
            .into_iter()
            .flat_map(|map| map.values())
            .filter(|r| r.expires_at_ms > now)
            .cloned()
            .collect();
        all.sort_by(|a, b| (a.kind.as_str(), &a.value).cmp(&(b.kind.as_str(), &b.value)));
        all
    }

    /// The time revocations are made and judged by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::token_cache::TokenIds;

    fn token(sub: &str, jti: Option<&str>, sid: Option<&str>, iat: Option<u64>) -> VerifiedToken {
        VerifiedToken {
            issuer: "clerk".into(),
            iss: "https://clerk.example.test".into(),
            subject: sub.into(),
            expires_at: u64::MAX,
            ids: TokenIds {
                jti: jti.map(Into::into),
                sid: sid.map(Into::into),
                issued_at: iat,
            },
            payload: None,
            generation: 0,
        }
    }

    fn set() -> (Revocations, Clock) {
        let clock = Clock::manual();
        (
            Revocations::new(clock.clone(), Arc::new(Metrics::default())),
            clock,
        )
    }

    fn revoke(set: &Revocations, kind: Kind, value: &str, ttl_s: u64) {
        let now = set.clock().unix_millis();
        let revocation =
            Revocation::new(kind, value, Duration::from_secs(ttl_s), now, "test".into()).unwrap();
        set.insert(revocation);
    }

    #[test]
    fn a_subject_is_refused_for_tokens_issued_before_its_second() {
        let (set, clock) = set();
        clock.advance(Duration::from_millis(400)); // revoked at second S + 0.4
        let second = clock.unix_secs();
        revoke(&set, Kind::Sub, "user_1", 60);
        let cases = [
            (
                Some(second - 1),
                Err(TokenError::Revoked),
                "issued the second before",
            ),
            (
                Some(second),
                Ok(()),
                "issued in the same second: a new sign-in",
            ),
            (Some(second + 1), Ok(()), "issued after"),
            (None, Err(TokenError::Revoked), "no iat: refused"),
        ];
        for (iat, want, case) in cases {
            assert_eq!(set.check(&token("user_1", None, None, iat)), want, "{case}");
        }
        assert_eq!(
            set.check(&token("user_2", None, None, None)),
            Ok(()),
            "another subject"
        );
    }

    #[test]
    fn jti_and_sid_refuse_whatever_the_issue_time() {
        let (set, clock) = set();
        revoke(&set, Kind::Jti, "j-1", 60);
        revoke(&set, Kind::Sid, "sess_1", 60);
        let later = Some(clock.unix_secs() + 30);
        assert_eq!(
            set.check(&token("u", Some("j-1"), None, later)),
            Err(TokenError::Revoked)
        );
        assert_eq!(
            set.check(&token("u", Some("j-2"), Some("sess_1"), later)),
            Err(TokenError::Revoked),
            "a token of the session minted after the revocation"
        );
        assert_eq!(
            set.check(&token("u", Some("j-2"), Some("sess_2"), later)),
            Ok(())
        );
        assert_eq!(
            set.check(&token("j-1", Some("x"), Some("sess_1x"), later)),
            Ok(()),
            "kinds do not mix: a subject named like a revoked jti"
        );
    }

    #[test]
    fn entries_end_at_their_instant_and_are_dropped() {
        let (set, clock) = set();
        revoke(&set, Kind::Jti, "j-1", 10);
        let t = token("u", Some("j-1"), None, None);
        clock.advance(Duration::from_millis(9_999));
        assert_eq!(set.check(&t), Err(TokenError::Revoked));
        assert_eq!(set.list().len(), 1);
        clock.advance(Duration::from_millis(1));
        assert_eq!(set.check(&t), Ok(()), "over at its instant");
        assert!(set.list().is_empty());
        clock.advance(Duration::from_millis(PURGE_EVERY_MS));
        revoke(&set, Kind::Jti, "j-2", 10);
        let held = set.entries.read().unwrap().jti.len();
        assert_eq!(held, 1, "the expired entry was dropped on a write");
    }

    #[test]
    fn a_later_revocation_of_the_same_value_replaces_the_earlier() {
        let (set, clock) = set();
        revoke(&set, Kind::Sub, "u", 60);
        clock.advance(Duration::from_secs(5));
        let second = clock.unix_secs();
        revoke(&set, Kind::Sub, "u", 60);
        assert_eq!(
            set.check(&token("u", None, None, Some(second - 1))),
            Err(TokenError::Revoked),
            "a token issued between the two is refused by the second"
        );
        assert_eq!(set.list().len(), 1);
    }

    #[test]
    fn values_and_ttls_are_checked() {
        let new = |value: &str, ttl: Duration| {
            Revocation::new(Kind::Jti, value, ttl, 0, "test".into()).map(|_| ())
        };
        assert_eq!(
            new("", DEFAULT_TTL),
            Err(RevocationError::EmptyValue("jti"))
        );
        assert_eq!(
            new(&"x".repeat(MAX_VALUE_BYTES + 1), DEFAULT_TTL),
            Err(RevocationError::ValueTooLong("jti"))
        );
        assert_eq!(new("j", Duration::ZERO), Err(RevocationError::Ttl));
        assert_eq!(
            new("j", MAX_TTL + Duration::from_secs(1)),
            Err(RevocationError::Ttl)
        );
        assert_eq!(new("j", MAX_TTL), Ok(()));
    }

    #[test]
    fn readiness_waits_for_a_load_and_says_why() {
        let (set, _) = set();
        assert_eq!(set.status(), Ok(0), "without Redis: loaded at once");
        set.expect_load();
        assert!(set.status().unwrap_err().contains("not loaded"));
        set.load_failed("connection refused");
        assert!(set.status().unwrap_err().contains("connection refused"));
        revoke(&set, Kind::Jti, "made-while-away", 60);
        set.load(vec![]);
        assert_eq!(set.status(), Ok(1), "a load keeps what was made meanwhile");
    }
}
