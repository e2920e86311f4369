//! Who is calling, east-west included (docs/security.md, docs/policy.md): the mTLS
//! identity of the hop ([`super::mtls`]), the verified token, and the user context
//! a calling service passes on, combined into one [`Principal`].
//!
//! - No mTLS identity and no token: anonymous.
//! - A service token (`kind: service` issuer) in the JWT-SVID shape: a service;
//!   with an mTLS identity too, both must name the same workload (else 401).
//! - An mTLS identity: a service, proven by its certificate (`mtls: true`).
//! - A user token with no mTLS identity: that user (north-south).
//! - A service (either kind) carrying a user context — a user token, portcullis'
//!   internal token, or its `x-user-*` headers — has that user *on behalf of*
//!   it: policy sees it only under `forward_user: true` (see
//!   [`Principal::user_seen`]). With `headers.internal_token: true` only the
//!   internal token counts; headers are then never believed. An internal token
//!   is a token like any other to revocation (docs/revocation.md).
//!
//! The authorizer calls [`EastWest::caller`] before authentication and one of
//! [`Caller`]'s methods after; no I/O happens here.

use super::context_token::{user_of, InternalTokenVerifier, INTERNAL_TOKEN_HEADER};
use super::mtls::{MtlsError, MtlsIdentity, MtlsSettings, XfccUse, XFCC_HEADER};
use super::{SpiffeId, TokenError, VerifiedToken};
use crate::headers::ContextField;
use crate::principal::{Principal, Service, User};
use crate::request::AuthzRequest;
use serde_json::{Map, Value};

/// The configured name a context forwarded in headers is attributed to
/// (`from.users.issuers`).
pub const FORWARDED_ISSUER: &str = "forwarded";

/// Why a request's identity is not accepted: a 401 with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The mTLS identity is unusable.
    #[error(transparent)]
    Mtls(#[from] MtlsError),
    /// A service token whose `sub` is not a SPIFFE ID.
    #[error("the service token's subject is not a SPIFFE ID: {0}")]
    ServiceSubject(String),
    /// A service token from outside our trust domain(s).
    #[error("the service token's subject {0} is not in an accepted trust domain")]
    ForeignServiceToken(String),
    /// The service token and the mTLS certificate name different workloads.
    #[error("the service token names {token} but the client certificate is {mtls}: a request has one caller")]
    Conflict { mtls: String, token: String },
    /// A calling service's internal token does not verify.
    #[error("the internal token is not accepted: {0}")]
    InternalToken(TokenError),
}

/// Refuses a verified token that a revocation in force names
/// (docs/revocation.md). The runtime's revocation set is one; identity only
/// asks it, so it does not depend on where revocations come from.
pub trait RevocationCheck: Send + Sync {
    /// `Err(TokenError::Revoked)` for a revoked token; `own_issuer`: the `iss`
    /// of portcullis' own user-context tokens, whose `idp_sub` a `sub`
    /// revocation matches as well as their `sub`.
    fn check_revoked(
        &self,
        token: &VerifiedToken,
        own_issuer: Option<&str>,
    ) -> Result<(), TokenError>;
}

/// The east-west side of identity, built from the config.
#[derive(Debug, Clone)]
pub struct EastWest {
    mtls: MtlsSettings,
    /// `headers.user`, read backwards to rebuild a forwarded user context.
    user_headers: Vec<(String, ContextField)>,
    /// Set with `headers.internal_token: true`: the forwarded user comes from
    /// the internal token only.
    internal: Option<InternalTokenVerifier>,
}

impl EastWest {
    pub fn new(
        mtls: MtlsSettings,
        user_headers: Vec<(String, ContextField)>,
        internal: Option<InternalTokenVerifier>,
    ) -> Self {
        Self {
            mtls,
            user_headers,
            internal,
        }
    }

