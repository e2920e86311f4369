//! `cert inspect`: read a certificate back with an X.509 parser (never our own
//! parameters), summarize it, and check it as a leaf X509-SVID (SPIFFE X509-SVID
//! §4, §5; certs/README.md): exactly one URI SAN holding a valid SPIFFE ID of the expected
//! trust domain, not a CA, key usage digitalSignature (critical) without
//! keyCertSign/cRLSign, EKU serverAuth+clientAuth when present, inside its validity
//! window, and a chain that verifies to the trust bundle (rustls-webpki, the path
//! builder rustls itself uses). Pure: bytes and a clock in, a [`Report`] out.

use super::profile::{human_duration, Validity};
use crate::identity::{SpiffeId, TrustDomain};
use rustls::pki_types::{CertificateDer, UnixTime};
use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};
use x509_parser::public_key::PublicKey;

/// Everything `cert inspect` says about one certificate.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The SPIFFE ID, when the certificate has exactly one valid one.
    pub spiffe_id: Option<String>,
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    /// The subject DN (empty for the SVIDs this tool issues).
    pub subject: String,
    pub issuer: String,
    /// Hex, colon-separated.
    pub serial: String,
    /// RFC 3339, UTC.
    pub not_before: String,
    pub not_after: String,
    /// Seconds until `not_after` (negative once expired).
    pub seconds_left: i64,
    /// e.g. `ECDSA P-256`.
    pub key_type: String,
    pub is_ca: bool,
    /// Certificates offered as its chain (after the leaf in the file, plus any
    /// from a `chain.pem` beside it).
    pub chain_certificates: usize,
    /// Whether the chain verified to the bundle.
    pub chain_verified: bool,
    /// Every rule that fails, each saying what is wrong; empty when valid.
    pub problems: Vec<String>,
    pub valid: bool,
}

impl Report {
    /// The human summary and verdict, one fact a line.
    pub fn render(&self, file: &str, bundle: &str) -> String {
        let mut out = String::new();
        let none = || "(none)".to_owned();
        let left = if self.seconds_left >= 0 {
            format!(
                "{} left",
                human_duration(Duration::from_secs(self.seconds_left.unsigned_abs()))
            )
        } else {
            format!(
                "expired {} ago",
                human_duration(Duration::from_secs(self.seconds_left.unsigned_abs()))
            )
        };
        let lines = [
            ("file", file.to_owned()),
            ("SPIFFE ID", self.spiffe_id.clone().unwrap_or_else(none)),
            (
                "URI SANs",
                if self.uri_sans.is_empty() {
                    none()
                } else {
                    self.uri_sans.join(", ")
                },
            ),
            (
                "DNS SANs",
                if self.dns_sans.is_empty() {
                    none()
                } else {
                    self.dns_sans.join(", ")
                },
            ),
            (
                "subject",
                if self.subject.is_empty() {
                    "(empty)".to_owned()
                } else {
                    self.subject.clone()
                },
            ),
            ("issuer", self.issuer.clone()),
            ("serial", self.serial.clone()),
            (
                "validity",
                format!("{} .. {} ({left})", self.not_before, self.not_after),
            ),
            ("key", self.key_type.clone()),
            ("CA", if self.is_ca { "yes" } else { "no" }.to_owned()),
            (
                "chain",
                format!(
                    "{} chain certificate(s); {} bundle {bundle}",
                    self.chain_certificates,
                    if self.chain_verified {
                        "verifies to"
                    } else {
                        "does NOT verify to"
                    }
                ),
            ),
        ];
        for (name, value) in lines {
            out.push_str(&format!("{name:<10} {value}\n"));
        }
        if self.valid {
            out.push_str("verdict    OK: a valid X509-SVID, chain verified to the bundle\n");
        } else {
            out.push_str(&format!(
                "verdict    INVALID ({} problem(s)):\n",
                self.problems.len()
            ));
            for problem in &self.problems {
                out.push_str(&format!("  - {problem}\n"));
            }
        }
        out
    }
}

