//! The east-west parts of `portcullis.yaml` (docs/configuration.md, docs/security.md, docs/east-west.md): `mtls`,
//! `federated_trust_domains`, `headers.service`, and `tokens` (where the signing
//! key of the tokens portcullis signs lives, and their lifetimes). YAML shapes
//! and their validation into domain types, reported like every config error.

use super::raw::Checked;
use super::{ConfigDuration, Validator};
use crate::ca::token::TokenSigner;
use crate::headers::ServiceField;
use crate::identity::mtls::{IdentitySource, MtlsSettings, TrustDomains};
use crate::identity::{SpiffeId, TrustDomain};
use crate::yaml::Key;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Lifetime of internal and exchanged tokens when `tokens.ttl` is not set.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(5 * 60);
/// Cap on `IssueServiceToken` lifetimes when `tokens.max_service_ttl` is not set.
pub const DEFAULT_MAX_SERVICE_TTL: Duration = Duration::from_secs(3600);
/// `iss` of the user-context tokens portcullis signs when `tokens.issuer` is not set.
pub const DEFAULT_TOKEN_ISSUER: &str = "portcullis";

/// `mtls:`.
#[derive(Debug, Deserialize)]
pub struct RawMtls {
    /// Default: all three, `[source_principal, peer_certificate, xfcc]`.
    pub identity_from: Option<Vec<String>>,
    #[serde(default)]
    pub xfcc_trusted_from: Vec<String>,
}

/// `tokens:`.
#[derive(Debug, Deserialize)]
pub struct RawTokens {
    /// The directory holding `signing-key.pem` (`certs/tokens`). Required;
    /// missing, it is empty, and reported.
    #[serde(default)]
    pub key_dir: String,
    /// `iss` of the user-context tokens (internal, exchanged).
    pub issuer: Option<String>,
    /// Lifetime of internal and exchanged tokens.
    pub ttl: Option<Checked<ConfigDuration>>,
    /// Longest service token the token service issues.
    pub max_service_ttl: Option<Checked<ConfigDuration>>,
}

/// The validated `tokens` section: the signing key, loaded.
#[derive(Debug, Clone)]
pub struct TokensConfig {
    pub key_dir: PathBuf,
    pub signer: Arc<TokenSigner>,
    /// `iss` of internal and exchanged (user-context) tokens.
    pub issuer: String,
    /// `iss` of service tokens: the trust domain's own ID (`spiffe://TD`).
    pub service_issuer: String,
    pub trust_domain: TrustDomain,
    pub ttl: Duration,
    pub max_service_ttl: Duration,
}