    /// The mTLS side of `request`'s identity; an internal token it forwards
    /// is checked against `revocations`.
    pub fn caller<'a>(
        &'a self,
        request: &'a AuthzRequest,
        revocations: &'a dyn RevocationCheck,
    ) -> Result<Caller<'a>, IdentityError> {
        let mtls = self
            .mtls
            .resolve(&request.source(), request.header(XFCC_HEADER))?;
        Ok(Caller {
            east_west: self,
            request,
            mtls,
            revocations,
        })
    }

    /// The user context a calling service passed on, if any.
    fn forwarded_user(
        &self,
        request: &AuthzRequest,
        revocations: &dyn RevocationCheck,
    ) -> Result<Option<User>, IdentityError> {
        if let Some(verifier) = &self.internal {
            let Some(token) = request.header(INTERNAL_TOKEN_HEADER) else {
                return Ok(None);
            };
            let token = verifier
                .verify(token.trim(), super::token_cache::unix_now())
                .and_then(|token| {
                    revocations.check_revoked(&token, Some(&token.iss))?;
                    user_of(token.claims().map())
                });
            return token.map(Some).map_err(IdentityError::InternalToken);
        }
        let mut fields = Map::new();
        let mut claims = Map::new();
        for (header, field) in &self.user_headers {
            let Some(value) = request.header(header) else {
                continue;
            };
            let value = Value::String(value.to_owned());
            match field {
                ContextField::User(name) => fields.insert(name.clone(), value),
                ContextField::Token(name) => claims.insert(name.clone(), value),
            };
        }
        if fields.is_empty() && claims.is_empty() {
            return Ok(None);
        }
        let subject = [fields.get("id"), claims.get("sub")]
            .into_iter()
            .flatten()
            .find_map(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Ok(Some(User {
            issuer: FORWARDED_ISSUER.into(),
            subject: subject.into(),
            claims: claims.into(),
            fields,
        }))
    }
}

/// One request's caller, between mTLS resolution and the token.
pub struct Caller<'a> {
    east_west: &'a EastWest,
    request: &'a AuthzRequest,
    mtls: MtlsIdentity,
    revocations: &'a dyn RevocationCheck,
}

impl std::fmt::Debug for Caller<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("mtls", &self.mtls)
            .finish_non_exhaustive()
    }
}

