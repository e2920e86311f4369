//! The `certs/` directory (README.md, certs/README.md) and the files the tool writes there:
//!
//! ```text
//! certs/
//!   bundle.pem                  trust bundle (the root): `client_ca`, Envoy's trusted_ca
//!   ca/root-cert.pem            root CA certificate
//!   ca/root-key.pem             root CA key (0600) — keep offline once an intermediate exists
//!   ca/intermediate-cert.pem    intermediate CA (signs leaves when present)
//!   ca/intermediate-key.pem     its key (0600)
//!   tokens/signing-key.pem      the ES256 service-token key (0600)
//!   tokens/jwks.json            its public JWKS (`jwks_file:`)
//!   NAME/cert.pem chain.pem key.pem bundle.pem   one service's SVID
//! ```
//!
//! Every file is written to a temporary name in its directory and renamed over the
//! old one, so a reader (Envoy's SDS file watcher, portcullis' own TLS reloader)
//! never sees a half-written file.

use super::profile::{self, KeyedCert, LeafSpec, Validity};
use super::IssueError;
use crate::identity::{SpiffeId, TrustDomain};
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

/// File mode of private keys.
pub const KEY_MODE: u32 = 0o600;
/// File mode of certificates and public documents.
pub const PUBLIC_MODE: u32 = 0o644;

/// The CA side of a `certs/` directory.
#[derive(Debug, Clone)]
pub struct CaDir {
    dir: PathBuf,
}

