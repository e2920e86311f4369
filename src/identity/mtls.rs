//! The caller's mTLS identity (docs/configuration.md, docs/security.md): which SPIFFE ID the hop that
//! sent a request proved, and whether an `x-forwarded-client-cert` header it
//! carried is believed.
//!
//! Sources, in order of trust:
//! - `source_principal`: Envoy's `attributes.source.principal`, the URI SAN of the
//!   client certificate Envoy verified;
//! - `peer_certificate`: the certificate itself (`include_peer_certificate: true`),
//!   re-checked here against the X509-SVID rules (exactly one URI SAN, a SPIFFE ID,
//!   not a CA) — and it must agree with the principal when both are sent;
//! - `xfcc`: believed **only** when the hop is in `mtls.xfcc_trusted_from` (an
//!   ingress gateway relaying its own client's certificate). From any other hop
//!   the header is a client-sent header like any other: ignored, and stripped on
//!   allow — except when it only repeats what the hop proved (the local Envoy's
//!   `SANITIZE_SET` account of the direct peer), which carries no new claim.
//!
//! Every ID must belong to our trust domain or a configured federated one. Pure:
//! no I/O; the authorizer calls [`MtlsSettings::resolve`] before policy runs.

use super::spiffe::{SpiffeId, TrustDomain};
use super::xfcc::{self, XfccElement};
use crate::request::Source;

/// The header Envoy forwards client certificate details in.
pub const XFCC_HEADER: &str = "x-forwarded-client-cert";

/// One place a caller's mTLS identity may be read from (`mtls.identity_from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentitySource {
    SourcePrincipal,
    PeerCertificate,
    Xfcc,
}

impl IdentitySource {
    pub const ALL: [IdentitySource; 3] = [
        IdentitySource::SourcePrincipal,
        IdentitySource::PeerCertificate,
        IdentitySource::Xfcc,
    ];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "source_principal" => Some(IdentitySource::SourcePrincipal),
            "peer_certificate" => Some(IdentitySource::PeerCertificate),
            "xfcc" => Some(IdentitySource::Xfcc),
            _ => None,
        }
    }
}

/// Our trust domain and the federated ones whose IDs we accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustDomains {
    pub ours: TrustDomain,
    pub federated: Vec<TrustDomain>,
}

impl TrustDomains {
    pub fn new(ours: TrustDomain) -> Self {
        Self {
            ours,
            federated: Vec::new(),
        }
    }

    /// Whether `id` belongs to one of them.
    pub fn accepts(&self, id: &SpiffeId) -> bool {
        id.is_member_of(&self.ours) || self.federated.iter().any(|td| id.is_member_of(td))
    }
}

/// The validated `mtls` config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtlsSettings {
    pub identity_from: Vec<IdentitySource>,
    /// Hops whose XFCC header is believed.
    pub xfcc_trusted_from: Vec<SpiffeId>,
    pub trust_domains: TrustDomains,
}

/// What to do with an XFCC header the request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XfccUse {
    /// There is none.
    Absent,
    /// Sent by a trusted hop: it named the caller. Kept for the upstream.
    Believed,
    /// It only describes the direct peer the hop proved (the local Envoy's own
    /// `SANITIZE_SET` header). Kept.
    DescribesPeer,
    /// Not believed: ignored, and removed on allow like any client-sent header.
    Ignored,
}

/// The mTLS side of one request's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MtlsIdentity {
    /// The calling workload: the hop, or the client a trusted hop vouched for.
    pub caller: Option<SpiffeId>,
    /// The direct peer, as Envoy proved it.
    pub hop: Option<SpiffeId>,
    pub xfcc: XfccUse,
}

impl MtlsIdentity {
    /// No mTLS identity, no XFCC.
    pub fn none() -> Self {
        Self {
            caller: None,
            hop: None,
            xfcc: XfccUse::Absent,
        }
    }
}

