//! Revocation (docs/revocation.md): tokens refused before their `exp` — one
//! token by `jti`, every token of a subject issued before a second (`sub`), or
//! every token of a Clerk session (`sid`).
//!
//! [`Revocations`] is the in-memory set every check reads (a read lock and at
//! most four hash lookups; most tokens match nothing). It lives in the
//! runtime, so a reload keeps it. With `state.redis`, [`store`] keeps each
//! revocation in Redis until it stops mattering, announces it to the other
//! replicas, and loads the whole set at start and after every resubscription;
//! until it has loaded it once, a replica is not ready and answers a check
//! carrying a token 503 (it cannot tell a revoked token from a good one).
//! Two revocations of one value merge: a revocation never shortens another.
//!
//! This room reads verified tokens and the clock; Redis I/O goes through the
//! shared connection of `replicas`.

pub mod store;

use crate::clock::{millis, Clock};
use crate::identity::caller::RevocationCheck;
use crate::identity::{TokenError, VerifiedToken};
use crate::metrics::{Metrics, RevokedLabels};
use crate::replicas::Subscription;
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

/// One revocation: what it matches, since when and until when. Made only by
/// [`Revocation::new`] or, for one read back from Redis, [`Revocation::at`]:
/// both validate, so an entry in the set always names something and ends
/// within [`MAX_TTL`] of its making.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredRevocation")]
pub struct Revocation {
    kind: Kind,
    value: String,
    /// When it was made, milliseconds since the epoch. A `sub` revocation
    /// refuses the subject's tokens issued before this second.
    revoked_at_ms: u64,
    /// When it stops mattering (no token it refuses can still be valid),
    /// milliseconds since the epoch.
    expires_at_ms: u64,
    /// Who made it: `admin:<SPIFFE ID>` or `webhook:<event type>` (shown by
    /// `ListRevocations` and logged).
    by: String,
}

/// A revocation as Redis holds and announces it, before validation.
#[derive(Deserialize)]
struct StoredRevocation {
    kind: Kind,
    value: String,
    revoked_at_ms: u64,
    expires_at_ms: u64,
    by: String,
}

impl TryFrom<StoredRevocation> for Revocation {
    type Error = RevocationError;

