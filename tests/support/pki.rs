//! Test certificates made by our own tool: runs the `portcullis` binary's `ca` and
//! `cert` commands into a temporary `certs/` directory. Nothing is checked in.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// Runs `portcullis ARGS...`; returns the output whatever the exit status.
pub fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(args)
        .output()
        .expect("run the portcullis binary")
}

/// Runs `portcullis ARGS...` and panics (with its output) unless it exits 0.
pub fn portcullis_ok(args: &[&str]) -> Output {
    let out = portcullis(args);
    assert!(
        out.status.success(),
        "portcullis {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A mesh CA (root + intermediate) in a temporary directory.
pub struct TestPki {
    dir: TempDir,
    /// `certs/` as a command-line argument.
    certs_arg: String,
}

impl TestPki {
    /// `ca init --trust-domain TD` and `ca intermediate`.
    pub fn new(trust_domain: &str) -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let certs_arg = dir.path().join("certs").to_string_lossy().into_owned();
        let pki = Self { dir, certs_arg };
        portcullis_ok(&[
            "ca",
            "init",
            "--trust-domain",
            trust_domain,
            "--dir",
            pki.certs_str(),
        ]);
        portcullis_ok(&["ca", "intermediate", "--dir", pki.certs_str()]);
        pki
    }

    /// The `certs/` directory.
    pub fn certs(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// `certs/` as a command-line argument.
    pub fn certs_str(&self) -> &str {
        &self.certs_arg
    }

    /// The trust bundle.
    pub fn bundle(&self) -> PathBuf {
        self.certs().join("bundle.pem")
    }

    /// `cert issue --service NAME --dns ...` into `certs/NAME`; returns that directory.
    pub fn issue(&self, name: &str, dns: &[&str]) -> PathBuf {
        let mut args = vec![
            "cert",
            "issue",
            "--service",
            name,
            "--dir",
            self.certs_str(),
        ];
        for d in dns {
            args.extend(["--dns", d]);
        }
        portcullis_ok(&args);
        self.certs().join(name)
    }

    /// A path inside the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

/// A TLS client (for [`super::RequestBuilder::over_tls`]) trusting the roots in
/// `bundle`, presenting the certificate in `identity` (a `cert issue` output
/// directory: chain.pem, key.pem) when given.
pub fn tls_client(bundle: &Path, identity: Option<&Path>) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(bundle).expect("read the bundle") {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a usable root");
    }
    let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("default TLS versions")
    .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(dir) => {
            let chain = CertificateDer::pem_file_iter(dir.join("chain.pem"))
                .expect("read chain.pem")
                .map(|cert| cert.expect("a PEM certificate"))
                .collect();
            let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).expect("read key.pem");
            builder
                .with_client_auth_cert(chain, key)
                .expect("a usable client identity")
        }
    };
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}
