//! `cargo bench --bench sidebyside -- [--quick | --smoke] [--rounds N] [--no-pin] [--only NAME] [--keep]
//! [--envoy-module DIR]`
//! (normally through `scripts/bench`): the side-by-side benchmark of BENCHMARKS.md.
//! Writes `target/bench/results.json` and prints the Markdown table. See
//! `BENCHMARKS.md` for what is measured and how to read it.

mod envoy;
mod harness;
mod interleave;
mod load;
mod nginx;
mod procs;
mod report;
#[path = "../../tests/support/tokens.rs"]
#[allow(dead_code)]
mod tokens;

use std::path::PathBuf;
use std::time::Duration;

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut opts = harness::Options {
        rounds: 5,
        duration: Duration::from_secs(5),
        warmup: Duration::from_secs(1),
        fresh_tokens: 10_000,
        fill: 100_000,
        concurrency: 32,
        pin: true,
        portcullis: root.join("target/release/portcullis"),
        null_authz: root.join("target/release/examples/null_authz"),
        envoy: std::env::var_os("ENVOY_BIN")
            .map_or_else(|| root.join(".venv/bin/envoy"), PathBuf::from),
        envoy_module: None,
        out: root.join("target/bench"),
        only: None,
        keep: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => {
                opts.rounds = 1;
                opts.duration = Duration::from_secs(2);
                opts.warmup = Duration::from_millis(500);
                opts.fresh_tokens = 3_000;
            }
            "--smoke" => {
                opts.rounds = 1;
                opts.duration = Duration::from_millis(300);
                opts.warmup = Duration::from_millis(100);
                opts.fresh_tokens = 50;
                opts.fill = 200;
                opts.concurrency = 4;
            }
            "--rounds" => opts.rounds = args.next().unwrap_or_default().parse()?,
            "--fill" => opts.fill = args.next().unwrap_or_default().parse()?,
            "--no-pin" => opts.pin = false,
            "--only" => opts.only = args.next(),
            "--keep" => opts.keep = true,
            // The directory holding libportcullis_envoy_module.so.
            "--envoy-module" => opts.envoy_module = args.next().map(PathBuf::from),
            "--bench" => {} // added by `cargo bench`
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let report = harness::run(&opts)?;
    let json = opts.out.join("results.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report.json)?)?;
    println!("{}", report.markdown);
    eprintln!("wrote {}", json.display());
    Ok(())
}
