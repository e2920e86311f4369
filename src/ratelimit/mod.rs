//! Rate limits (docs/rate-limits.md): after the policy allowed a request by a
//! rule with a `rate_limit`, one bucket of that rule — the caller's user,
//! service, IP address, token, or the whole rule — counts it. Over the limit,
//! the allow becomes a 429.
//!
//! The buckets belong to the [`Runtime`](crate::runtime::Runtime), never to
//! the reloadable snapshot, so they outlive config and policy reloads:
//! [`RateLimits`] holds this process' buckets ([`local`]) and the Redis of
//! `state.redis` ([`global`]). The algorithm ([`gcra`]) is pure; this room
//! only picks the bucket, counts, and writes the answer's headers.

pub mod gcra;
pub mod global;
pub mod local;

use crate::answer::{Answer, DenyKind};
use crate::clock::Clock;
use crate::identity::{Authenticator, TokenCache};
use crate::metrics::{Metrics, RateLimitLabels};
use crate::policy::{LimitPer, LimitScope, RateLimit};
use crate::principal::Principal;
use crate::request::AuthzRequest;
use aws_lc_rs::digest;
use gcra::{ceil_secs, Gcra, Verdict};
pub use global::{GlobalBuckets, GlobalStatus};
use local::{BucketId, LocalBuckets};
use std::sync::{Arc, Mutex};

/// At most this many local buckets are held at once (about 50 bytes each).
const MAX_LOCAL_BUCKETS: usize = 200_000;

/// The process' buckets, local and in Redis.
pub struct RateLimits {
    local: LocalBuckets,
    global: Mutex<Option<Arc<GlobalBuckets>>>,
    metrics: Arc<Metrics>,
    clock: Clock,
}

impl RateLimits {
    pub fn new(metrics: Arc<Metrics>, clock: Clock) -> Self {
        Self {
            local: LocalBuckets::new(MAX_LOCAL_BUCKETS),
            global: Mutex::new(None),
            metrics,
            clock,
        }
    }

    /// The global buckets in the Redis of `url`: the ones held (their
    /// connection kept) while the URL is the same. Needs a tokio runtime.
    pub fn global(&self, url: &str) -> Result<Arc<GlobalBuckets>, String> {
        let mut held = self.global.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(buckets) = held.as_ref().filter(|b| b.url() == url) {
            return Ok(Arc::clone(buckets));
        }
        let buckets = GlobalBuckets::connect(url, Arc::clone(&self.metrics))
            .map_err(|e| format!("invalid Redis URL: {e}"))?;
        *held = Some(Arc::clone(&buckets));
        Ok(buckets)
    }

    /// Counts one allowed request against `limit` in bucket `id`: in Redis
    /// when the limit is global and `global` answers, else here.
    pub async fn count(
        &self,
        limit: &RateLimit,
        id: BucketId,
        global: Option<&Arc<GlobalBuckets>>,
    ) -> Verdict {
        let gcra = Gcra::of(limit);
        let now = self.clock.unix_millis().saturating_mul(1_000);
        if let (LimitScope::Global, Some(global)) = (limit.scope, global) {
            let key = global::redis_key(&limit.rule, limit.per.as_str(), id);
            match global.check(&gcra, &key, now).await {
                Ok(verdict) => return verdict,
                // Logged by `global` when the outage starts; counted per check.
                Err(_) => {
                    self.metrics.rate_limit_fallbacks.inc();
                }
            }
        }
        self.local.check(&gcra, id, now)
    }

    /// Counts an allow by a rule with `limit`: the allow gets the `RateLimit`
    /// headers for the client, or becomes a 429.
    #[allow(clippy::too_many_arguments)]
    pub async fn enforce(
        &self,
        limit: &RateLimit,
        answer: &mut Answer,
        request: &AuthzRequest,
        principal: &Principal,
        forward_user: bool,
        authenticator: &Authenticator,
        global: Option<&Arc<GlobalBuckets>>,
        request_id: &str,
    ) {
        let id = bucket_id(limit, request, principal, forward_user, authenticator);
        let verdict = self.count(limit, id, global).await;
        if let Verdict::Limited { .. } = verdict {
            self.metrics
                .rate_limited
                .get_or_create(&RateLimitLabels {
                    rule: limit.rule.to_string(),
                    per: limit.per.as_str(),
                })
                .inc();
        }
        answer_with(answer, limit, verdict, request_id);
    }

