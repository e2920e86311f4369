//! Each profile read back field by field with `x509-parser` (not from our own
//! params), with fixed validity windows.

use super::*;
use std::time::UNIX_EPOCH;
use x509_parser::prelude::{FromDer as _, GeneralName, ParsedExtension, X509Certificate};

/// 2030-01-01T00:00:00Z.
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_893_456_000)
}

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn der(cert: &KeyedCert) -> Vec<u8> {
    crate::ca::inspect::parse_pem_certs(cert.cert_pem.as_bytes()).unwrap()[0].to_vec()
}

/// Every extension as (OID text, critical).
fn extensions(cert: &X509Certificate<'_>) -> Vec<(String, bool)> {
    cert.extensions()
        .iter()
        .map(|e| (e.oid.to_id_string(), e.critical))
        .collect()
}

fn serial_bits(cert: &X509Certificate<'_>) -> usize {
    let raw = cert.raw_serial();
    let raw = &raw[raw.iter().take_while(|b| **b == 0).count()..];
    raw.len() * 8 - raw[0].leading_zeros() as usize
}

const SAN: &str = "2.5.29.17";
const KU: &str = "2.5.29.15";
const EKU: &str = "2.5.29.37";
const BC: &str = "2.5.29.19";

#[test]
fn root_ca() {
    let validity = Validity::starting_at(t0(), ROOT_TTL);
    let root = root(&td(), validity).unwrap();
    let der = der(&root);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(cert.version().0, 2, "X.509 v3");
    assert_eq!(cert.subject(), cert.issuer(), "self-signed");
    assert_eq!(
        cert.subject().to_string(),
        "O=portcullis, CN=portcullis root CA example.org"
    );
    assert_eq!(cert.validity().not_before.timestamp(), 1_893_456_000 - 60);
    assert_eq!(
        cert.validity().not_after.timestamp(),
        1_893_456_000 + 10 * 365 * 86400
    );
    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && bc.value.ca);
    let ku = cert.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert!(ku.value.key_cert_sign() && ku.value.crl_sign());
    assert!(!ku.value.digital_signature());
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::URI("spiffe://example.org")]
    );
    assert!(cert.extended_key_usage().unwrap().is_none());
    assert_eq!(
        cert.signature_algorithm.algorithm.to_id_string(),
        "1.2.840.10045.4.3.2",
        "ecdsa-with-SHA256"
    );
    assert_eq!(
        cert.public_key().algorithm.algorithm.to_id_string(),
        "1.2.840.10045.2.1",
        "id-ecPublicKey"
    );
    let curve = cert
        .public_key()
        .algorithm
        .parameters
        .as_ref()
        .unwrap()
        .as_oid()
        .unwrap();
    assert_eq!(curve.to_id_string(), "1.2.840.10045.3.1.7", "P-256");
    assert!(serial_bits(&cert) <= 159 && serial_bits(&cert) > 150);
    assert!(
        cert.verify_signature(None).is_ok(),
        "self-signature verifies"
    );
    assert!(
        root.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
        "PKCS#8"
    );
}

#[test]
fn intermediate_ca() {
    let root = root(&td(), Validity::starting_at(t0(), ROOT_TTL)).unwrap();
    let validity = Validity::starting_at(t0(), INTERMEDIATE_TTL);
    let inter = intermediate(&td(), &root, validity).unwrap();
    let root_der = der(&root);
    let inter_der = der(&inter);
    let (_, root_cert) = X509Certificate::from_der(&root_der).unwrap();
    let (_, cert) = X509Certificate::from_der(&inter_der).unwrap();
    assert_eq!(cert.issuer(), root_cert.subject());
    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && bc.value.ca);
    assert_eq!(bc.value.path_len_constraint, Some(0));
    let ku = cert.key_usage().unwrap().unwrap();
    assert!(ku.critical && ku.value.key_cert_sign() && ku.value.crl_sign());
    assert_eq!(
        cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp(),
        2 * 365 * 86400 + 60
    );
    // AKI names the root's SKI.
    let ski = |c: &X509Certificate<'_>| {
        c.extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            })
    };
    let aki = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        });
    assert_eq!(aki, ski(&root_cert));
    assert!(cert.verify_signature(Some(root_cert.public_key())).is_ok());
}

