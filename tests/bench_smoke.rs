//! The side-by-side benchmark harness (`benches/sidebyside/`, `scripts/bench`) cannot
//! rot: one `--smoke`-sized round starts every reference point (null-authz, portcullis,
//! Envoy with no auth, with `jwt_authn` and with ext_authz to each authorizer), takes a
//! very short measurement of each scenario, and fills the caches a little. No timing
//! is asserted; only that every measurement got the answers it expected.
//!
//! Needs Envoy (`ENVOY_BIN`, else `.venv/bin/envoy`) and `wrk` and `taskset` (Debian
//! `wrk`, `util-linux`); `scripts/test` installs them.

#[path = "../benches/sidebyside"]
#[allow(dead_code)]
mod sidebyside {
    pub mod envoy;
    pub mod harness;
    pub mod load;
    pub mod procs;
    #[path = "../../tests/support/tokens.rs"]
    pub mod tokens;
}

use std::path::PathBuf;
use std::time::Duration;

#[test]
fn every_reference_point_answers_a_short_load() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // `cargo test` builds the examples next to the test binaries' `deps/`.
    let deps = std::env::current_exe().unwrap();
    let null_authz = deps
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/null_authz");
    assert!(
        null_authz.exists(),
        "{} is missing: cargo test builds it",
        null_authz.display()
    );
    let out = tempfile::tempdir().unwrap();
    let opts = sidebyside::harness::Options {
        rounds: 1,
        duration: Duration::from_millis(300),
        warmup: Duration::from_millis(100),
        fresh_tokens: 20,
        fill: 50,
        concurrency: 2,
        pin: false,
        portcullis: PathBuf::from(env!("CARGO_BIN_EXE_portcullis")),
        null_authz,
        envoy: std::env::var_os("ENVOY_BIN")
            .map_or_else(|| root.join(".venv/bin/envoy"), PathBuf::from),
        out: out.path().to_owned(),
        only: None,
        keep: true,
    };
    let report = sidebyside::harness::run(&opts).expect("the harness runs");
    // `--keep` leaves what profiling outside the harness needs.
    let kept = std::fs::read_dir(out.path())
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("fixture-"))
        .expect("the fixture is kept")
        .path();
    for file in [
        "profile.yaml",
        "check-a.grpc",
        "check-c.grpc",
        "users.db",
        "policy.yaml",
    ] {
        assert!(kept.join(file).exists(), "{file} is kept");
    }
    println!("{}", report.markdown);
    let rounds = report.json["rounds"].as_array().unwrap();
    let measured = rounds[0].as_array().unwrap();
    assert!(measured.len() >= 19, "every reference point is measured");
    assert!(
        measured
            .iter()
            .any(|m| m["name"] == "grpc null-authz + bare RS256 (b) fresh RS256"),
        "the floor of scenario (b) is measured"
    );
    for m in measured {
        let name = m["name"].as_str().unwrap();
        assert!(
            m["load"]["requests"].as_u64().unwrap() > 0,
            "{name}: no request"
        );
        assert_eq!(m["load"]["unexpected"], 0, "{name}: unexpected answers");
    }
}