impl Caller<'_> {
    /// The mTLS identity as resolved.
    pub fn mtls(&self) -> &MtlsIdentity {
        &self.mtls
    }

    /// The principal of a request without a token.
    pub fn without_token(&self) -> Result<Principal, IdentityError> {
        match &self.mtls.caller {
            None => Ok(Principal::Anonymous),
            Some(id) => self.service(id, true, None),
        }
    }

    /// The principal of a request with a verified token of a `kind: service`
    /// issuer: its `sub` must be a SPIFFE ID in an accepted trust domain
    /// (JWT-SVID §3; `aud` and `exp` are required by the issuer's rules), and
    /// the same workload as the mTLS identity when there is one.
    pub fn with_service_token(&self, token: &VerifiedToken) -> Result<Principal, IdentityError> {
        let id = SpiffeId::new(&token.subject)
            .map_err(|e| IdentityError::ServiceSubject(e.to_string()))?;
        if !self.east_west.mtls.trust_domains.accepts(&id) {
            return Err(IdentityError::ForeignServiceToken(id.to_string()));
        }
        match &self.mtls.caller {
            Some(mtls) if *mtls != id => Err(IdentityError::Conflict {
                mtls: mtls.to_string(),
                token: id.to_string(),
            }),
            Some(_) => self.service(&id, true, None),
            None => self.service(&id, false, None),
        }
    }

    /// The principal of a request with a verified user token: that user, or,
    /// from an mTLS-identified service, the service acting for that user.
    pub fn with_user(&self, user: User) -> Result<Principal, IdentityError> {
        match &self.mtls.caller {
            None => Ok(Principal::User(user)),
            Some(id) => self.service(id, true, Some(user)),
        }
    }

    /// The client-sent header to remove on allow because it was not believed.
    pub fn untrusted_header(&self) -> Option<&'static str> {
        (self.mtls.xfcc == XfccUse::Ignored).then_some(XFCC_HEADER)
    }

    fn service(
        &self,
        id: &SpiffeId,
        mtls: bool,
        user: Option<User>,
    ) -> Result<Principal, IdentityError> {
        let user = match user {
            Some(user) => Some(user),
            None => self
                .east_west
                .forwarded_user(self.request, self.revocations)?,
        };
        let mut service = Service::from_spiffe_id(&id.to_string(), mtls);
        service.on_behalf_of = user.map(Box::new);
        Ok(Principal::Service(service))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::mtls::{IdentitySource, TrustDomains};
    use crate::identity::TrustDomain;

    const VIDEOS: &str = "spiffe://example.org/ns/default/sa/videos";

    struct NoneRevoked;

    impl RevocationCheck for NoneRevoked {
        fn check_revoked(&self, _: &VerifiedToken, _: Option<&str>) -> Result<(), TokenError> {
            Ok(())
        }
    }

    fn east_west() -> EastWest {
        EastWest::new(
            MtlsSettings {
                identity_from: IdentitySource::ALL.to_vec(),
                xfcc_trusted_from: vec![],
                trust_domains: TrustDomains::new(TrustDomain::new("example.org").unwrap()),
            },
            vec![
                ("x-user-id".into(), ContextField::User("id".into())),
                ("x-user-role".into(), ContextField::User("role".into())),
            ],
            None,
        )
    }

    fn request(principal: &str, headers: &[(&str, &str)]) -> AuthzRequest {
        AuthzRequest::builder()
            .headers(headers.iter().copied())
            .peer(principal, "", !principal.is_empty())
            .build()
    }

    fn service_token(sub: &str) -> VerifiedToken {
        VerifiedToken {
            issuer: "mesh".into(),
            iss: "https://mesh.example.test".into(),
            subject: sub.into(),
            expires_at: u64::MAX,
            ids: Default::default(),
            payload: None,
            generation: 0,
        }
    }

    #[test]
    fn principals_of_east_west_calls() {
        let ew = east_west();
        let headers = [("x-user-id", "u1"), ("x-user-role", "USER")];

        // An mTLS caller forwarding a user in headers: a service, the user on its
        // behalf — seen only under forward_user.
        let req = request(VIDEOS, &headers);
        let p = ew
            .caller(&req, &NoneRevoked)
            .unwrap()
            .without_token()
            .unwrap();
        let service = p.service().unwrap();
        assert_eq!((service.spiffe_id.as_str(), service.mtls), (VIDEOS, true));
        assert_eq!(p.user_seen(false), None);
        let user = p.user_seen(true).unwrap();
        assert_eq!(user.fields.get("id"), Some(&Value::String("u1".into())));
        assert_eq!(&*user.issuer, FORWARDED_ISSUER);

        // The same headers from a plaintext, unauthenticated caller: nobody.
        let req = request("", &headers);
        let p = ew
            .caller(&req, &NoneRevoked)
            .unwrap()
            .without_token()
            .unwrap();
        assert_eq!(p, Principal::Anonymous);
        assert_eq!(p.user_seen(true), None);

        // A service token alone: a service, not mTLS-proven.
        let req = request("", &[]);
        let p = ew
            .caller(&req, &NoneRevoked)
            .unwrap()
            .with_service_token(&service_token(VIDEOS))
            .unwrap();
        assert!(!p.service().unwrap().mtls);

        // Token and certificate agree: mTLS-proven.
        let req = request(VIDEOS, &[]);
        let p = ew
            .caller(&req, &NoneRevoked)
            .unwrap()
            .with_service_token(&service_token(VIDEOS))
            .unwrap();
        assert!(p.service().unwrap().mtls);

        // They disagree: 401 with the reason.
        let comments = "spiffe://example.org/ns/default/sa/comments";
        let got = ew
            .caller(&req, &NoneRevoked)
            .unwrap()
            .with_service_token(&service_token(comments));
        assert_eq!(
            got,
            Err(IdentityError::Conflict {
                mtls: VIDEOS.into(),
                token: comments.into()
            })
        );

        // JWT-SVID shape: sub a SPIFFE ID of ours.
        let caller = ew.caller(&req, &NoneRevoked).unwrap();
        assert!(matches!(
            caller.with_service_token(&service_token("videos-service")),
            Err(IdentityError::ServiceSubject(_))
        ));
        assert_eq!(
            caller.with_service_token(&service_token("spiffe://evil.org/ns/default/sa/videos")),
            Err(IdentityError::ForeignServiceToken(
                "spiffe://evil.org/ns/default/sa/videos".into()
            ))
        );

        // A user token: north-south it is the user; from an mTLS service, the
        // service acting for that (verified) user.
        let user = User::from_claims("clerk", "user_1", Map::new());
        let req = request("", &[]);
        assert_eq!(
            ew.caller(&req, &NoneRevoked)
                .unwrap()
                .with_user(user.clone())
                .unwrap(),
            Principal::User(user.clone())
        );
        let req = request(VIDEOS, &headers);
        let p = ew
            .caller(&req, &NoneRevoked)
            .unwrap()
            .with_user(user.clone())
            .unwrap();
        assert_eq!(p.user_seen(true), Some(&user));
    }

    #[test]
    fn with_internal_tokens_headers_are_not_a_user_context() {
        let keys = std::sync::Arc::new(crate::identity::keys::KeySet::new(vec![]));
        let mut ew = east_west();
        ew.internal = Some(InternalTokenVerifier::new(keys, "portcullis"));
        let req = request(VIDEOS, &[("x-user-id", "u1")]);
        let p = ew
            .caller(&req, &NoneRevoked)
            .unwrap()
            .without_token()
            .unwrap();
        assert_eq!(p.user_seen(true), None);
        let req = request(VIDEOS, &[(INTERNAL_TOKEN_HEADER, "not.a.token")]);
        assert!(matches!(
            ew.caller(&req, &NoneRevoked).unwrap().without_token(),
            Err(IdentityError::InternalToken(_))
        ));
    }
}