    /// The local buckets (tests).
    pub fn local(&self) -> &LocalBuckets {
        &self.local
    }
}

/// The answer of `verdict`: an allow keeps its headers and gets `RateLimit`
/// and `RateLimit-Policy` for the client; over the limit, a 429 with
/// `Retry-After` too (draft-ietf-httpapi-ratelimit-headers-09/10 fields).
pub fn answer_with(answer: &mut Answer, limit: &RateLimit, verdict: Verdict, request_id: &str) {
    let gcra = Gcra::of(limit);
    let name = sf_string(&limit.rule);
    let policy = format!(
        "{name};q={};w={}",
        gcra.burst(),
        ceil_secs(gcra.window()).max(1)
    );
    match verdict {
        Verdict::Allowed { remaining, reset } => {
            answer.add_response_header("ratelimit-policy", policy);
            answer.add_response_header(
                "ratelimit",
                format!("{name};r={remaining};t={}", ceil_secs(reset)),
            );
        }
        Verdict::Limited { retry_after, reset } => {
            let wait = ceil_secs(retry_after);
            *answer = Answer::deny(
                DenyKind::TooManyRequests,
                &format!(
                    "rate limit of rule '{}' exceeded ({} per {}, burst {}); retry after {wait} s",
                    limit.rule,
                    limit.rate.count,
                    match limit.rate.period {
                        crate::policy::RatePeriod::Second => "second",
                        crate::policy::RatePeriod::Minute => "minute",
                        crate::policy::RatePeriod::Hour => "hour",
                    },
                    limit.burst
                ),
                request_id,
            );
            answer.add_response_header("retry-after", wait.to_string());
            answer.add_response_header("ratelimit-policy", policy);
            answer.add_response_header("ratelimit", format!("{name};r=0;t={}", ceil_secs(reset)));
        }
    }
}

/// `text` as a structured-field String (RFC 8941 §3.3.3): quoted, `"` and `\`
/// escaped, anything outside printable ASCII replaced by `?`.
fn sf_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push('"');
    out
}

/// The bucket of this request under `limit`: a hash of the rule and the key
/// (docs/rate-limits.md, "Keys"). When the principal has no such key (`per:
/// user` and a service calls), its own identity is the key: a user's id, a
/// service's SPIFFE ID, a webhook's name, or, for an anonymous caller, its IP
/// address; `per: token` without a token likewise.
pub fn bucket_id(
    limit: &RateLimit,
    request: &AuthzRequest,
    principal: &Principal,
    forward_user: bool,
    authenticator: &Authenticator,
) -> BucketId {
    let mut hash = digest::Context::new(&digest::SHA256);
    hash.update(limit.rule.as_bytes());
    hash.update(&[0]);
    let mut key = |kind: &str, value: &[u8]| {
        hash.update(kind.as_bytes());
        hash.update(&[0]);
        hash.update(value);
    };
    let user = principal.user_seen(forward_user);
    match limit.per {
        LimitPer::Rule => key("rule", b""),
        LimitPer::User if user.is_some() => user_key(user, &mut key),
        LimitPer::Service if principal.service().is_some() => {
            identity_key(principal, request, &mut key)
        }
        LimitPer::Ip => key("ip", request.client_address().as_bytes()),
        LimitPer::Token => match token_of(request, authenticator) {
            Some(token) => key("token", &TokenCache::key(token).to_le_bytes()),
            None => identity_key(principal, request, &mut key),
        },
        LimitPer::User | LimitPer::Service => identity_key(principal, request, &mut key),
    }
    let digest = hash.finish();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest.as_ref()[..16]);
    u128::from_le_bytes(id)
}