impl CaDir {
    pub fn new(dir: impl Into<PathBuf>) -> CaDir {
        CaDir { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn root_cert(&self) -> PathBuf {
        self.dir.join("ca/root-cert.pem")
    }
    pub fn root_key(&self) -> PathBuf {
        self.dir.join("ca/root-key.pem")
    }
    pub fn intermediate_cert(&self) -> PathBuf {
        self.dir.join("ca/intermediate-cert.pem")
    }
    pub fn intermediate_key(&self) -> PathBuf {
        self.dir.join("ca/intermediate-key.pem")
    }
    pub fn bundle(&self) -> PathBuf {
        self.dir.join("bundle.pem")
    }
    pub fn tokens_dir(&self) -> PathBuf {
        self.dir.join("tokens")
    }

    /// Creates a root CA for `trust_domain`, its bundle, and removes any old
    /// intermediate (it would chain to the old root). Refuses to replace an
    /// existing CA unless `force`.
    pub fn init(
        &self,
        trust_domain: &TrustDomain,
        validity: Validity,
        force: bool,
    ) -> Result<KeyedCert, IssueError> {
        if !force && (self.root_cert().exists() || self.root_key().exists()) {
            return Err(IssueError::CaExists {
                dir: self.dir.clone(),
            });
        }
        let root = profile::root(trust_domain, validity)?;
        write_atomic(&self.root_key(), root.key_pem.as_bytes(), KEY_MODE)?;
        write_atomic(&self.root_cert(), root.cert_pem.as_bytes(), PUBLIC_MODE)?;
        write_atomic(&self.bundle(), root.cert_pem.as_bytes(), PUBLIC_MODE)?;
        for stale in [self.intermediate_cert(), self.intermediate_key()] {
            match fs::remove_file(&stale) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(IssueError::io(stale)(e)),
            }
        }
        Ok(root)
    }

    /// Creates (or replaces) the intermediate CA, signed by the root.
    pub fn intermediate(&self, validity: Validity) -> Result<KeyedCert, IssueError> {
        let root = self.root()?;
        let trust_domain = self.trust_domain()?;
        let intermediate = profile::intermediate(&trust_domain, &root, validity)?;
        write_atomic(
            &self.intermediate_key(),
            intermediate.key_pem.as_bytes(),
            KEY_MODE,
        )?;
        write_atomic(
            &self.intermediate_cert(),
            intermediate.cert_pem.as_bytes(),
            PUBLIC_MODE,
        )?;
        Ok(intermediate)
    }

    /// The root CA, certificate and key.
    pub fn root(&self) -> Result<KeyedCert, IssueError> {
        if !self.root_cert().exists() {
            return Err(IssueError::NoCa {
                dir: self.dir.clone(),
            });
        }
        Ok(KeyedCert {
            cert_pem: read_text(&self.root_cert())?,
            key_pem: read_text(&self.root_key())?,
        })
    }

    /// The intermediate CA, when there is one.
    pub fn intermediate_ca(&self) -> Result<Option<KeyedCert>, IssueError> {
        if !self.intermediate_cert().exists() {
            return Ok(None);
        }
        Ok(Some(KeyedCert {
            cert_pem: read_text(&self.intermediate_cert())?,
            key_pem: read_text(&self.intermediate_key())?,
        }))
    }

    /// The CA's trust domain: the `spiffe://TD` URI SAN of the root certificate.
    pub fn trust_domain(&self) -> Result<TrustDomain, IssueError> {
        let path = self.root_cert();
        if !path.exists() {
            return Err(IssueError::NoCa {
                dir: self.dir.clone(),
            });
        }
        let pem = fs::read(&path).map_err(IssueError::io(&path))?;
        let bad = |reason: String| IssueError::BadPem {
            path: path.clone(),
            what: "root CA certificate",
            reason,
        };
        let certs = super::inspect::parse_pem_certs(&pem).map_err(bad)?;
        let der = certs
            .first()
            .ok_or_else(|| bad("no CERTIFICATE block".into()))?;
        let uris = super::inspect::uri_sans(der).map_err(bad)?;
        let uri = uris
            .first()
            .ok_or_else(|| bad("no spiffe://TRUST-DOMAIN URI SAN".into()))?;
        Ok(TrustDomain::new(uri)?)
    }

    /// Issues a leaf SVID for `spec` into `out` (`cert.pem`, `chain.pem`, `key.pem`,
    /// `bundle.pem`), signed by the intermediate when there is one, else the root.
    pub fn issue(
        &self,
        spec: &LeafSpec,
        validity: Validity,
        out: &Path,
    ) -> Result<SvidFiles, IssueError> {
        let trust_domain = self.trust_domain()?;
        if !spec.id.is_member_of(&trust_domain) {
            return Err(IssueError::ForeignTrustDomain {
                id: spec.id.to_string(),
                trust_domain: trust_domain.to_string(),
            });
        }
        let root = self.root()?;
        let intermediate = self.intermediate_ca()?;
        let signer = intermediate.as_ref().unwrap_or(&root);
        let leaf = profile::leaf(spec, signer, validity)?;
        let mut chain = leaf.cert_pem.clone();
        if let Some(intermediate) = &intermediate {
            chain.push_str(&intermediate.cert_pem);
        }
        let bundle = read_text(&self.bundle())?;
        let files = SvidFiles::in_dir(out);
        fs::create_dir_all(out).map_err(IssueError::io(out))?;
        // Key first: a watcher that reloads on the certificate's change then finds
        // the matching key already in place.
        write_atomic(&files.key, leaf.key_pem.as_bytes(), KEY_MODE)?;
        write_atomic(&files.cert, leaf.cert_pem.as_bytes(), PUBLIC_MODE)?;
        write_atomic(&files.chain, chain.as_bytes(), PUBLIC_MODE)?;
        write_atomic(&files.bundle, bundle.as_bytes(), PUBLIC_MODE)?;
        Ok(files)
    }

    /// Re-issues the SVID in `out` (same SPIFFE ID, DNS SANs and lifetime, a new
    /// key) when `threshold` of its lifetime has passed at `now`; keeps it
    /// otherwise. `ttl` overrides the lifetime.
    pub fn renew(
        &self,
        out: &Path,
        threshold: RenewThreshold,
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<RenewOutcome, IssueError> {
        let files = SvidFiles::in_dir(out);
        let current = Current::read(&files.cert)?;
        let due_at = threshold.due_at(current.validity);
        if now < due_at {
            return Ok(RenewOutcome::Kept {
                id: current.spec.id,
                not_after: current.validity.not_after,
                due_at,
            });
        }
        let lifetime = ttl.unwrap_or_else(|| {
            current
                .validity
                .lifetime()
                .saturating_sub(profile::BACKDATE)
        });
        let validity = Validity::starting_at(now, lifetime);
        self.issue(&current.spec, validity, out)?;
        Ok(RenewOutcome::Renewed {
            id: current.spec.id,
            not_after: validity.not_after,
        })
    }
}

/// The four files of one issued SVID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SvidFiles {
    /// The leaf alone.
    pub cert: PathBuf,
    /// The leaf, then the intermediate (what a TLS server presents).
    pub chain: PathBuf,
    /// The PKCS#8 private key, mode 0600.
    pub key: PathBuf,
    /// The trust bundle (the root).
    pub bundle: PathBuf,
}

impl SvidFiles {
    pub fn in_dir(dir: &Path) -> SvidFiles {
        SvidFiles {
            cert: dir.join("cert.pem"),
            chain: dir.join("chain.pem"),
            key: dir.join("key.pem"),
            bundle: dir.join("bundle.pem"),
        }
    }
}

/// When `cert renew` re-issues: once this fraction of the lifetime has passed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenewThreshold(f64);

impl RenewThreshold {
    /// `fraction` in `0.0..=1.0`.
    pub fn new(fraction: f64) -> Option<RenewThreshold> {
        (0.0..=1.0)
            .contains(&fraction)
            .then_some(RenewThreshold(fraction))
    }

