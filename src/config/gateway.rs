//! The parts of `portcullis.yaml` for gateways and operators (docs/configuration.md,
//! docs/gateways.md, docs/revocation.md): `server.check_listen`,
//! `server.trusted_proxies`, `revocation` and `admin`. YAML shapes and their
//! validation into domain types, reported like every config error.

use super::raw::Checked;
use super::Validator;
use crate::identity::mtls::TrustDomains;
use crate::identity::SpiffeId;
use crate::yaml::Key;
use ipnet::IpNet;
use serde::Deserialize;
use std::net::IpAddr;

/// `revocation:`.
#[derive(Debug, Deserialize, Default)]
pub struct RawRevocation {
    pub sessions_from_webhooks: Option<Checked<bool>>,
}

/// `admin:`.
#[derive(Debug, Deserialize, Default)]
pub struct RawAdmin {
    #[serde(default)]
    pub principals: Vec<String>,
}

/// `server.trusted_proxies`: the peers whose `X-Forwarded-For` / `X-Real-IP`
/// the HTTP mode believes for the client address (docs/gateways.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    /// Whether `peer` is one of the trusted proxies (an IPv4-mapped IPv6 peer
    /// counts as its IPv4 address).
    pub fn contains(&self, peer: IpAddr) -> bool {
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&peer))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `revocation:` and `admin:` (docs/revocation.md).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationConfig {
    /// Clerk `session.revoked` / `session.ended` / `session.removed` webhooks
    /// revoke that session (`sid`).
    pub sessions_from_webhooks: bool,
    /// Who may call the mutating admin API (`Revoke`), by mTLS SPIFFE ID.
    pub admin_principals: Vec<SpiffeId>,
}

impl Validator<'_> {
    /// `server.trusted_proxies`: CIDRs or single addresses.
    pub(super) fn trusted_proxies(&mut self, raw: &[String]) -> TrustedProxies {
        let mut nets = Vec::new();
        for (i, text) in raw.iter().enumerate() {
            let at = [
                Key::field("server"),
                Key::field("trusted_proxies"),
                Key::Index(i),
            ];
            let parsed = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(net) => nets.push(net.trunc()),
                Err(_) => self.error(
                    &at,
                    format!(
                        "{text:?} is not an IP address or CIDR: write e.g. 10.0.0.0/8 or 127.0.0.1"
                    ),
                ),
            }
        }
        TrustedProxies::new(nets)
    }

    /// `revocation:` and `admin:`.
    pub(super) fn revocation(
        &mut self,
        revocation: &RawRevocation,
        admin: &RawAdmin,
        trust: Option<&TrustDomains>,
    ) -> RevocationConfig {
        let sessions_from_webhooks = revocation
            .sessions_from_webhooks
            .as_ref()
            .and_then(|c| {
                self.value(
                    &[
                        Key::field("revocation"),
                        Key::field("sessions_from_webhooks"),
                    ],
                    c,
                )
            })
            .unwrap_or(false);
        let mut admin_principals = Vec::new();
        for (i, id) in admin.principals.iter().enumerate() {
            let at = [Key::field("admin"), Key::field("principals"), Key::Index(i)];
            match SpiffeId::new(id) {
                Ok(id) if trust.is_none_or(|t| t.accepts(&id)) => admin_principals.push(id),
                Ok(id) => self.error(
                    &at,
                    format!("{id} is not in trust_domain or federated_trust_domains"),
                ),
                Err(e) => self.error(&at, e.to_string()),
            }
        }
        RevocationConfig {
            sessions_from_webhooks,
            admin_principals,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_match_their_networks_and_mapped_addresses() {
        let proxies = TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ]);
        assert!(proxies.contains("10.1.2.3".parse().unwrap()));
        assert!(proxies.contains("127.0.0.1".parse().unwrap()));
        assert!(proxies.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!proxies.contains("127.0.0.2".parse().unwrap()));
        assert!(!proxies.contains("192.168.0.1".parse().unwrap()));
        assert!(!TrustedProxies::default().contains("127.0.0.1".parse().unwrap()));
    }
}
