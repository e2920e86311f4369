//! `portcullis token issue|jwks` (docs/configuration.md, docs/east-west.md): service tokens signed with the
//! ES256 key under `DIR/tokens/`, created on first use.

use portcullis::ca::token::{self, TokenSigner};
use portcullis::ca::{CaDir, Ttl};
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

pub fn issue(
    service: &str,
    namespace: &str,
    audiences: Vec<String>,
    ttl: Ttl,
    dir: &Path,
) -> anyhow::Result<ExitCode> {
    let ca = CaDir::new(dir);
    let trust_domain = ca.trust_domain()?;
    let subject = trust_domain.service(namespace, service)?;
    let audiences = if audiences.is_empty() {
        vec![trust_domain.id().to_string()]
    } else {
        audiences
    };
    let signer = signer(&ca)?;
    let jwt = signer.issue(
        &trust_domain,
        &subject,
        &audiences,
        ttl.0,
        SystemTime::now(),
    )?;
    // The token alone on stdout, for `TOKEN=$(portcullis token issue ...)`.
    println!("{jwt}");
    Ok(ExitCode::SUCCESS)
}

pub fn jwks(dir: &Path) -> anyhow::Result<ExitCode> {
    let signer = signer(&CaDir::new(dir))?;
    println!("{}", serde_json::to_string_pretty(&signer.jwks())?);
    Ok(ExitCode::SUCCESS)
}

fn signer(ca: &CaDir) -> anyhow::Result<TokenSigner> {
    let tokens = ca.tokens_dir();
    let (signer, created) = TokenSigner::load_or_create(&tokens)?;
    if created {
        eprintln!(
            "created the token signing key {} (kid {}); its JWKS is {}",
            token::key_path(&tokens).display(),
            signer.kid(),
            token::jwks_path(&tokens).display()
        );
    }
    Ok(signer)
}