/// Why a presented mTLS identity is not accepted (401). Messages are safe for the
/// client: they name IDs the peer presented itself, never key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MtlsError {
    /// `source.principal` is not a SPIFFE ID.
    #[error("the client certificate's identity is not a valid SPIFFE ID: {0}")]
    NotSpiffe(String),
    /// The peer certificate breaks the X509-SVID rules.
    #[error("the client certificate is not an X509-SVID: {0}")]
    NotSvid(String),
    /// The certificate and `source.principal` name different IDs.
    #[error("the client certificate ({certificate}) does not match the connection's principal ({principal})")]
    Mismatch {
        certificate: String,
        principal: String,
    },
    /// A SPIFFE ID outside our trust domain(s).
    #[error("{0} is not in an accepted trust domain")]
    ForeignTrustDomain(String),
    /// A trusted hop sent an XFCC header that does not parse or name a caller.
    #[error("the x-forwarded-client-cert header from a trusted hop is unusable: {0}")]
    BadXfcc(String),
}

impl MtlsSettings {
    /// Resolves the mTLS identity of a request that arrived from `source` carrying
    /// the XFCC header `xfcc` (if any).
    pub fn resolve(
        &self,
        source: &Source<'_>,
        xfcc: Option<&str>,
    ) -> Result<MtlsIdentity, MtlsError> {
        let uses = |s: IdentitySource| self.identity_from.contains(&s);
        let from_principal = if uses(IdentitySource::SourcePrincipal)
            && !source.principal.is_empty()
        {
            Some(SpiffeId::new(source.principal).map_err(|e| MtlsError::NotSpiffe(e.to_string()))?)
        } else {
            None
        };
        let from_certificate =
            if uses(IdentitySource::PeerCertificate) && !source.certificate.is_empty() {
                Some(svid_of_url_encoded_pem(source.certificate)?)
            } else {
                None
            };
        let hop = match (from_certificate, from_principal) {
            (Some(certificate), Some(principal)) if certificate != principal => {
                return Err(MtlsError::Mismatch {
                    certificate: certificate.to_string(),
                    principal: principal.to_string(),
                })
            }
            (certificate, principal) => certificate.or(principal),
        };
        if let Some(hop) = &hop {
            self.accept(hop)?;
        }
        let Some(header) = xfcc else {
            return Ok(MtlsIdentity {
                caller: hop.clone(),
                hop,
                xfcc: XfccUse::Absent,
            });
        };
        let trusted_hop = hop
            .as_ref()
            .filter(|hop| uses(IdentitySource::Xfcc) && self.xfcc_trusted_from.contains(hop));
        if let Some(trusted) = trusted_hop {
            let elements = xfcc::parse(header).map_err(|e| MtlsError::BadXfcc(e.to_string()))?;
            // An Istio sidecar appends its own account of the direct peer last
            // (`By=<this workload>;URI=<the hop>`): that names the hop, already
            // known from the handshake; what the hop relayed comes before it.
            let relayed = match elements.split_last() {
                Some((last, before)) if names_only(last, trusted) => before,
                _ => elements.as_slice(),
            };
            if relayed.is_empty() {
                // The hop relayed no client certificate: it is the caller.
                return Ok(MtlsIdentity {
                    caller: hop.clone(),
                    hop,
                    xfcc: XfccUse::DescribesPeer,
                });
            }
            let caller = self.caller_from_xfcc(trusted, relayed)?;
            return Ok(MtlsIdentity {
                caller: Some(caller),
                hop,
                xfcc: XfccUse::Believed,
            });
        }
        let describes_peer = hop.as_ref().is_some_and(|hop| {
            matches!(xfcc::parse(header).as_deref(),
                Ok([element]) if element.uris.len() == 1 && element.uris[0] == hop.to_string())
        });
        Ok(MtlsIdentity {
            caller: hop.clone(),
            hop,
            xfcc: if describes_peer {
                XfccUse::DescribesPeer
            } else {
                XfccUse::Ignored
            },
        })
    }

