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
