//! The X509-SVID reader of the request path: the PEM blocks of a certificate
//! chain and, of a leaf, only what the SVID rules need (its URI SANs and whether
//! it is a CA). `portcullis cert inspect` reads more, with these same helpers.

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The `CERTIFICATE` blocks of a PEM document, in order.
pub fn parse_pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))
}

/// What a check needs of a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafFacts {
    pub uri_sans: Vec<String>,
    /// basicConstraints `cA`.
    pub is_ca: bool,
}

impl LeafFacts {
    /// Reads a DER certificate; malformed input or extensions are an error.
    pub fn read(der: &[u8]) -> Result<LeafFacts, String> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let bad = |e: x509_parser::error::X509Error| format!("malformed extension: {e}");
        let mut uri_sans = Vec::new();
        if let Some(san) = cert.subject_alternative_name().map_err(bad)? {
            for name in &san.value.general_names {
                if let GeneralName::URI(uri) = name {
                    uri_sans.push((*uri).to_owned());
                }
            }
        }
        let is_ca = cert
            .basic_constraints()
            .map_err(bad)?
            .is_some_and(|bc| bc.value.ca);
        Ok(LeafFacts { uri_sans, is_ca })
    }
}