    /// The moment `validity` becomes due.
    pub fn due_at(&self, validity: Validity) -> SystemTime {
        validity.not_before + validity.lifetime().mul_f64(self.0)
    }
}

impl Default for RenewThreshold {
    /// Half the lifetime (certs/README.md).
    fn default() -> Self {
        RenewThreshold(0.5)
    }
}

impl FromStr for RenewThreshold {
    type Err = String;
    /// `50%`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_suffix('%')
            .and_then(|n| n.trim().parse::<f64>().ok())
            .and_then(|percent| RenewThreshold::new(percent / 100.0))
            .ok_or_else(|| {
                format!("invalid threshold {s:?}: write a percentage of the lifetime, e.g. 50%")
            })
    }
}

/// What `cert renew` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenewOutcome {
    /// Re-issued; the new certificate is valid until `not_after`.
    Renewed { id: SpiffeId, not_after: SystemTime },
    /// Not due yet: kept until `due_at`.
    Kept {
        id: SpiffeId,
        not_after: SystemTime,
        due_at: SystemTime,
    },
}

/// The identity and window of the certificate being renewed, read back from it.
struct Current {
    spec: LeafSpec,
    validity: Validity,
}

impl Current {
    fn read(path: &Path) -> Result<Current, IssueError> {
        let not_renewable = |reason: String| IssueError::NotRenewable {
            path: path.to_owned(),
            reason,
        };
        let pem = fs::read(path).map_err(IssueError::io(path))?;
        let certs = super::inspect::parse_pem_certs(&pem).map_err(not_renewable)?;
        let der = certs
            .first()
            .ok_or_else(|| not_renewable("no CERTIFICATE block".into()))?;
        let facts = super::inspect::CertificateFacts::read(der).map_err(not_renewable)?;
        let [uri] = facts.uri_sans.as_slice() else {
            return Err(not_renewable(format!(
                "it has {} URI SANs; an X509-SVID has exactly one (issue a new one with `portcullis cert issue`)",
                facts.uri_sans.len()
            )));
        };
        let id = SpiffeId::new(uri)?;
        Ok(Current {
            spec: LeafSpec::new(id, facts.dns_sans)?,
            validity: facts.validity,
        })
    }
}

/// Writes `contents` to `path` atomically with `mode`: a temporary file in the
/// same directory, flushed to disk, then renamed over `path`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), IssueError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(IssueError::io(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(mode);
        }
        let mut file = options.open(&tmp)?;
        // `mode` is filtered by the umask on create, and a stale temporary file
        // keeps its old mode: set it explicitly.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(fs::Permissions::from_mode(mode))?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        IssueError::io(path)(e)
    })
}

fn read_text(path: &Path) -> Result<String, IssueError> {
    fs::read_to_string(path).map_err(IssueError::io(path))
}