    /// The caller a trusted hop names: the last element (the one that hop added),
    /// whose `By`, when present, must be the hop itself, and whose single URI SAN
    /// is the caller's SPIFFE ID.
    fn caller_from_xfcc(
        &self,
        hop: &SpiffeId,
        elements: &[XfccElement],
    ) -> Result<SpiffeId, MtlsError> {
        let Some(XfccElement { by, uris, .. }) = elements.last() else {
            return Err(MtlsError::BadXfcc("no element".into()));
        };
        if by.as_ref().is_some_and(|by| *by != hop.to_string()) {
            return Err(MtlsError::BadXfcc(
                "its last element was not added by the hop that sent it".into(),
            ));
        }
        let [uri] = uris.as_slice() else {
            return Err(MtlsError::BadXfcc(format!(
                "its last element has {} URI SANs; an X509-SVID has exactly one",
                uris.len()
            )));
        };
        let caller = SpiffeId::new(uri).map_err(|e| MtlsError::BadXfcc(e.to_string()))?;
        self.accept(&caller)?;
        Ok(caller)
    }

    fn accept(&self, id: &SpiffeId) -> Result<(), MtlsError> {
        if self.trust_domains.accepts(id) {
            Ok(())
        } else {
            Err(MtlsError::ForeignTrustDomain(id.to_string()))
        }
    }
}

/// Whether `element` is an account of `hop` itself: its one URI SAN is the hop.
fn names_only(element: &XfccElement, hop: &SpiffeId) -> bool {
    matches!(element.uris.as_slice(), [uri] if *uri == hop.to_string())
}

/// The SPIFFE ID of a leaf X509-SVID given as URL-encoded PEM (Envoy's
/// `source.certificate`): exactly one URI SAN, a valid SPIFFE ID, not a CA.
pub fn svid_of_url_encoded_pem(encoded: &str) -> Result<SpiffeId, MtlsError> {
    let pem = percent_encoding::percent_decode_str(encoded).collect::<Vec<u8>>();
    let certs = super::x509::parse_pem_certs(&pem).map_err(MtlsError::NotSvid)?;
    let leaf = certs
        .first()
        .ok_or_else(|| MtlsError::NotSvid("no certificate in it".into()))?;
    svid_of_der(leaf)
}

