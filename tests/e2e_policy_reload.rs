//! Hot reload end to end (docs/policy.md): portcullis behind a real Envoy with a load
//! loop running, the policy file replaced the ways operators replace it — a rename
//! over the file, and a Kubernetes ConfigMap `..data` symlink swap — and each new
//! rule takes effect within 2 s with no request of the loop failing; then an
//! invalid policy: the old rules keep deciding, `/readyz` stays ready and shows
//! the error, and the reload metric counts it.

mod support;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::portcullis::USER_TRAFFIC_POLICY;
use support::{ClerkClaims, Mesh};

/// The user-traffic policy plus one rule, so its effect is observable.
fn policy_with(extra: &str) -> String {
    format!("{USER_TRAFFIC_POLICY}{extra}")
}

const REPORTS: &str = "  - name: reports\n    to: { paths: [/api/reports] }\n    from: { users: { roles: [USER] } }\n";
const EXPORTS: &str = "  - name: exports\n    to: { paths: [/api/exports] }\n    from: { users: { roles: [USER] } }\n";

/// Writes `text` beside `target` and renames it over `target` (atomic replace).
fn replace_by_rename(target: &Path, text: &str) {
    let tmp = target.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, target).unwrap();
}

/// Polls `path` through Envoy with `token` until it answers `want`; panics after 2 s.
async fn takes_effect(mesh: &Mesh, token: &str, path: &str, want: u16) {
    let start = Instant::now();
    loop {
        let status = mesh.get(path).bearer(token).send().await.status;
        if status == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{path} still answers {status} 2 s after the policy changed (want {want})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn policy_changes_apply_live_and_bad_ones_are_refused() {
    let mesh = Mesh::start().await;
    let token = ClerkClaims::user("USER").sign(&mesh.key);
    let policy = mesh.portcullis.dir().join("policy.yaml");

    // A load loop that must never see anything but 200 for an allowed request.
    let stop = Arc::new(AtomicBool::new(false));
    let envoy_addr = mesh.envoy.addr();
    let loop_token = token.clone();
    let loop_stop = Arc::clone(&stop);
    let load = tokio::spawn(async move {
        let (mut sent, mut failed) = (0u32, Vec::new());
        while !loop_stop.load(Ordering::SeqCst) && sent < 20_000 {
            let response =
                support::RequestBuilder::new(envoy_addr, http::Method::GET, "/api/videos/1")
                    .bearer(&loop_token)
                    .send()
                    .await;
            sent += 1;
            if response.status != 200 {
                failed.push(response.status);
            }
        }
        (sent, failed)
    });

    assert_eq!(
        mesh.get("/api/reports").bearer(&token).send().await.status,
        403
    );

    // 1. A rename over the file.
    replace_by_rename(&policy, &policy_with(REPORTS));
    takes_effect(&mesh, &token, "/api/reports", 200).await;

    // 2. A ConfigMap update: policy.yaml -> ..data/policy.yaml, ..data -> a
    //    timestamped directory, swapped by renaming a new ..data link over the old.
    let dir = mesh.portcullis.dir();
    std::fs::create_dir(dir.join("..2026_01")).unwrap();
    std::fs::write(dir.join("..2026_01/policy.yaml"), policy_with(REPORTS)).unwrap();
    symlink("..2026_01", dir.join("..data")).unwrap();
    symlink("..data/policy.yaml", dir.join("policy.link")).unwrap();
    std::fs::rename(dir.join("policy.link"), &policy).unwrap();
    std::fs::create_dir(dir.join("..2026_02")).unwrap();
    std::fs::write(
        dir.join("..2026_02/policy.yaml"),
        policy_with(&format!("{REPORTS}{EXPORTS}")),
    )
    .unwrap();
    symlink("..2026_02", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    takes_effect(&mesh, &token, "/api/exports", 200).await;

    // 3. An invalid policy: refused, the previous one keeps deciding.
    std::fs::create_dir(dir.join("..2026_03")).unwrap();
    std::fs::write(
        dir.join("..2026_03/policy.yaml"),
        "rules:\n  - name: broken\n    to: { paths: [no-slash] }\n",
    )
    .unwrap();
    symlink("..2026_03", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    let start = Instant::now();
    let readyz = loop {
        let readyz = mesh
            .portcullis
            .http(http::Method::GET, "/readyz")
            .send()
            .await;
        if readyz.text().contains("reload_error") {
            break readyz;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the reload error never showed: {}",
            readyz.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        readyz.status, 200,
        "the old policy still serves: still ready"
    );
    let body = readyz.json();
    assert!(
        body["reload_error"]
            .as_str()
            .unwrap()
            .contains("must start with '/'"),
        "{body}"
    );
    assert_eq!(
        mesh.get("/api/exports").bearer(&token).send().await.status,
        200
    );
    assert_eq!(
        mesh.get("/api/admin").bearer(&token).send().await.status,
        403
    );
    let metrics = mesh
        .portcullis
        .http(http::Method::GET, "/metrics")
        .send()
        .await
        .text();
    assert!(
        metrics.contains(r#"portcullis_policy_reload_total{result="error"} 1"#),
        "{metrics}"
    );
    // The start and at least the two observed changes (step 2's two renames may
    // fall into one poll).
    let successes: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"portcullis_policy_reload_total{result="success"} "#))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(successes >= 3, "{metrics}");

    // 4. Fixed again: the error clears.
    replace_by_rename(&dir.join("..2026_03/policy.yaml"), &policy_with(REPORTS));
    takes_effect(&mesh, &token, "/api/exports", 403).await;
    assert!(!mesh
        .portcullis
        .http(http::Method::GET, "/readyz")
        .send()
        .await
        .text()
        .contains("reload_error"));

    stop.store(true, Ordering::SeqCst);
    let (sent, failed) = load.await.unwrap();
    assert!(sent > 20, "the load loop ran ({sent} requests)");
    assert!(
        failed.is_empty(),
        "{} of {sent} requests failed during reloads: {failed:?}",
        failed.len()
    );
}
