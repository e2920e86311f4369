//! `portcullis ca init|intermediate` and `portcullis cert issue|inspect|renew`
//! (docs/configuration.md, certs/README.md). Arguments in, the library's `ca` room does the work, a short
//! report out. Exit 0 ok, 1 invalid input or a failed check.

use anyhow::Context as _;
use portcullis::ca::store::{write_atomic, KEY_MODE, PUBLIC_MODE};
use portcullis::ca::{
    inspect as report, CaDir, LeafSpec, RenewOutcome, RenewThreshold, Ttl, Validity,
};
use portcullis::identity::{SpiffeId, TrustDomain};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

pub fn init(trust_domain: &str, dir: &Path, force: bool) -> anyhow::Result<ExitCode> {
    let trust_domain = TrustDomain::new(trust_domain)
        .with_context(|| format!("--trust-domain {trust_domain:?}"))?;
    let ca = CaDir::new(dir);
    let validity = Validity::starting_at(SystemTime::now(), portcullis::ca::profile::ROOT_TTL);
    ca.init(&trust_domain, validity, force)?;
    println!(
        "root CA for spiffe://{trust_domain} (10y): {}\n  key (keep it offline once an intermediate exists): {}\n  trust bundle: {}",
        ca.root_cert().display(),
        ca.root_key().display(),
        ca.bundle().display()
    );
    println!(
        "next: `portcullis ca intermediate --dir {0}`, then `portcullis cert issue --service NAME --dir {0}`",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub fn intermediate(dir: &Path, ttl: Ttl, istio_dir: Option<&Path>) -> anyhow::Result<ExitCode> {
    let ca = CaDir::new(dir);
    let intermediate = ca.intermediate(Validity::starting_at(SystemTime::now(), ttl.0))?;
    println!(
        "intermediate CA (pathlen 0, {ttl}): {}\n  key: {}\n  it now signs every new service certificate",
        ca.intermediate_cert().display(),
        ca.intermediate_key().display()
    );
    if let Some(istio) = istio_dir {
        let root = ca.root()?;
        // Istio's plug-in CA layout (istio.io "Plug in CA certificates"):
        // cert-chain.pem is the intermediate followed by the root.
        let files = [
            ("ca-cert.pem", intermediate.cert_pem.clone(), PUBLIC_MODE),
            ("ca-key.pem", intermediate.key_pem.clone(), KEY_MODE),
            ("root-cert.pem", root.cert_pem.clone(), PUBLIC_MODE),
            (
                "cert-chain.pem",
                format!("{}{}", intermediate.cert_pem, root.cert_pem),
                PUBLIC_MODE,
            ),
        ];
        for (name, contents, mode) in &files {
            write_atomic(&istio.join(name), contents.as_bytes(), *mode)?;
        }
        let d = istio.display();
        println!("Istio plug-in CA files in {d}; load them with:");
        println!(
            "  kubectl create secret generic cacerts -n istio-system \\\n    --from-file={d}/ca-cert.pem \\\n    --from-file={d}/ca-key.pem \\\n    --from-file={d}/root-cert.pem \\\n    --from-file={d}/cert-chain.pem"
        );
        println!(
            "  (then restart istiod; workloads get certificates that chain to {})",
            ca.bundle().display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Who a certificate is for: `--service` (+ `--namespace`) or `--spiffe-id`.
pub struct Subject {
    pub service: Option<String>,
    pub namespace: String,
    pub spiffe_id: Option<String>,
}

impl Subject {
    fn resolve(&self, trust_domain: &TrustDomain) -> anyhow::Result<SpiffeId> {
        match (&self.service, &self.spiffe_id) {
            (Some(service), None) => trust_domain
                .service(&self.namespace, service)
                .with_context(|| format!("--service {service:?} --namespace {:?}", self.namespace)),
            (None, Some(id)) => SpiffeId::new(id).with_context(|| format!("--spiffe-id {id:?}")),
            _ => anyhow::bail!("give exactly one of --service NAME or --spiffe-id ID"),
        }
    }
}

pub fn issue(
    subject: Subject,
    dns: Vec<String>,
    ttl: Ttl,
    out: Option<PathBuf>,
    dir: &Path,
) -> anyhow::Result<ExitCode> {
    let ca = CaDir::new(dir);
    let id = subject.resolve(&ca.trust_domain()?)?;
    let out = out.unwrap_or_else(|| dir.join(default_name(&id)));
    let spec = LeafSpec::new(id.clone(), dns)?;
    let files = ca.issue(&spec, Validity::starting_at(SystemTime::now(), ttl.0), &out)?;
    println!("issued {id} ({ttl}) into {}:", out.display());
    println!("  cert.pem    the certificate");
    println!("  chain.pem   certificate + intermediate (what a server presents)");
    println!(
        "  key.pem     private key, mode 0600: {}",
        files.key.display()
    );
    println!("  bundle.pem  trust bundle (the root)");
    println!(
        "check it: portcullis cert inspect {}; renew it: portcullis cert renew --out {}",
        files.cert.display(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `certs/NAME`: the service account, or the ID's last path segment.
fn default_name(id: &SpiffeId) -> String {
    id.service_account()
        .or_else(|| id.path().rsplit('/').next().filter(|s| !s.is_empty()))
        .unwrap_or("svid")
        .to_owned()
}

pub fn inspect(
    file: &Path,
    bundle: Option<PathBuf>,
    trust_domain: Option<&str>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let trust_domain = trust_domain
        .map(TrustDomain::new)
        .transpose()
        .context("--trust-domain")?;
    let bundle = match bundle {
        Some(bundle) => bundle,
        None => {
            let beside = file.parent().unwrap_or(Path::new(".")).join("bundle.pem");
            let default = Path::new("certs/bundle.pem");
            if beside.exists() {
                beside
            } else if default.exists() {
                default.to_owned()
            } else {
                anyhow::bail!(
                    "no trust bundle: none beside {} nor at certs/bundle.pem; pass --bundle FILE",
                    file.display()
                );
            }
        }
    };
    let cert = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    // A lone leaf (cert.pem) verifies through the intermediate in chain.pem beside it.
    let chain = file.parent().unwrap_or(Path::new(".")).join("chain.pem");
    let lone_leaf = report::parse_pem_certs(&cert).is_ok_and(|certs| certs.len() == 1);
    let beside = if lone_leaf && chain.is_file() && chain != file {
        std::fs::read(&chain).ok()
    } else {
        None
    };
    let roots = std::fs::read(&bundle).with_context(|| format!("reading {}", bundle.display()))?;
    let report = report::inspect(
        &cert,
        beside.as_deref(),
        &roots,
        trust_domain.as_ref(),
        SystemTime::now(),
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!(
            "{}",
            report.render(&file.display().to_string(), &bundle.display().to_string())
        );
    }
    Ok(if report.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn renew(
    out: &Path,
    threshold: RenewThreshold,
    ttl: Option<Ttl>,
    dir: &Path,
) -> anyhow::Result<ExitCode> {
    let ca = CaDir::new(dir);
    match ca.renew(out, threshold, ttl.map(|t| t.0), SystemTime::now())? {
        RenewOutcome::Renewed { id, not_after } => println!(
            "renewed {id} in {}: valid until {}",
            out.display(),
            report::rfc3339(not_after)
        ),
        RenewOutcome::Kept {
            id,
            not_after,
            due_at,
        } => println!(
            "kept {id} in {}: not due yet (valid until {}, renews from {})",
            out.display(),
            report::rfc3339(not_after),
            report::rfc3339(due_at)
        ),
    }
    Ok(ExitCode::SUCCESS)
}