impl Validator<'_> {
    /// `trust_domain` and `federated_trust_domains`.
    pub(super) fn trust_domains(
        &mut self,
        ours: &str,
        federated: &[String],
    ) -> Option<TrustDomains> {
        let ours = match TrustDomain::new(ours) {
            Ok(td) => Some(td),
            Err(e) => {
                self.error(&[Key::field("trust_domain")], e.to_string());
                None
            }
        };
        let mut accepted = Vec::new();
        for (i, name) in federated.iter().enumerate() {
            match TrustDomain::new(name) {
                Ok(td) => accepted.push(td),
                Err(e) => self.error(
                    &[Key::field("federated_trust_domains"), Key::Index(i)],
                    e.to_string(),
                ),
            }
        }
        ours.map(|ours| TrustDomains {
            ours,
            federated: accepted,
        })
    }

    /// `mtls`: where caller identities come from, and which hops' XFCC is believed.
    pub(super) fn mtls(&mut self, raw: Option<&RawMtls>, trust: &TrustDomains) -> MtlsSettings {
        let at = |key: &str| vec![Key::field("mtls"), Key::field(key)];
        let identity_from = match raw.and_then(|r| r.identity_from.as_ref()) {
            None => IdentitySource::ALL.to_vec(),
            Some(names) => names
                .iter()
                .filter_map(|name| {
                    let parsed = IdentitySource::parse(name);
                    if parsed.is_none() {
                        self.error(
                            &at("identity_from"),
                            format!("{name:?}: use source_principal, peer_certificate or xfcc"),
                        );
                    }
                    parsed
                })
                .collect(),
        };
        let mut xfcc_trusted_from = Vec::new();
        for (i, id) in raw
            .map(|r| r.xfcc_trusted_from.as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let path = [
                Key::field("mtls"),
                Key::field("xfcc_trusted_from"),
                Key::Index(i),
            ];
            match SpiffeId::new(id) {
                Ok(id) if trust.accepts(&id) => xfcc_trusted_from.push(id),
                Ok(id) => self.error(
                    &path,
                    format!("{id} is not in trust_domain or federated_trust_domains"),
                ),
                Err(e) => self.error(&path, e.to_string()),
            }
        }
        MtlsSettings {
            identity_from,
            xfcc_trusted_from,
            trust_domains: trust.clone(),
        }
    }

    /// `headers.service`: header name → `service.<field>`.
    pub(super) fn service_headers(
        &mut self,
        raw: &std::collections::BTreeMap<String, String>,
    ) -> Vec<(String, ServiceField)> {
        let mut mapped = Vec::new();
        for (name, field) in raw {
            let at = [
                Key::field("headers"),
                Key::field("service"),
                Key::field(name),
            ];
            if !super::is_header_name(name) {
                self.error(&at, format!("{name:?} is not a lower-case header name"));
                continue;
            }
            match ServiceField::parse(field) {
                Some(f) => mapped.push((name.clone(), f)),
                None => self.error(
                    &at,
                    format!("{field:?} is not a service field: write service.name, service.namespace or service.spiffe_id"),
                ),
            }
        }
        mapped
    }

    /// `tokens`: the signing key must already exist (it is never created by the
    /// server: `portcullis token jwks --dir certs` creates it).
    pub(super) fn tokens(
        &mut self,
        raw: &RawTokens,
        trust_domain: &TrustDomain,
        base: &Path,
    ) -> Option<TokensConfig> {
        let at = |key: &str| [Key::field("tokens"), Key::field(key)];
        let key_dir = base.join(&raw.key_dir);
        let signer = if raw.key_dir.is_empty() {
            self.error(
                &at("key_dir"),
                "`key_dir` is required: the directory holding signing-key.pem, e.g. certs/tokens"
                    .into(),
            );
            None
        } else {
            match TokenSigner::load(&key_dir) {
                Ok(signer) => Some(Arc::new(signer)),
                Err(e) => {
                    self.error(
                        &at("key_dir"),
                        format!("{e} (create the key with `portcullis token jwks --dir CERTS`, whose tokens/ is this directory)"),
                    );
                    None
                }
            }
        };
        let ttl = self.duration(&at("ttl"), raw.ttl.as_ref(), DEFAULT_TOKEN_TTL);
        let max_service_ttl = self.duration(
            &at("max_service_ttl"),
            raw.max_service_ttl.as_ref(),
            DEFAULT_MAX_SERVICE_TTL,
        );
        for (key, value) in [("ttl", ttl), ("max_service_ttl", max_service_ttl)] {
            if value.is_zero() {
                self.error(&at(key), "must be longer than zero".into());
            }
        }
        let issuer = raw
            .issuer
            .clone()
            .unwrap_or_else(|| DEFAULT_TOKEN_ISSUER.to_owned());
        let service_issuer = trust_domain.id().to_string();
        if issuer.is_empty() || issuer == service_issuer {
            self.error(
                &at("issuer"),
                format!("the user-context tokens need their own non-empty `iss`, not the service tokens' {service_issuer:?}"),
            );
        }
        Some(TokensConfig {
            key_dir,
            signer: signer?,
            issuer,
            service_issuer,
            trust_domain: trust_domain.clone(),
            ttl,
            max_service_ttl,
        })
    }
}

/// The JWT-SVID algorithms (JWT-SVID §3: RS256/384/512, ES256/384, PS256/384/512):
/// a service issuer may allow nothing else.
pub fn is_jwt_svid_algorithm(alg: crate::identity::Algorithm) -> bool {
    use crate::identity::algorithm::KeyFamily;
    matches!(
        alg.family(),
        KeyFamily::Rsa | KeyFamily::EcP256 | KeyFamily::EcP384
    )
}
