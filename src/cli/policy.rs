//! `portcullis policy test` and `portcullis policy explain`: a policy exercised
//! offline, with the server's own decision and answer code.

use anyhow::{bail, Context as _};
use portcullis::config::Config;
use portcullis::headers::HeadersConfig;
use portcullis::policy::{LoadOptions, Policy};
use portcullis::policy_cases::{self, RequestSpec, TestFile};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The headers and load options of `config`, or the defaults.
fn settings(config: Option<&Path>) -> anyhow::Result<(HeadersConfig, LoadOptions)> {
    match config {
        None => Ok((HeadersConfig::default(), LoadOptions::default())),
        Some(path) => {
            let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok((config.headers, config.policy_options))
        }
    }
}

fn load_policy(path: &Path, options: &LoadOptions) -> anyhow::Result<Policy> {
    Policy::load(path, options).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Runs every case of every file; prints `N passed, M failed`.
pub fn test(files: &[PathBuf]) -> anyhow::Result<ExitCode> {
    let (mut passed, mut failed) = (0usize, 0usize);
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let tests: TestFile = serde_yaml_ng::from_str(&text).map_err(|e| {
            let line = e
                .location()
                .map(|l| format!(":{}", l.line()))
                .unwrap_or_default();
            anyhow::anyhow!("{}{line}: {e}", file.display())
        })?;
        let base = file.parent().unwrap_or(Path::new("."));
        let (headers, options) = settings(tests.config.as_ref().map(|c| base.join(c)).as_deref())?;
        let policy = load_policy(&base.join(&tests.policy), &options)?;
        println!(
            "{} ({} cases, policy {})",
            file.display(),
            tests.cases.len(),
            tests.policy
        );
        for case in &tests.cases {
            match policy_cases::check_case(&policy, &headers, case) {
                Ok(()) => {
                    passed += 1;
                    println!("  ok    {}", case.name);
                }
                Err(diff) => {
                    failed += 1;
                    println!("  FAIL  {}\n{diff}", case.name);
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Decides one request (JSON or YAML) and prints the whole trace.
pub fn explain(
    request: &Path,
    policy: Option<&Path>,
    config: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(request)
        .with_context(|| format!("cannot read {}", request.display()))?;
    let spec: RequestSpec = serde_yaml_ng::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: not a request: {e}", request.display()))?;
    let (headers, options) = settings(config)?;
    let policy = match (policy, config) {
        (Some(path), _) => load_policy(path, &options)?,
        (None, Some(path)) => {
            let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
            match config.policy_file {
                Some(file) => load_policy(&file, &options)?,
                None => bail!("{} names no policy file", path.display()),
            }
        }
        (None, None) => load_policy(Path::new("policy.yaml"), &options)?,
    };
    let eval = policy_cases::evaluate(&policy, &headers, &spec);
    println!(
        "{} {} (host {}) as {:?}",
        spec.method, spec.path, spec.host, spec.principal
    );
    print!("{}", policy_cases::render_trace(&eval));
    Ok(ExitCode::SUCCESS)
}
