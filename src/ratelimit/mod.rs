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
use crate::identity::TokenCache;
use crate::metrics::{Metrics, RateLimitLabels};
use crate::policy::{LimitPer, LimitScope, RateLimit};
use crate::principal::Principal;
use crate::request::AuthzRequest;
use aws_lc_rs::digest;
use gcra::{ceil_secs, Gcra, Verdict};
pub use global::{GlobalBuckets, GlobalStatus};
pub use local::BucketId;
use local::LocalBuckets;
use std::net::IpAddr;
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
    /// The buckets of a URL that is not one count locally, saying why on
    /// `/readyz` (the revocation store refuses such a URL first).
    pub fn global(&self, url: &str) -> Arc<GlobalBuckets> {
        let mut held = self.global.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(buckets) = held.as_ref().filter(|b| b.url() == url) {
            return Arc::clone(buckets);
        }
        let buckets = GlobalBuckets::connect(url, Arc::clone(&self.metrics));
        *held = Some(Arc::clone(&buckets));
        buckets
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
            let key = global::redis_key(&limit.rule, limit.per, id);
            match global.check(&gcra, &key, now).await {
                Ok(verdict) => return verdict,
                // Logged by `global` when the outage starts; counted per check.
                Err(_) => {
                    self.metrics.rate_limit_fallbacks.inc();
                }
            }
        }
        self.local.check(&gcra, &limit.rule, id, now)
    }

    /// Counts an allow by a rule with `limit` in bucket `id` ([`bucket_id`]):
    /// the allow gets the `RateLimit` headers for the client, or becomes a 429.
    pub async fn enforce(
        &self,
        limit: &RateLimit,
        id: BucketId,
        global: Option<&Arc<GlobalBuckets>>,
        answer: &mut Answer,
        request_id: &str,
    ) {
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

/// Says (at config load and reload) which `scope: global` limits count in
/// each process for want of `state.redis`.
pub fn warn_global_without_redis(policy: &crate::policy::Policy) {
    let rules: Vec<&str> = policy
        .rules()
        .iter()
        .filter_map(|rule| rule.rate_limit.as_deref())
        .filter(|limit| limit.scope == LimitScope::Global)
        .map(|limit| &*limit.rule)
        .collect();
    if !rules.is_empty() {
        tracing::warn!(rules = ?rules,
            "rate limits: scope: global without state.redis; these limits count in each replica on its own");
    }
}

/// The answer of `verdict`: an allow keeps its headers and gets `RateLimit`
/// and `RateLimit-Policy` for the client; over the limit, a 429 with
/// `Retry-After` too (draft-ietf-httpapi-ratelimit-headers-09/10 fields).
pub fn answer_with(answer: &mut Answer, limit: &RateLimit, verdict: Verdict, request_id: &str) {
    let name = sf_string(&limit.rule);
    let policy = format!(
        "{name};q={};w={}",
        limit.burst,
        ceil_secs(limit.window_micros()).max(1)
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
                    limit.rate.period.names().1,
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
/// address; `per: token` without a token likewise. `token`: the credential
/// the authentication read ([`Authenticator::credential`](crate::identity::Authenticator::credential)).
pub fn bucket_id(
    limit: &RateLimit,
    request: &AuthzRequest,
    principal: &Principal,
    forward_user: bool,
    token: Option<&str>,
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
        LimitPer::Ip => key("ip", ip_key(request.client_address()).as_bytes()),
        LimitPer::Token => match token {
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
        Principal::Anonymous => key("ip", ip_key(request.client_address()).as_bytes()),
    }
}

/// What a `per: ip` bucket counts for `address`: an IPv4 address (also when
/// written IPv4-mapped, `::ffff:192.0.2.1`, as the HTTP mode canonicalizes
/// it), or the /64 of an IPv6 address — one subscriber's network, inside
/// which a client picks any address it likes (docs/rate-limits.md, "Keys").
/// Text that is not an address (or none) is its own key.
pub fn ip_key(address: &str) -> String {
    match address.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) {
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Ok(IpAddr::V6(v6)) => {
            let prefix = u128::from(v6) & !(u128::from(u64::MAX));
            format!("{}/64", std::net::Ipv6Addr::from(prefix))
        }
        Err(_) => address.to_owned(),
    }
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
    fn ipv6_clients_are_counted_by_their_64() {
        assert_eq!(ip_key("192.0.2.7"), "192.0.2.7");
        assert_eq!(ip_key("::ffff:192.0.2.7"), "192.0.2.7", "IPv4-mapped");
        assert_eq!(ip_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(
            ip_key("2001:DB8:1:2:ffff:ffff:ffff:ffff"),
            "2001:db8:1:2::/64",
            "any address of the /64, any spelling"
        );
        assert_ne!(ip_key("2001:db8:1:3::1"), ip_key("2001:db8:1:2::1"));
        assert_eq!(ip_key(""), "");
    }

    #[test]
    fn the_window_is_burst_periods_over_count_exactly() {
        // 3/s, burst 3: a whole burst back in exactly 1 s (not 3·333,334 µs → 2).
        let mut answer = allow();
        let three = limit("x", "3/s", 3);
        answer_with(
            &mut answer,
            &three,
            Verdict::Allowed {
                remaining: 2,
                reset: 333_334,
            },
            "r",
        );
        let Answer::Allow { response, .. } = answer else {
            panic!()
        };
        assert_eq!(response[0].1, "\"x\";q=3;w=1");
        assert_eq!(limit("x", "7/m", 2).window_micros(), 17_142_858);
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