/// Inspects the first certificate of `cert_pem` as a leaf SVID; the following
/// ones are its chain, and `more_chain` (e.g. the `chain.pem` beside a lone
/// `cert.pem`) may add intermediates. `bundle_pem` holds the trusted roots;
/// `trust_domain`, when given, is the expected one (else the bundle's first
/// root's `spiffe://TD`).
pub fn inspect(
    cert_pem: &[u8],
    more_chain: Option<&[u8]>,
    bundle_pem: &[u8],
    trust_domain: Option<&TrustDomain>,
    now: SystemTime,
) -> Result<Report, String> {
    let certs = parse_pem_certs(cert_pem)?;
    let leaf = certs
        .first()
        .ok_or("no CERTIFICATE block in the file: is it a PEM certificate?")?;
    let roots = parse_pem_certs(bundle_pem).map_err(|e| format!("bundle: {e}"))?;
    if roots.is_empty() {
        return Err("the bundle holds no CERTIFICATE block".into());
    }
    let facts = CertificateFacts::read(leaf)?;
    let mut problems = Vec::new();

    let expected_td = match trust_domain {
        Some(td) => Some(td.clone()),
        None => uri_sans(&roots[0])
            .ok()
            .and_then(|uris| uris.first().and_then(|u| TrustDomain::new(u).ok())),
    };
    let spiffe_id = match facts.uri_sans.as_slice() {
        [] => {
            problems.push(
                "no URI SAN: an X509-SVID carries exactly one SPIFFE ID (spiffe://TD/...)".into(),
            );
            None
        }
        [uri] => match SpiffeId::new(uri) {
            Ok(id) => Some(id),
            Err(e) => {
                problems.push(format!("URI SAN {uri} is not a valid SPIFFE ID: {e}"));
                None
            }
        },
        many => {
            problems.push(format!(
                "{} URI SANs ({}): an X509-SVID carries exactly one SPIFFE ID",
                many.len(),
                many.join(", ")
            ));
            None
        }
    };
    if let (Some(id), Some(td)) = (&spiffe_id, &expected_td) {
        if !id.is_member_of(td) {
            problems.push(format!(
                "wrong trust domain: {id} is in {}, but the expected trust domain is {td}",
                id.trust_domain()
            ));
        }
    }
    if facts.is_ca {
        problems
            .push("basicConstraints cA=true: a leaf X509-SVID must not be a CA certificate".into());
    }
    match facts.key_usage {
        None => problems.push(
            "no key usage extension: a leaf X509-SVID needs digitalSignature (critical)".into(),
        ),
        Some(ku) => {
            if !ku.critical {
                problems.push("the key usage extension is not marked critical".into());
            }
            if !ku.digital_signature {
                problems.push("key usage lacks digitalSignature".into());
            }
            if ku.key_cert_sign || ku.crl_sign {
                problems.push(
                    "key usage has keyCertSign or cRLSign, which a leaf X509-SVID must not have"
                        .into(),
                );
            }
        }
    }
    if let Some((server, client)) = facts.eku {
        if !(server && client) {
            problems.push(
                "extended key usage lacks serverAuth or clientAuth (an X509-SVID needs both)"
                    .into(),
            );
        }
    }
    let expired = now > facts.validity.not_after;
    if expired {
        problems.push(format!(
            "expired at {}: renew it (`portcullis cert renew --out DIR`)",
            rfc3339(facts.validity.not_after)
        ));
    } else if now < facts.validity.not_before {
        problems.push(format!(
            "not valid before {} (is this machine's clock right?)",
            rfc3339(facts.validity.not_before)
        ));
    }
    let mut intermediates = certs[1..].to_vec();
    if let Some(pem) = more_chain {
        let more = parse_pem_certs(pem).map_err(|e| format!("chain: {e}"))?;
        intermediates.extend(more.into_iter().filter(|cert| cert != leaf));
    }
    let chain = verify_chain(leaf, &intermediates, &roots, now);
    if let Err(why) = &chain {
        // An expired or early certificate was reported above, with its date.
        let time_only = matches!(
            why,
            webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. }
        ) && (expired || now < facts.validity.not_before);
        if !time_only {
            problems.push(chain_problem(why));
        }
    }
    let seconds_left = match facts.validity.not_after.duration_since(now) {
        Ok(left) => i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
        Err(past) => -i64::try_from(past.duration().as_secs()).unwrap_or(i64::MAX),
    };
    Ok(Report {
        spiffe_id: spiffe_id.map(|id| id.to_string()),
        uri_sans: facts.uri_sans,
        dns_sans: facts.dns_sans,
        subject: facts.subject,
        issuer: facts.issuer,
        serial: facts.serial,
        not_before: rfc3339(facts.validity.not_before),
        not_after: rfc3339(facts.validity.not_after),
        seconds_left,
        key_type: facts.key_type,
        is_ca: facts.is_ca,
        chain_certificates: intermediates.len(),
        chain_verified: chain.is_ok(),
        valid: problems.is_empty(),
        problems,
    })
}