#[test]
fn leaf_svid() {
    let root = root(&td(), Validity::starting_at(t0(), ROOT_TTL)).unwrap();
    let inter = intermediate(&td(), &root, Validity::starting_at(t0(), INTERMEDIATE_TTL)).unwrap();
    let id = td().service("default", "web").unwrap();
    let spec = LeafSpec::new(id, vec!["web.default.svc".into(), "localhost".into()]).unwrap();
    let leaf = leaf(&spec, &inter, Validity::starting_at(t0(), LEAF_TTL)).unwrap();
    let inter_der = der(&inter);
    let leaf_der = der(&leaf);
    let (_, issuer) = X509Certificate::from_der(&inter_der).unwrap();
    let (_, cert) = X509Certificate::from_der(&leaf_der).unwrap();

    assert_eq!(cert.subject().iter().count(), 0, "empty subject");
    assert_eq!(cert.issuer(), issuer.subject());
    let san = cert.subject_alternative_name().unwrap().unwrap();
    assert!(san.critical, "SAN critical with an empty subject");
    assert_eq!(
        san.value.general_names,
        vec![
            GeneralName::URI("spiffe://example.org/ns/default/sa/web"),
            GeneralName::DNSName("web.default.svc"),
            GeneralName::DNSName("localhost"),
        ]
    );
    let bc = cert.basic_constraints().unwrap().unwrap();
    assert!(!bc.value.ca, "cA=false");
    let ku = cert.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert_eq!(ku.value.flags, 1, "digitalSignature only");
    let eku = cert.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.server_auth && eku.value.client_auth);
    assert!(!eku.value.any && eku.value.other.is_empty());
    assert_eq!(cert.validity().not_before.timestamp(), 1_893_456_000 - 60);
    assert_eq!(cert.validity().not_after.timestamp(), 1_893_456_000 + 86400);
    assert!(serial_bits(&cert) <= 159 && serial_bits(&cert) > 150);
    assert!(cert.verify_signature(Some(issuer.public_key())).is_ok());
    // Nothing unexpected, nothing critical but SAN, KU, BC.
    for (oid, critical) in extensions(&cert) {
        assert!(
            !critical || [SAN, KU, BC].contains(&oid.as_str()),
            "unexpected critical extension {oid}"
        );
        assert!(
            [SAN, KU, EKU, BC, "2.5.29.14", "2.5.29.35"].contains(&oid.as_str()),
            "unexpected extension {oid}"
        );
    }
}

#[test]
fn serials_differ() {
    let root = root(&td(), Validity::starting_at(t0(), ROOT_TTL)).unwrap();
    let spec = LeafSpec::new(td().service("default", "web").unwrap(), vec![]).unwrap();
    let a = der(&leaf(&spec, &root, Validity::starting_at(t0(), LEAF_TTL)).unwrap());
    let b = der(&leaf(&spec, &root, Validity::starting_at(t0(), LEAF_TTL)).unwrap());
    let (_, a) = X509Certificate::from_der(&a).unwrap();
    let (_, b) = X509Certificate::from_der(&b).unwrap();
    assert_ne!(a.raw_serial(), b.raw_serial());
}

#[test]
fn empty_windows_and_bad_dns_names_are_refused() {
    let window = Validity {
        not_before: t0(),
        not_after: t0(),
    };
    assert!(matches!(root(&td(), window), Err(IssueError::Validity)));
    let id = td().service("default", "web").unwrap();
    for bad in ["", "-a.example", "a..b", "a b", "*", "a.*.b"] {
        assert!(
            matches!(
                LeafSpec::new(id.clone(), vec![bad.into()]),
                Err(IssueError::DnsName(_))
            ),
            "{bad:?}"
        );
    }
    assert!(LeafSpec::new(id, vec!["*.example.org".into(), "localhost".into()]).is_ok());
}

#[test]
fn lifetimes_parse() {
    for (text, secs) in [
        ("24h", 86400),
        ("2y", 2 * 365 * 86400),
        ("15m", 900),
        ("1d12h", 129600),
    ] {
        assert_eq!(
            text.parse::<Ttl>().unwrap().0,
            Duration::from_secs(secs),
            "{text}"
        );
    }
    for bad in ["", "0s", "y", "2w", "-1h"] {
        assert!(bad.parse::<Ttl>().is_err(), "{bad:?}");
    }
    assert_eq!(human_duration(Duration::from_secs(90061)), "1d 1h");
}
