//! The certificate profiles of certs/README.md and the SPIFFE X509-SVID spec: a root CA,
//! an intermediate (`pathlen:0`), and leaf SVIDs. All ECDSA P-256, random 159-bit
//! serials, validity windows given explicitly (so tests and `cert renew` are
//! deterministic). No file I/O here.

use super::IssueError;
use crate::identity::{SpiffeId, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};
use time::OffsetDateTime;

/// How far `notBefore` lies in the past, so peers whose clocks lag a little accept
/// a certificate the moment it is issued.
pub const BACKDATE: Duration = Duration::from_secs(60);
/// Root CA lifetime (certs/README.md).
pub const ROOT_TTL: Duration = Duration::from_secs(10 * YEAR);
/// Default intermediate lifetime (`ca intermediate --ttl`).
pub const INTERMEDIATE_TTL: Duration = Duration::from_secs(2 * YEAR);
/// Default leaf lifetime (`cert issue --ttl`).
pub const LEAF_TTL: Duration = Duration::from_secs(24 * 3600);

const YEAR: u64 = 365 * 86400;

/// A certificate's validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Validity {
    /// `now - 1 minute` to `now + ttl`.
    pub fn starting_at(now: SystemTime, ttl: Duration) -> Validity {
        Validity {
            not_before: now.checked_sub(BACKDATE).unwrap_or(now),
            not_after: now + ttl,
        }
    }

    /// The lifetime as issued (`not_after - not_before`).
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }

    fn apply(&self, params: &mut CertificateParams) -> Result<(), IssueError> {
        if self.not_after <= self.not_before {
            return Err(IssueError::Validity);
        }
        params.not_before = OffsetDateTime::from(self.not_before);
        params.not_after = OffsetDateTime::from(self.not_after);
        Ok(())
    }
}

/// A lifetime on the command line: the config's durations (`15m`, `24h`, `30d`)
/// and years (`2y` = 730 days).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(pub Duration);

impl FromStr for Ttl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parsed = match s.strip_suffix('y') {
            Some(years) => years
                .parse::<u64>()
                .ok()
                .and_then(|y| y.checked_mul(YEAR))
                .map(Duration::from_secs),
            None => s
                .parse::<crate::duration::ConfigDuration>()
                .ok()
                .map(|d| d.0),
        };
        match parsed {
            Some(d) if !d.is_zero() => Ok(Ttl(d)),
            _ => Err(format!(
                "invalid lifetime {s:?}: write a number and a unit, e.g. 15m, 24h, 30d, 2y"
            )),
        }
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&human_duration(self.0))
    }
}

/// `1d 2h`, `15m`, `3y 4d`: the two largest units, for summaries.
pub fn human_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    let mut parts = Vec::new();
    for (unit, size) in [("y", YEAR), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= size {
            parts.push(format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    match parts.len() {
        0 => "0s".into(),
        _ => parts.into_iter().take(2).collect::<Vec<_>>().join(" "),
    }
}

/// A certificate and its private key, both PEM (the key PKCS#8).
#[derive(Clone)]
pub struct KeyedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for KeyedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("KeyedCert")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl KeyedCert {
    /// An rcgen issuer signing with this (CA) certificate's key.
    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, IssueError> {
        let key = KeyPair::from_pem(&self.key_pem)?;
        Ok(Issuer::from_ca_cert_pem(&self.cert_pem, key)?)
    }
}

/// What a leaf SVID names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafSpec {
    pub id: SpiffeId,
    /// Extra DNS SANs (for peers that verify host names, e.g. Envoy's upstream
    /// `sni`/`match_typed_subject_alt_names` on DNS).
    pub dns: Vec<String>,
}

impl LeafSpec {
    pub fn new(id: SpiffeId, dns: Vec<String>) -> Result<LeafSpec, IssueError> {
        if let Some(bad) = dns.iter().find(|name| !is_dns_name(name)) {
            return Err(IssueError::DnsName(bad.clone()));
        }
        Ok(LeafSpec { id, dns })
    }
}

/// A self-signed root CA for `trust_domain`: `cA=true`, key usage
/// keyCertSign+cRLSign (critical), URI SAN `spiffe://TD`.
pub fn root(trust_domain: &TrustDomain, validity: Validity) -> Result<KeyedCert, IssueError> {
    let key = new_key()?;
    let params = ca_params(
        trust_domain,
        "root CA",
        BasicConstraints::Unconstrained,
        validity,
    )?;
    let cert = params.self_signed(&key)?;
    Ok(KeyedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// An intermediate CA (`pathlen:0`: it signs leaves only) signed by `root`.
pub fn intermediate(
    trust_domain: &TrustDomain,
    root: &KeyedCert,
    validity: Validity,
) -> Result<KeyedCert, IssueError> {
    let key = new_key()?;
    let mut params = ca_params(
        trust_domain,
        "intermediate CA",
        BasicConstraints::Constrained(0),
        validity,
    )?;
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &root.issuer()?)?;
    Ok(KeyedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A leaf X509-SVID (X509-SVID §4, certs/README.md): empty subject, so the SAN extension
/// is critical (RFC 5280 §4.2.1.6); exactly one URI SAN plus any DNS SANs;
/// `cA=false`; key usage digitalSignature only (critical); EKU serverAuth and
/// clientAuth, so the same certificate serves both ends of mTLS.
pub fn leaf(
    spec: &LeafSpec,
    issuer: &KeyedCert,
    validity: Validity,
) -> Result<KeyedCert, IssueError> {
    let key = new_key()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.serial_number = Some(random_serial());
    validity.apply(&mut params)?;
    params.subject_alt_names = std::iter::once(SanType::URI(spec.id.to_string().try_into()?))
        .chain(
            spec.dns
                .iter()
                .map(|name| Ok(SanType::DnsName(name.clone().try_into()?)))
                .collect::<Result<Vec<_>, rcgen::Error>>()?,
        )
        .collect();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer.issuer()?)?;
    Ok(KeyedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn ca_params(
    trust_domain: &TrustDomain,
    role: &str,
    constraints: BasicConstraints,
    validity: Validity,
) -> Result<CertificateParams, IssueError> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "portcullis");
    name.push(
        DnType::CommonName,
        format!("portcullis {role} {trust_domain}"),
    );
    params.distinguished_name = name;
    params.serial_number = Some(random_serial());
    validity.apply(&mut params)?;
    // X509-SVID §3: a signing certificate MAY carry the trust domain's own ID.
    params.subject_alt_names = vec![SanType::URI(trust_domain.id().to_string().try_into()?)];
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

fn new_key() -> Result<KeyPair, IssueError> {
    Ok(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?)
}

/// A random positive serial of 159 bits (RFC 5280 allows 20 octets; the top bit
/// clear keeps the DER INTEGER positive without a padding byte).
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 20] = rand::random();
    bytes[0] &= 0x7f;
    if bytes[0] == 0 {
        bytes[0] = 0x40;
    }
    SerialNumber::from_slice(&bytes)
}

fn is_dns_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests;