    fn try_from(stored: StoredRevocation) -> Result<Self, Self::Error> {
        Revocation::at(
            stored.kind,
            stored.value,
            stored.revoked_at_ms,
            stored.expires_at_ms,
            stored.by,
        )
    }
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
    /// The TTL is zero or over [`MAX_TTL`] (for a stored one: it ends before
    /// it starts, or too long after).
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
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(RevocationError::Ttl);
        }
        Revocation::at(
            kind,
            value.to_owned(),
            now_ms,
            now_ms.saturating_add(millis(ttl)),
            by,
        )
    }

    /// A revocation made at `revoked_at_ms`, over at `expires_at_ms`: the one
    /// validating constructor (a revocation read from Redis comes through here
    /// too, so a malformed entry never reaches the set).
    pub fn at(
        kind: Kind,
        value: String,
        revoked_at_ms: u64,
        expires_at_ms: u64,
        by: String,
    ) -> Result<Revocation, RevocationError> {
        if value.is_empty() {
            return Err(RevocationError::EmptyValue(kind.as_str()));
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(RevocationError::ValueTooLong(kind.as_str()));
        }
        let lasts = expires_at_ms.checked_sub(revoked_at_ms);
        if lasts.is_none_or(|ms| ms == 0 || ms > millis(MAX_TTL)) {
            return Err(RevocationError::Ttl);
        }
        Ok(Revocation {
            kind,
            value,
            revoked_at_ms,
            expires_at_ms,
            by,
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The `jti`, `sub` or `sid` it names.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// When it was made, milliseconds since the epoch.
    pub fn revoked_at_ms(&self) -> u64 {
        self.revoked_at_ms
    }

    /// When it stops mattering, milliseconds since the epoch.
    pub fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }

    /// Who made it (`admin:<SPIFFE ID>`, `webhook:<event type>`).
    pub fn by(&self) -> &str {
        &self.by
    }

    /// Two revocations of the same value as one: the later second (with who
    /// made it) and the later end. The result refuses every token either
    /// refuses, for as long as either would: a revocation made later never
    /// shortens one made earlier, whatever order replicas hear them in.
    pub fn merged(self, other: Revocation) -> Revocation {
        let expires_at_ms = self.expires_at_ms.max(other.expires_at_ms);
        let mut later = if other.revoked_at_ms > self.revoked_at_ms {
            other
        } else {
            self
        };
        later.expires_at_ms = expires_at_ms;
        later
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

    /// The entries still in force at `now_ms` (expired ones wait for a purge).
    fn in_force(&self, now_ms: u64) -> impl Iterator<Item = &Revocation> {
        [&self.jti, &self.sub, &self.sid]
            .into_iter()
            .flat_map(|map| map.values())
            .filter(move |r| r.expires_at_ms > now_ms)
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

/// How this replica hears the revocations made elsewhere (`state.redis`).
#[derive(Default)]
struct Feed {
    /// Where the subscription stands; `None` without Redis.
    subscription: Option<Subscription>,
    /// Why the last attempt to subscribe or load failed, until one succeeds.
    error: Option<String>,
}

/// Whether the set is loaded, how many entries are in force, and how it
/// keeps up with the other replicas (`/readyz`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub loaded: bool,
    pub count: usize,
    /// With `state.redis`: the subscription that keeps the set current.
    pub subscription: Option<Subscription>,
    /// Why the set is not loaded, or why the subscription is down.
    pub error: Option<String>,
}

/// The revocations in force in this process.
pub struct Revocations {
    entries: RwLock<Entries>,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// False until the set was loaded from Redis once (true without Redis).
    loaded: AtomicBool,
    feed: Mutex<Feed>,
}

impl Revocations {
    pub fn new(clock: Clock, metrics: Arc<Metrics>) -> Self {
        Self {
            entries: RwLock::new(Entries::default()),
            clock,
            metrics,
            loaded: AtomicBool::new(true),
            feed: Mutex::new(Feed::default()),
        }
    }

    /// Refuses a token that a revocation in force names (401 "token
    /// revoked"), and every token while the set is not loaded (503: a token
    /// revoked elsewhere cannot be told from a good one). `own_issuer`: the
    /// `iss` of portcullis' own user-context tokens (`tokens.issuer`), whose
    /// `idp_sub` — the subject they were made for — a `sub` revocation
    /// matches too.
    pub fn check(&self, token: &VerifiedToken, own_issuer: Option<&str>) -> Result<(), TokenError> {
        if !self.is_loaded() {
            return Err(TokenError::RevocationsNotLoaded);
        }
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
        let ours = own_issuer.is_some_and(|own| *token.iss == *own);
        let idp_sub = token.ids.idp_sub.as_deref().filter(|_| ours);
        let revoked = in_force(&entries.jti, token.ids.jti.as_deref(), now, token)
            .or_else(|| in_force(&entries.sid, token.ids.sid.as_deref(), now, token))
            .or_else(|| in_force(&entries.sub, Some(&token.subject), now, token))
            .or_else(|| in_force(&entries.sub, idp_sub, now, token));
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

    /// A revocation of `value` made now (by this set's clock), lasting `ttl`.
    pub fn revocation(
        &self,
        kind: Kind,
        value: &str,
        ttl: Duration,
        by: String,
    ) -> Result<Revocation, RevocationError> {
        Revocation::new(kind, value, ttl, self.clock.unix_millis(), by)
    }

    /// Adds a revocation, merged with one of the same value already held
    /// ([`Revocation::merged`]), and returns what is now in force for that
    /// value. One already past its end is ignored (and returned as it is).
    pub fn insert(&self, revocation: Revocation) -> Revocation {
        let now = self.clock.unix_millis();
        if revocation.expires_at_ms <= now {
            return revocation;
        }
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        entries.purge(now);
        let map = entries.of(revocation.kind);
        let merged = match map.remove(&revocation.value) {
            Some(held) => held.merged(revocation),
            None => revocation,
        };
        map.insert(merged.value.clone(), merged.clone());
        merged
    }

    /// Adds every revocation of a full load (from Redis) and marks the set
    /// loaded. Entries already held stay: one made here while Redis was away is
    /// not forgotten.
    pub fn load(&self, revocations: Vec<Revocation>) {
        let count = revocations.len();
        for revocation in revocations {
            self.insert(revocation);
        }
        self.feed.lock().unwrap_or_else(|e| e.into_inner()).error = None;
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
        self.feed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .subscription = Some(Subscription::Connecting);
    }

    /// Records where the subscription to the other replicas stands and, when
    /// it is down, why (shown by readiness).
    pub fn subscription_changed(&self, state: Subscription, error: Option<&str>) {
        let mut feed = self.feed.lock().unwrap_or_else(|e| e.into_inner());
        feed.subscription = Some(state);
        match (state, error) {
            (Subscription::Subscribed, _) => feed.error = None,
            (_, Some(error)) => feed.error = Some(error.to_owned()),
            (_, None) => {}
        }
    }

    /// Whether the set is loaded, its size, and how it keeps up.
    pub fn status(&self) -> Status {
        let loaded = self.is_loaded();
        let count = if loaded {
            let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
            entries.in_force(self.clock.unix_millis()).count()
        } else {
            0
        };
        let feed = self.feed.lock().unwrap_or_else(|e| e.into_inner());
        let error = match (&feed.error, loaded) {
            (Some(e), false) => Some(format!("revocations not loaded from Redis: {e}")),
            (None, false) => Some("revocations not loaded from Redis yet".to_owned()),
            (Some(e), true) if feed.subscription != Some(Subscription::Subscribed) => {
                Some(format!("not hearing other replicas' revocations: {e}"))
            }
            (_, true) => None,
        };
        Status {
            loaded,
            count,
            subscription: feed.subscription,
            error,
        }
    }

    /// Whether the set can be trusted to hold every revocation in force:
    /// always without Redis; with `state.redis`, once a load from Redis has
    /// succeeded since start (and from then on, through later outages: the
    /// copy is kept). Until then the replica is not ready (readiness, gRPC
    /// health) and [`Revocations::check`] answers 503.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::SeqCst)
    }

    /// The revocations in force, by kind then value.
    pub fn list(&self) -> Vec<Revocation> {
        let now = self.clock.unix_millis();
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<Revocation> = entries.in_force(now).cloned().collect();
        all.sort_by(|a, b| (a.kind.as_str(), &a.value).cmp(&(b.kind.as_str(), &b.value)));
        all
    }
}

impl RevocationCheck for Revocations {
    fn check_revoked(
        &self,
        token: &VerifiedToken,
        own_issuer: Option<&str>,
    ) -> Result<(), TokenError> {
        self.check(token, own_issuer)
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
                idp_sub: None,
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

    fn revoke(set: &Revocations, kind: Kind, value: &str, ttl_s: u64) -> Revocation {
        let revocation = set
            .revocation(kind, value, Duration::from_secs(ttl_s), "test".into())
            .unwrap();
        set.insert(revocation)
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
            assert_eq!(
                set.check(&token("user_1", None, None, iat), None),
                want,
                "{case}"
            );
        }
        assert_eq!(
            set.check(&token("user_2", None, None, None), None),
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
            set.check(&token("u", Some("j-1"), None, later), None),
            Err(TokenError::Revoked)
        );
        assert_eq!(
            set.check(&token("u", Some("j-2"), Some("sess_1"), later), None),
            Err(TokenError::Revoked),
            "a token of the session minted after the revocation"
        );
        assert_eq!(
            set.check(&token("u", Some("j-2"), Some("sess_2"), later), None),
            Ok(())
        );
        assert_eq!(
            set.check(&token("j-1", Some("x"), Some("sess_1x"), later), None),
            Ok(()),
            "kinds do not mix: a subject named like a revoked jti"
        );
    }

    #[test]
    fn a_subject_revocation_reaches_our_own_tokens_by_their_idp_sub() {
        let (set, clock) = set();
        clock.advance(Duration::from_secs(2));
        revoke(&set, Kind::Sub, "user_2x", 60);
        let before = Some(clock.unix_secs() - 1);
        // An exchanged or internal token: sub = user.id, idp_sub = the IdP's.
        let ours = |iss: &str, iat: Option<u64>| VerifiedToken {
            iss: iss.into(),
            ids: TokenIds {
                idp_sub: Some("user_2x".into()),
                ..token("42", None, None, iat).ids
            },
            ..token("42", None, None, iat)
        };
        assert_eq!(
            set.check(&ours("portcullis", before), Some("portcullis")),
            Err(TokenError::Revoked)
        );
        assert_eq!(
            set.check(
                &ours("portcullis", Some(clock.unix_secs())),
                Some("portcullis")
            ),
            Ok(()),
            "made after the revocation's second"
        );
        assert_eq!(
            set.check(&ours("https://other-idp", before), Some("portcullis")),
            Ok(()),
            "another issuer's idp_sub claim names nobody"
        );
        assert_eq!(
            set.check(&ours("portcullis", before), None),
            Ok(()),
            "no tokens of our own configured"
        );
    }

    #[test]
    fn entries_end_at_their_instant_and_are_dropped() {
        let (set, clock) = set();
        revoke(&set, Kind::Jti, "j-1", 10);
        let t = token("u", Some("j-1"), None, None);
        clock.advance(Duration::from_millis(9_999));
        assert_eq!(set.check(&t, None), Err(TokenError::Revoked));
        assert_eq!(set.list().len(), 1);
        clock.advance(Duration::from_millis(1));
        assert_eq!(set.check(&t, None), Ok(()), "over at its instant");
        assert!(set.list().is_empty());
        clock.advance(Duration::from_millis(PURGE_EVERY_MS));
        revoke(&set, Kind::Jti, "j-2", 10);
        let held = set.entries.read().unwrap().jti.len();
        assert_eq!(held, 1, "the expired entry was dropped on a write");
    }

    #[test]
    fn two_revocations_of_a_value_merge_and_never_shorten_each_other() {
        let (set, clock) = set();
        let first = revoke(&set, Kind::Sub, "u", 3600);
        clock.advance(Duration::from_secs(5));
        let second = clock.unix_secs();
        // Later, but shorter: its second counts, the first one's end too.
        let merged = revoke(&set, Kind::Sub, "u", 60);
        assert_eq!(merged.revoked_at_ms(), second * 1000);
        assert_eq!(merged.expires_at_ms(), first.expires_at_ms());
        assert_eq!(
            set.check(&token("u", None, None, Some(second - 1)), None),
            Err(TokenError::Revoked),
            "a token issued between the two is refused by the second"
        );
        clock.advance(Duration::from_secs(600));
        assert_eq!(
            set.check(&token("u", None, None, Some(second - 1)), None),
            Err(TokenError::Revoked),
            "still in force after the shorter one's end"
        );
        assert_eq!(set.list(), vec![merged.clone()]);
        // An earlier one heard late (from another replica) changes nothing.
        let late = Revocation::at(
            Kind::Sub,
            "u".into(),
            first.revoked_at_ms(),
            first.expires_at_ms() - 1000,
            "late".into(),
        )
        .unwrap();
        assert_eq!(set.insert(late), merged);
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
    fn a_stored_revocation_is_validated_like_a_new_one() {
        let stored = |value: &str, revoked: u64, expires: u64| {
            serde_json::from_value::<Revocation>(serde_json::json!({"kind": "sid",
                "value": value, "revoked_at_ms": revoked, "expires_at_ms": expires, "by": "x"}))
            .map_err(|e| e.to_string())
        };
        let year = millis(MAX_TTL);
        assert!(stored("sess_1", 1_000, 2_000).is_ok());
        assert!(stored("sess_1", 1_000, 1_000 + year).is_ok());
        let refused = [
            stored("", 1_000, 2_000),
            stored(&"x".repeat(MAX_VALUE_BYTES + 1), 1_000, 2_000),
            stored("sess_1", 2_000, 1_000),
            stored("sess_1", 1_000, 1_000),
            stored("sess_1", 1_000, 1_001 + year),
        ];
        for (i, got) in refused.into_iter().enumerate() {
            assert!(got.is_err(), "case {i}: {got:?}");
        }
        let made = Revocation::new(Kind::Sub, "u", DEFAULT_TTL, 5_000, "by".into()).unwrap();
        let json = serde_json::to_string(&made).unwrap();
        assert_eq!(serde_json::from_str::<Revocation>(&json).unwrap(), made);
    }

    #[test]
    fn until_loaded_every_token_is_refused_as_unavailable() {
        let (set, _) = set();
        let t = token("u", None, None, None);
        assert_eq!(set.check(&t, None), Ok(()), "without Redis: loaded at once");
        set.expect_load();
        let refused = set.check(&t, None).unwrap_err();
        assert_eq!(refused, TokenError::RevocationsNotLoaded);
        assert!(refused.is_unavailable(), "503, not 401");
        set.load(vec![]);
        assert_eq!(set.check(&t, None), Ok(()));
    }

    #[test]
    fn readiness_waits_for_a_load_and_says_why() {
        let (set, _) = set();
        let status = set.status();
        assert_eq!(
            (status.loaded, status.count, status.subscription),
            (true, 0, None)
        );
        assert_eq!(status.error, None, "without Redis: loaded at once");
        set.expect_load();
        let status = set.status();
        assert_eq!(status.subscription, Some(Subscription::Connecting));
        assert!(status.error.unwrap().contains("not loaded from Redis yet"));
        set.subscription_changed(Subscription::Down, Some("connection refused"));
        let status = set.status();
        assert!(!status.loaded);
        assert!(status.error.unwrap().contains("connection refused"));
        set.subscription_changed(Subscription::Connecting, None);
        assert!(
            set.status().error.unwrap().contains("connection refused"),
            "kept while retrying"
        );
        revoke(&set, Kind::Jti, "made-while-away", 60);
        set.subscription_changed(Subscription::CatchingUp, None);
        set.load(vec![]);
        set.subscription_changed(Subscription::Subscribed, None);
        let status = set.status();
        assert_eq!(
            (status.loaded, status.count),
            (true, 1),
            "a load keeps what was made meanwhile"
        );
        assert_eq!(status.error, None);
        // Redis lost later: still loaded, and says why it hears nothing.
        set.subscription_changed(Subscription::Down, Some("broken pipe"));
        let status = set.status();
        assert!(status.loaded);
        assert!(status.error.unwrap().contains("broken pipe"));
    }
}
