//! The side-by-side benchmark harness (`benches/sidebyside/`, `scripts/bench`) cannot
//! rot: one `--smoke`-sized round starts every reference point (null-authz, portcullis,
//! Envoy with no auth, with `jwt_authn`, with ext_authz to each authorizer and with the
//! portcullis module, built first), takes a very short measurement of each scenario,
//! and fills the caches a little. No timing is asserted; only that every measurement
//! got the answers it expected.
//!
//! Needs Envoy (`ENVOY_BIN`, else `.venv/bin/envoy`) and `wrk` and `taskset` (Debian
//! `wrk`, `util-linux`); `scripts/test` installs them.

#[path = "../benches/sidebyside"]
#[allow(dead_code)]
mod sidebyside {
    pub mod envoy;
    pub mod harness;
    pub mod interleave;
    pub mod load;
    pub mod nginx;
    pub mod procs;
    pub mod report;
    #[path = "../../tests/support/tokens.rs"]
    pub mod tokens;
}

use sidebyside::harness::Measured;
use sidebyside::interleave::merge;
use sidebyside::load::LoadResult;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The null-authz example: `cargo test` builds examples next to the test
/// binaries' `deps/`.
fn null_authz_bin() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let bin = deps
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/null_authz");
    assert!(
        bin.exists(),
        "{} is missing: cargo test builds it",
        bin.display()
    );
    bin
}

/// Builds the Envoy module (`envoy-module/`) in this test's profile and returns
/// the directory holding `libportcullis_envoy_module.so`, so the module's row
/// runs in the smoke round too.
fn envoy_module_dir() -> PathBuf {
    let dir = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(std::path::Path::parent)
        .expect("target/<profile>")
        .to_owned();
    let mut build =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build.args(["build", "--quiet", "-p", "portcullis-envoy-module"]);
    if dir.ends_with("release") {
        build.arg("--release");
    }
    let built = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo build for the module");
    assert!(built.success(), "building portcullis-envoy-module failed");
    dir
}

#[test]
fn every_reference_point_answers_a_short_load() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let null_authz = null_authz_bin();
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
        envoy_module: Some(envoy_module_dir()),
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
    assert!(
        measured
            .iter()
            .any(|m| m["name"] == "e2e envoy+null-authz, context headers"),
        "Envoy's cost of the context headers is measured"
    );
    for name in sidebyside::harness::NGINX_ROWS {
        assert!(
            measured.iter().any(|m| m["name"] == name),
            "nginx auth_request: {name} is measured"
        );
    }
    assert!(
        measured
            .iter()
            .any(|m| m["name"] == sidebyside::harness::MODULE_ROW),
        "the Envoy module is measured"
    );
    // Each pair's ratio is also taken within the round (one per round here).
    let per_round = report.json["per_round_ratios"].as_array().unwrap();
    assert_eq!(per_round.len(), 5, "five per-round ratios");
    for p in per_round {
        let ratios = p["rounds"].as_array().unwrap();
        // At most one per round, and a number. A smoke slice is a few hundred
        // requests and CPU comes in 10 ms ticks, so a CPU figure may read 0 and
        // its ratio be undefined (left out) or 0: tests never assert timings.
        assert!(ratios.len() <= 1, "{}: one ratio per round", p["ratio"]);
        for ratio in ratios {
            assert!(ratio.as_f64().unwrap().is_finite(), "{}", p["ratio"]);
        }
    }
    for m in measured {
        let name = m["name"].as_str().unwrap();
        assert!(
            m["load"]["requests"].as_u64().unwrap() > 0,
            "{name}: no request"
        );
        assert_eq!(m["load"]["unexpected"], 0, "{name}: unexpected answers");
    }
}

/// The reference point "null-authz, context headers" answers OK with the four
/// headers portcullis sets in scenario (a); plain null-authz with none.
#[tokio::test]
async fn null_authz_sets_context_headers_only_when_asked() {
    use envoy_types::pb::envoy::service::auth::v3::{
        authorization_client::AuthorizationClient, check_response::HttpResponse, CheckRequest,
    };
    let null_authz = null_authz_bin();
    let log = tempfile::NamedTempFile::new().unwrap();
    for (args, expected) in [(vec!["--context-headers".to_owned()], 4), (vec![], 0)] {
        let addr = sidebyside::procs::free_port();
        let mut argv = vec![addr.to_string()];
        argv.extend(args);
        let mut process =
            sidebyside::procs::Process::spawn("null-authz", &null_authz, &argv, log.path(), None)
                .unwrap();
        sidebyside::procs::wait_listening(addr, &mut process).unwrap();
        let mut client = AuthorizationClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let answer = client
            .check(CheckRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.status.unwrap().code, 0);
        let Some(HttpResponse::OkResponse(ok)) = answer.http_response else {
            panic!("an OK answer");
        };
        let names: Vec<String> = ok
            .headers
            .iter()
            .map(|h| h.header.as_ref().unwrap().key.clone())
            .collect();
        assert_eq!(names.len(), expected, "{names:?}");
        if expected > 0 {
            for name in [
                "x-user-id",
                "x-user-role",
                "x-user-channel-id",
                "x-user-clerk-id",
            ] {
                assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
            }
        }
    }
}

fn slice(requests: u64, seconds: f64, cpu: f64, p99: f64) -> Measured {
    Measured {
        name: "x".into(),
        load: LoadResult {
            requests,
            unexpected: 1,
            seconds,
            rps: requests as f64 / seconds,
            p50_us: p99 / 2.0,
            p99_us: p99,
        },
        cpu_us: BTreeMap::from([("authz".to_owned(), cpu)]),
        handler_p50_us: None,
        handler_p99_us: Some(p99),
    }
}

#[test]
fn slices_add_up_and_cpu_is_weighted_by_requests() {
    let row = merge(vec![
        slice(1000, 1.0, 30.0, 100.0),
        slice(3000, 1.0, 50.0, 300.0),
        slice(2000, 1.0, 40.0, 200.0),
        // A slice that sent nothing adds its time, and no percentile.
        slice(0, 0.5, 0.0, 0.0),
    ]);
    assert_eq!(row.load.requests, 6000);
    assert_eq!(row.load.unexpected, 4);
    assert!(
        (row.load.rps - 1714.285714).abs() < 1e-3,
        "{}",
        row.load.rps
    );
    // (1000 × 30 + 3000 × 50 + 2000 × 40) / 6000
    assert!((row.cpu_us["authz"] - 43.333333).abs() < 1e-3);
    assert_eq!(row.load.p99_us, 200.0, "the median slice's");
    assert_eq!(row.handler_p99_us, Some(200.0));
    assert_eq!(row.handler_p50_us, None);
}