fn verify_chain(
    leaf: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    roots: &[CertificateDer<'_>],
    now: SystemTime,
) -> Result<(), webpki::Error> {
    let anchors = roots
        .iter()
        .map(|root| webpki::anchor_from_trusted_cert(root).map(|a| a.to_owned()))
        .collect::<Result<Vec<_>, _>>()?;
    let end_entity = webpki::EndEntityCert::try_from(leaf)?;
    let algorithms = rustls::crypto::aws_lc_rs::default_provider()
        .signature_verification_algorithms
        .all;
    let at = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
    end_entity
        .verify_for_usage(
            algorithms,
            &anchors,
            intermediates,
            at,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map(|_| ())
}

fn chain_problem(error: &webpki::Error) -> String {
    match error {
        webpki::Error::UnknownIssuer => "the chain does not verify to the bundle: neither the bundle nor the file's chain holds its issuer (issued by another CA? pass the right --bundle)".into(),
        webpki::Error::InvalidSignatureForPublicKey => {
            "the chain does not verify to the bundle: a signature does not match its issuer's key".into()
        }
        webpki::Error::CaUsedAsEndEntity => {
            "the chain check refuses a CA certificate as the leaf".into()
        }
        webpki::Error::CertExpired { .. } => "a certificate of the chain has expired".into(),
        webpki::Error::CertNotValidYet { .. } => "a certificate of the chain is not valid yet".into(),
        other => format!("the chain does not verify to the bundle: {other:?}"),
    }
}

pub use crate::identity::x509::parse_pem_certs;

/// The URI SANs of a DER certificate.
pub fn uri_sans(der: &[u8]) -> Result<Vec<String>, String> {
    CertificateFacts::read(der).map(|f| f.uri_sans)
}

/// What the checks need from one certificate, as the X.509 parser reads it.
#[derive(Debug, Clone)]
pub struct CertificateFacts {
    pub uri_sans: Vec<String>,
    pub dns_sans: Vec<String>,
    /// Whether the SAN extension is critical.
    pub san_critical: bool,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub validity: Validity,
    pub is_ca: bool,
    /// `pathLenConstraint` of basicConstraints.
    pub path_len: Option<u32>,
    pub key_usage: Option<KeyUsageFacts>,
    /// (serverAuth, clientAuth) of the EKU extension, when present.
    pub eku: Option<(bool, bool)>,
    pub key_type: String,
}

/// The key usage bits the SVID rules look at.
#[derive(Debug, Clone, Copy)]
pub struct KeyUsageFacts {
    pub critical: bool,
    pub digital_signature: bool,
    pub key_cert_sign: bool,
    pub crl_sign: bool,
}

impl CertificateFacts {
    pub fn read(der: &[u8]) -> Result<CertificateFacts, String> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let bad = |e: x509_parser::error::X509Error| format!("malformed extension: {e}");
        let (mut uri_sans, mut dns_sans, mut san_critical) = (Vec::new(), Vec::new(), false);
        if let Some(san) = cert.subject_alternative_name().map_err(bad)? {
            san_critical = san.critical;
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(uri) => uri_sans.push((*uri).to_owned()),
                    GeneralName::DNSName(dns) => dns_sans.push((*dns).to_owned()),
                    _ => {}
                }
            }
        }
        let constraints = cert.basic_constraints().map_err(bad)?;
        let key_usage = cert.key_usage().map_err(bad)?.map(|ku| KeyUsageFacts {
            critical: ku.critical,
            digital_signature: ku.value.digital_signature(),
            key_cert_sign: ku.value.key_cert_sign(),
            crl_sign: ku.value.crl_sign(),
        });
        let eku = cert
            .extended_key_usage()
            .map_err(bad)?
            .map(|eku| (eku.value.server_auth, eku.value.client_auth));
        let key_type = match cert.public_key().parsed() {
            Ok(PublicKey::EC(point)) => format!("ECDSA P-{}", point.key_size()),
            Ok(PublicKey::RSA(rsa)) => format!("RSA {}", rsa.key_size()),
            _ => format!("other ({})", cert.public_key().algorithm.algorithm),
        };
        Ok(CertificateFacts {
            uri_sans,
            dns_sans,
            san_critical,
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string(),
            validity: Validity {
                not_before: to_system_time(cert.validity().not_before.timestamp()),
                not_after: to_system_time(cert.validity().not_after.timestamp()),
            },
            is_ca: constraints.as_ref().is_some_and(|bc| bc.value.ca),
            path_len: constraints.and_then(|bc| bc.value.path_len_constraint),
            key_usage,
            eku,
            key_type,
        })
    }
}

fn to_system_time(unix: i64) -> SystemTime {
    match u64::try_from(unix) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs()),
    }
}

/// `2026-01-31T12:00:00Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