fn user_key(user: Option<&crate::principal::User>, key: &mut impl FnMut(&str, &[u8])) {
    let Some(user) = user else { return };
    match user.fields.get("id") {
        Some(serde_json::Value::String(id)) => key("user", id.as_bytes()),
        Some(id @ serde_json::Value::Number(_)) => key("user", id.to_string().as_bytes()),
        // No `id` column: the subject, under its issuer.
        _ => key(
            "subject",
            format!("{}\0{}", user.issuer, user.subject).as_bytes(),
        ),
    }
}

/// The principal's own identity as a key.
fn identity_key(principal: &Principal, request: &AuthzRequest, key: &mut impl FnMut(&str, &[u8])) {
    match principal {
        Principal::User(_) => user_key(principal.user(), key),
        Principal::Service(service) => key("service", service.spiffe_id.as_bytes()),
        Principal::Webhook(webhook) => key("webhook", webhook.name.as_bytes()),
        Principal::Anonymous => key("ip", request.client_address().as_bytes()),
    }
}

/// The credential the authenticator reads (the first location holding one,
/// as in [`Authenticator::authenticate`]).
fn token_of<'r>(request: &'r AuthzRequest, authenticator: &Authenticator) -> Option<&'r str> {
    authenticator
        .issuers()
        .iter()
        .flat_map(|issuer| issuer.credentials.iter())
        .find_map(|credential| credential.extract(request))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Rate, RatePeriod};

    fn limit(rule: &str, rate: &str, burst: u32) -> RateLimit {
        RateLimit {
            rule: rule.into(),
            per: LimitPer::User,
            rate: Rate::parse(rate).unwrap(),
            burst,
            scope: LimitScope::Local,
        }
    }

    fn allow() -> Answer {
        Answer::Allow {
            set: Vec::new(),
            remove: Vec::new(),
            response: Vec::new(),
        }
    }

    #[test]
    fn allowed_answers_carry_the_draft_headers() {
        let mut answer = allow();
        let limit = limit("videos-read", "20/s", 40);
        answer_with(
            &mut answer,
            &limit,
            Verdict::Allowed {
                remaining: 12,
                reset: 1_400_000,
            },
            "r",
        );
        let Answer::Allow { response, .. } = answer else {
            panic!()
        };
        assert_eq!(
            response,
            [
                ("ratelimit-policy".into(), "\"videos-read\";q=40;w=2".into()),
                ("ratelimit".into(), "\"videos-read\";r=12;t=2".into()),
            ]
        );
    }

    #[test]
    fn over_the_limit_is_a_429() {
        let mut answer = allow();
        let limit = limit("videos-read", "20/s", 40);
        answer_with(
            &mut answer,
            &limit,
            Verdict::Limited {
                retry_after: 50_000,
                reset: 2_000_000,
            },
            "rid",
        );
        assert_eq!(answer.status(), 429);
        let Answer::Deny { headers, body, .. } = answer else {
            panic!()
        };
        let get = |name: &str| {
            headers
                .iter()
                .find(|(h, _)| h == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("retry-after"), Some("1"));
        assert_eq!(get("ratelimit-policy"), Some("\"videos-read\";q=40;w=2"));
        assert_eq!(get("ratelimit"), Some("\"videos-read\";r=0;t=2"));
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], "rate_limited");
        assert_eq!(body["request_id"], "rid");
    }

    #[test]
    fn names_are_structured_field_strings() {
        assert_eq!(sf_string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(sf_string("vidéos"), "\"vid?os\"");
        let limit = limit("x", "5/m", 1);
        assert_eq!(limit.rate.period, RatePeriod::Minute);
        let mut answer = allow();
        answer_with(&mut answer, &limit, Gcra::of(&limit).check(None, 0).0, "r");
        let Answer::Allow { response, .. } = answer else {
            panic!()
        };
        assert_eq!(response[0].1, "\"x\";q=1;w=12");
        assert_eq!(response[1].1, "\"x\";r=0;t=12");
    }
}
