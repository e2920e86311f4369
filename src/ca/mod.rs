//! The bundled certificate and token tool (docs/configuration.md, docs/east-west.md, certs/README.md): a SPIFFE CA for the
//! mesh, X509-SVIDs for its services, and the ES256 key that signs service tokens.
//!
//! - [`profile`]: what each certificate is (root, intermediate, leaf), built with
//!   rcgen from explicit validity windows — pure apart from key generation.
//! - [`store`]: the `certs/` layout on disk, atomic writes, renewal.
//! - [`inspect`]: reads any certificate back with `x509-parser` and checks the
//!   SPIFFE X509-SVID rules and the chain; says precisely what is wrong.
//! - [`token`]: the token signing key, its JWKS, and JWT-SVID-shaped tokens.
//!
//! This room touches the file system only through `store` and `token`; it never
//! logs key material. The command line around it is `src/cli/ca.rs`.

pub mod inspect;
pub mod profile;
pub mod store;
pub mod token;

pub use profile::{KeyedCert, LeafSpec, Ttl, Validity};
pub use store::{CaDir, RenewOutcome, RenewThreshold};

use crate::identity::SpiffeIdError;
use std::path::PathBuf;

/// Why the tool could not issue, load, renew or sign. Each message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// A file could not be read or written.
    #[error("{path}: {source} (check that the path exists and is readable/writable)")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `ca init` over an existing CA.
    #[error("a CA already exists in {dir}: pass --force to replace it (certificates it issued will no longer verify against the new bundle)")]
    CaExists { dir: PathBuf },
    /// No root CA where one is needed.
    #[error("no CA in {dir}: run `portcullis ca init --dir {dir}` first")]
    NoCa { dir: PathBuf },
    /// A PEM file that does not hold what it should.
    #[error("{path}: not a usable {what}: {reason}")]
    BadPem {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    /// An invalid SPIFFE ID or trust domain.
    #[error("invalid SPIFFE ID or trust domain: {0}")]
    SpiffeId(#[from] SpiffeIdError),
    /// A SPIFFE ID outside the CA's trust domain.
    #[error("{id} is not in this CA's trust domain {trust_domain}: use spiffe://{trust_domain}/... or a CA of that trust domain")]
    ForeignTrustDomain { id: String, trust_domain: String },
    /// A DNS SAN that is not a host name.
    #[error("{0:?} is not a DNS name: use letters, digits and '-' in dot-separated labels (a leading '*.' is allowed)")]
    DnsName(String),
    /// An empty or inverted validity window.
    #[error("the validity window is empty: not_after must be later than not_before (check --ttl)")]
    Validity,
    /// The certificate being renewed is not one this tool can re-issue.
    #[error("cannot renew {path}: {reason}")]
    NotRenewable { path: PathBuf, reason: String },
    /// A service token request without an audience.
    #[error("a service token needs at least one audience (--audience)")]
    NoAudience,
    /// rcgen refused the parameters or the key.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// Signing a token failed.
    #[error("signing the token failed: {0}")]
    Sign(String),
}

impl IssueError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> IssueError {
        let path = path.into();
        move |source| IssueError::Io { path, source }
    }
}