/// The SPIFFE ID of a leaf X509-SVID in DER (a TLS peer's end-entity
/// certificate): exactly one URI SAN, a valid SPIFFE ID, not a CA.
pub fn svid_of_der(leaf: &[u8]) -> Result<SpiffeId, MtlsError> {
    let facts = super::x509::LeafFacts::read(leaf).map_err(MtlsError::NotSvid)?;
    if facts.is_ca {
        return Err(MtlsError::NotSvid(
            "it is a CA certificate (cA=true); a workload SVID is a leaf".into(),
        ));
    }
    let [uri] = facts.uri_sans.as_slice() else {
        return Err(MtlsError::NotSvid(format!(
            "it has {} URI SANs; an X509-SVID has exactly one",
            facts.uri_sans.len()
        )));
    };
    SpiffeId::new(uri).map_err(|e| MtlsError::NotSvid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIDEOS: &str = "spiffe://example.org/ns/default/sa/videos";
    const GATEWAY: &str = "spiffe://example.org/ns/istio-system/sa/istio-ingressgateway";
    const CLIENT: &str = "spiffe://example.org/ns/partners/sa/acme";

    fn settings(trusted: &[&str]) -> MtlsSettings {
        MtlsSettings {
            identity_from: IdentitySource::ALL.to_vec(),
            xfcc_trusted_from: trusted.iter().map(|t| SpiffeId::new(t).unwrap()).collect(),
            trust_domains: TrustDomains {
                ours: TrustDomain::new("example.org").unwrap(),
                federated: vec![TrustDomain::new("partner.net").unwrap()],
            },
        }
    }

    fn from(principal: &str) -> Source<'_> {
        Source {
            principal,
            certificate: "",
            tls: !principal.is_empty(),
        }
    }

    fn id(s: &str) -> Option<SpiffeId> {
        Some(SpiffeId::new(s).unwrap())
    }

    /// Who the caller is, per hop and header: the trust decisions of docs/security.md.
    #[test]
    fn trust_decisions_per_hop() {
        let xfcc_client = format!("By={GATEWAY};URI={CLIENT}");
        let two_uris = format!("URI={CLIENT};URI={VIDEOS}");
        let by_other = format!("By={VIDEOS};URI={CLIENT}");
        let appended = format!("URI=spiffe://example.org/ns/x/sa/old,By={GATEWAY};URI={CLIENT}");
        let forged_videos = format!("URI={VIDEOS}");
        let local_account =
            format!("By=spiffe://example.org/ns/default/sa/channels;Hash=ab;URI={VIDEOS}");
        // What an Istio sidecar forwards for gateway traffic: the gateway's
        // element (its client), then the sidecar's own account of the gateway.
        let sidecar_account = format!(
            "By=spiffe://example.org/ns/default/sa/channels;Hash=ab;Subject=\"\";URI={GATEWAY}"
        );
        let istio_relayed = format!("By={GATEWAY};URI={CLIENT},{sidecar_account}");
        let istio_no_client = sidecar_account.clone();
        let istio_forged = format!("By={VIDEOS};URI={CLIENT},{sidecar_account}");
        type Want = Result<(Option<SpiffeId>, XfccUse), MtlsError>;
        let cases: Vec<(&str, MtlsSettings, Source, Option<&str>, Want)> = vec![
            ("plaintext, no header", settings(&[]), from(""), None, Ok((None, XfccUse::Absent))),
            ("mTLS peer", settings(&[]), from(VIDEOS), None, Ok((id(VIDEOS), XfccUse::Absent))),
            (
                "plaintext caller forging XFCC: ignored, not videos",
                settings(&[GATEWAY]),
                from(""),
                Some(&forged_videos),
                Ok((None, XfccUse::Ignored)),
            ),
            (
                "untrusted mTLS hop relaying another identity: ignored",
                settings(&[GATEWAY]),
                from("spiffe://example.org/ns/default/sa/comments"),
                Some(&forged_videos),
                Ok((id("spiffe://example.org/ns/default/sa/comments"), XfccUse::Ignored)),
            ),
            (
                "the local Envoy's account of the peer: kept, same caller",
                settings(&[]),
                from(VIDEOS),
                Some(&local_account),
                Ok((id(VIDEOS), XfccUse::DescribesPeer)),
            ),
            (
                "trusted gateway: the caller is its client",
                settings(&[GATEWAY]),
                from(GATEWAY),
                Some(&xfcc_client),
                Ok((id(CLIENT), XfccUse::Believed)),
            ),
            (
                "trusted gateway, last element is the gateway's",
                settings(&[GATEWAY]),
                from(GATEWAY),
                Some(&appended),
                Ok((id(CLIENT), XfccUse::Believed)),
            ),
            (
                "trusted gateway behind an Istio sidecar: its client, not the sidecar's note",
                settings(&[GATEWAY]),
                from(GATEWAY),
                Some(&istio_relayed),
                Ok((id(CLIENT), XfccUse::Believed)),
            ),
            (
                "trusted gateway relaying no client certificate: the gateway",
                settings(&[GATEWAY]),
                from(GATEWAY),
                Some(&istio_no_client),
                Ok((id(GATEWAY), XfccUse::DescribesPeer)),
            ),
            (
                "trusted gateway behind a sidecar, element not the gateway's",
                settings(&[GATEWAY]),
                from(GATEWAY),
                Some(&istio_forged),
                Err(MtlsError::BadXfcc("its last element was not added by the hop that sent it".into())),
            ),
            (
                "trusted gateway, but xfcc not in identity_from",
                MtlsSettings {
                    identity_from: vec![IdentitySource::SourcePrincipal],
                    ..settings(&[GATEWAY])
                },
                from(GATEWAY),
                Some(&xfcc_client),
                Ok((id(GATEWAY), XfccUse::Ignored)),
            ),
            (
                "trusted gateway, element added by someone else",
                settings(&[GATEWAY]),
                from(GATEWAY),
                Some(&by_other),
                Err(MtlsError::BadXfcc("its last element was not added by the hop that sent it".into())),
            ),
            (
                "trusted gateway, two URI SANs",
                settings(&[GATEWAY]),
                from(GATEWAY),
                Some(&two_uris),
                Err(MtlsError::BadXfcc("its last element has 2 URI SANs; an X509-SVID has exactly one".into())),
            ),
            (
                "trusted gateway, foreign client",
                settings(&[GATEWAY]),
                from(GATEWAY),
                Some("URI=spiffe://evil.org/ns/a/sa/b"),
                Err(MtlsError::ForeignTrustDomain("spiffe://evil.org/ns/a/sa/b".into())),
            ),
            (
                "trusted gateway, malformed header",
                settings(&[GATEWAY]),
                from(GATEWAY),
                Some("URI=\"x"),
                Err(MtlsError::BadXfcc("x-forwarded-client-cert: unterminated quoted value".into())),
            ),
            (
                "federated peer",
                settings(&[]),
                from("spiffe://partner.net/ns/a/sa/b"),
                None,
                Ok((id("spiffe://partner.net/ns/a/sa/b"), XfccUse::Absent)),
            ),
            (
                "foreign peer",
                settings(&[]),
                from("spiffe://evil.org/ns/a/sa/b"),
                None,
                Err(MtlsError::ForeignTrustDomain("spiffe://evil.org/ns/a/sa/b".into())),
            ),
            (
                "a principal that is not a SPIFFE ID",
                settings(&[]),
                from("videos.example.org"),
                None,
                Err(MtlsError::NotSpiffe(
                    "a SPIFFE ID starts with `spiffe://` (lower case), e.g. spiffe://example.org/ns/default/sa/web".into(),
                )),
            ),
            (
                "source_principal not configured: the principal is not read",
                MtlsSettings {
                    identity_from: vec![IdentitySource::Xfcc],
                    ..settings(&[])
                },
                from(VIDEOS),
                None,
                Ok((None, XfccUse::Absent)),
            ),
        ];
        for (name, settings, source, header, want) in cases {
            let got = settings
                .resolve(&source, header)
                .map(|identity| (identity.caller, identity.xfcc));
            assert_eq!(got, want, "{name}");
        }
    }

    fn url_encode(pem: &str) -> String {
        percent_encoding::utf8_percent_encode(pem, percent_encoding::NON_ALPHANUMERIC).to_string()
    }

    #[test]
    fn peer_certificates_must_be_x509_svids_that_match_the_principal() {
        use crate::ca::{LeafSpec, Validity};
        let dir = tempfile::tempdir().unwrap();
        let ca = crate::ca::CaDir::new(dir.path());
        let td = TrustDomain::new("example.org").unwrap();
        let now = std::time::SystemTime::now();
        let hour = std::time::Duration::from_secs(3600);
        ca.init(&td, Validity::starting_at(now, hour), false)
            .unwrap();
        let videos = td.service("default", "videos").unwrap();
        let files = ca
            .issue(
                &LeafSpec::new(videos.clone(), vec![]).unwrap(),
                Validity::starting_at(now, hour),
                &dir.path().join("videos"),
            )
            .unwrap();
        let leaf_pem = std::fs::read_to_string(&files.cert).unwrap();
        let encoded = url_encode(&leaf_pem);
        assert_eq!(svid_of_url_encoded_pem(&encoded), Ok(videos.clone()));

        fn with_cert<'a>(principal: &'a str, certificate: &'a str) -> Source<'a> {
            Source {
                principal,
                certificate,
                tls: true,
            }
        }
        let s = settings(&[]);
        assert_eq!(
            s.resolve(&with_cert(VIDEOS, &encoded), None)
                .unwrap()
                .caller,
            Some(videos.clone())
        );
        assert_eq!(
            s.resolve(&with_cert("", &encoded), None).unwrap().caller,
            Some(videos)
        );
        assert!(matches!(
            s.resolve(
                &with_cert("spiffe://example.org/ns/default/sa/comments", &encoded),
                None
            ),
            Err(MtlsError::Mismatch { .. })
        ));
        // The root CA is a CA, never a workload identity.
        let root = std::fs::read_to_string(ca.root_cert()).unwrap();
        assert_eq!(
            svid_of_url_encoded_pem(&url_encode(&root)),
            Err(MtlsError::NotSvid(
                "it is a CA certificate (cA=true); a workload SVID is a leaf".into()
            ))
        );
        assert!(matches!(
            svid_of_url_encoded_pem("not%20a%20certificate"),
            Err(MtlsError::NotSvid(_))
        ));
    }
}
