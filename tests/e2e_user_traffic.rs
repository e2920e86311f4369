//! End to end, north-south user traffic (docs/security.md, docs/policy.md, docs/answers.md): a real Envoy front proxy
//! (`mesh/envoy/front-proxy.yaml`) asks the real portcullis binary about every
//! request; users carry Clerk-shaped RS256 session tokens whose keys come from a
//! JWKS endpoint; the upstream echoes what it received.
//!
//! Every case asserts both the status the client got and what the upstream saw (or
//! that it saw nothing). Needs Envoy: run `scripts/test`, or set `ENVOY_BIN`.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{tokens, ClerkClaims, Mesh, Response, SigningKey};
use tokio::task::JoinSet;

/// Asserts `response` is portcullis' 401 challenge (docs/answers.md): a Bearer challenge in
/// realm "portcullis", the JSON deny body, nothing from the upstream.
fn assert_unauthorized(case: &str, response: &Response) {
    assert_eq!(response.status, 401, "{case}: expected 401, got {response}");
    let challenge = response
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("{case}: 401 without WWW-Authenticate: {response}"));
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains(r#"realm="portcullis""#),
        "{case}: not a Bearer challenge in realm portcullis: {challenge}"
    );
    assert_deny_body(case, response);
}

/// Asserts `response` rejects the presented, invalid `token` with a 401
/// `error="invalid_token"` challenge, and echoes the token nowhere.
fn assert_invalid_token(case: &str, token: &str, response: &Response) {
    assert_unauthorized(case, response);
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{case}: challenge without error=\"invalid_token\": {challenge}"
    );
    assert!(
        !challenge.contains(token) && !response.text().contains(token),
        "{case}: the deny answer echoes the token"
    );
}

/// Asserts the body is the JSON deny body `{error, message, request_id}` (docs/answers.md),
/// that the upstream did not answer, and returns the body.
fn assert_deny_body(case: &str, response: &Response) -> Value {
    assert!(
        response.upstream().is_none(),
        "{case}: the request reached the upstream: {response}"
    );
    let body = response.json();
    for field in ["error", "message", "request_id"] {
        assert!(
            body[field].as_str().is_some_and(|value| !value.is_empty()),
            "{case}: deny body lacks a non-empty `{field}`: {body}"
        );
    }
    body
}

/// Asserts a 200 answered by the upstream and returns what the upstream saw.
fn assert_reached_upstream(case: &str, response: &Response) -> support::Seen {
    assert_eq!(response.status, 200, "{case}: expected 200, got {response}");
    response
        .upstream()
        .unwrap_or_else(|| panic!("{case}: 200 but not from the upstream: {response}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_request_reaches_upstream_with_verified_identity() {
    let mesh = Mesh::start().await;
    let user = ClerkClaims::user("USER");
    let token = user.sign(&mesh.key);

    let response = mesh.get("/api/videos").bearer(&token).send().await;
    let seen = assert_reached_upstream("bearer token", &response);
    assert_eq!(seen.path, "/api/videos");
    assert_eq!(
        seen.header("x-user-id"),
        Some(user.sub.as_str()),
        "x-user-id is the token's sub"
    );
    assert_eq!(
        seen.header("x-user-role"),
        Some("USER"),
        "x-user-role is the role claim"
    );

    let cookie = format!("theme=dark; __session={token}");
    let response = mesh
        .get("/api/videos/42")
        .header("cookie", &cookie)
        .send()
        .await;
    let seen = assert_reached_upstream("__session cookie", &response);
    assert_eq!(seen.path, "/api/videos/42");
    assert_eq!(
        seen.header("x-user-id"),
        Some(user.sub.as_str()),
        "cookie: x-user-id"
    );
    assert_eq!(
        seen.header("x-user-role"),
        Some("USER"),
        "cookie: x-user-role"
    );

    let admin = ClerkClaims::user("ADMIN");
    let response = mesh
        .get("/api/videos")
        .bearer(&admin.sign(&mesh.key))
        .send()
        .await;
    let seen = assert_reached_upstream("ADMIN reads videos", &response);
    assert_eq!(seen.header("x-user-id"), Some(admin.sub.as_str()));
    assert_eq!(seen.header("x-user-role"), Some("ADMIN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_kept_when_sent_and_generated_when_not() {
    let mesh = Mesh::start().await;
    let token = ClerkClaims::user("USER").sign(&mesh.key);
    let request_id = format!("e2e-{:016x}", rand::random::<u64>());

    let response = mesh
        .get("/api/videos")
        .bearer(&token)
        .header("x-request-id", &request_id)
        .send()
        .await;
    let seen = assert_reached_upstream("x-request-id sent", &response);
    assert_eq!(
        seen.header("x-request-id"),
        Some(request_id.as_str()),
        "x-request-id kept"
    );

    let response = mesh.get("/api/videos").bearer(&token).send().await;
    let seen = assert_reached_upstream("x-request-id not sent", &response);
    assert!(
        seen.header("x-request-id").is_some_and(|id| !id.is_empty()),
        "x-request-id generated: {seen:?}"
    );

    let response = mesh
        .get("/api/videos")
        .header("x-request-id", &request_id)
        .send()
        .await;
    assert_unauthorized("deny with x-request-id", &response);
    assert_eq!(
        response.json()["request_id"].as_str(),
        Some(request_id.as_str()),
        "the deny body names the caller's request id"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sent_identity_headers_never_reach_upstream() {
    let mesh = Mesh::start().await;
    let user = ClerkClaims::user("USER");
    let token = user.sign(&mesh.key);
    let spoofed = [
        ("x-user-id", "admin"),
        ("x-user-role", "ADMIN"),
        ("x-user-channel-id", "everything"),
        ("x-service-name", "billing"),
        ("x-portcullis-decision", "allow"),
        // A default `headers.service` name outside the stripped prefixes: the
        // shipped Envoy's `allowed_headers` must still send it, or it is never
        // seen and so never removed.
        (
            "x-caller-spiffe-id",
            "spiffe://example.org/ns/prod/sa/billing",
        ),
    ];

    let mut request = mesh.get("/api/videos").bearer(&token);
    for (name, value) in spoofed {
        request = request.header(name, value);
    }
    let seen = assert_reached_upstream("authenticated, spoofed headers", &request.send().await);
    assert_eq!(
        seen.header("x-user-id"),
        Some(user.sub.as_str()),
        "the verified x-user-id replaces the spoofed one"
    );
    assert_eq!(
        seen.header("x-user-role"),
        Some("USER"),
        "the verified x-user-role replaces the spoofed one"
    );
    for name in [
        "x-user-channel-id",
        "x-service-name",
        "x-portcullis-decision",
        "x-caller-spiffe-id",
    ] {
        assert_eq!(
            seen.header(name),
            None,
            "authenticated: spoofed {name} removed"
        );
    }

    let mut request = mesh.get("/public/index.html");
    for (name, value) in spoofed {
        request = request.header(name, value);
    }
    let seen = assert_reached_upstream(
        "anonymous on /public, spoofed headers",
        &request.send().await,
    );
    for (name, _) in spoofed {
        assert_eq!(seen.header(name), None, "anonymous: spoofed {name} removed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_invalid_tokens_get_401() {
    let mesh = Mesh::start().await;
    let key = &mesh.key;
    let valid = ClerkClaims::user("USER");
    let valid_token = valid.sign(key);
    let stranger = SigningKey::generate("key-stranger");

    let response = mesh.get("/api/videos").send().await;
    assert_unauthorized("missing token", &response);

    let cases = [
        (
            "expired",
            "/api/videos",
            ClerkClaims::user("USER").expired().sign(key),
        ),
        (
            "not yet valid (nbf in the future)",
            "/api/videos",
            ClerkClaims::user("USER").not_yet_valid().sign(key),
        ),
        (
            "wrong issuer",
            "/api/videos",
            ClerkClaims::user("USER")
                .issuer("https://evil.example.test")
                .sign(key),
        ),
        (
            "wrong authorized party (azp)",
            "/api/videos",
            ClerkClaims::user("USER")
                .authorized_party("https://evil.example.test")
                .sign(key),
        ),
        (
            "tampered payload (role USER -> ADMIN)",
            "/api/admin",
            tokens::tampered(&valid_token, |claims| claims["role"] = "ADMIN".into()),
        ),
        (
            "alg none",
            "/api/videos",
            tokens::alg_none(&valid, key.kid()),
        ),
        (
            "HS256 signed with the RSA public key PEM (alg confusion)",
            "/api/videos",
            tokens::hs256_with_public_key(&valid, key),
        ),
        (
            "signed with a key the issuer never published",
            "/api/videos",
            ClerkClaims::user("USER").sign(&stranger),
        ),
        ("not a JWT", "/api/videos", "not.a.jwt".to_owned()),
        (
            "bad token on a route that allows anyone",
            "/public",
            tokens::tampered(&valid_token, |claims| claims["role"] = "ADMIN".into()),
        ),
    ];
    for (case, path, token) in &cases {
        let response = mesh.get(path).bearer(token).send().await;
        assert_invalid_token(case, token, &response);
    }

    let cookie = format!(
        "__session={}",
        ClerkClaims::user("USER").expired().sign(key)
    );
    let response = mesh.get("/public").header("cookie", &cookie).send().await;
    assert_unauthorized("expired __session cookie on /public", &response);

    // 32 KiB fits Envoy's default 60 KiB header limit, so portcullis must answer it.
    let garbage: String = (0..32 * 1024)
        .map(|_| char::from(b'a' + rand::random::<u8>() % 26))
        .collect();
    let response = mesh.get("/api/videos").bearer(&garbage).send().await;
    assert_invalid_token("32 KiB garbage Authorization header", &garbage, &response);

    let response = mesh.get("/api/videos").bearer(&valid_token).send().await;
    let seen = assert_reached_upstream("valid token after all the bad ones", &response);
    assert_eq!(seen.header("x-user-id"), Some(valid.sub.as_str()));

    let reached: Vec<_> = mesh.upstream.seen();
    assert_eq!(
        reached.len(),
        1,
        "only the valid request may reach the upstream: {reached:#?}"
    );
}

/// Whether `path` would reach the admin API at an upstream that resolves dot
/// segments, `//` and percent-encoded dots and slashes itself (the most lenient
/// router there is), query excluded.
fn is_admin_path(path: &str) -> bool {
    let path = path
        .split('?')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let path = path
        .replace("%2e", ".")
        .replace("%2f", "/")
        .replace("%5c", "/")
        .replace('\\', "/");
    let mut segments = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    segments.starts_with(&["api", "admin"])
}

#[test]
fn is_admin_path_sees_through_spellings() {
    for (path, admin) in [
        ("/api/admin", true),
        ("/api/admin/users?x=1", true),
        ("/API//Admin", true),
        ("/api/videos/%2e%2e/admin", true),
        ("/api/videos/..%2Fadmin", true),
        ("/api/videos/api/admin", false),
        ("/api/videos/admin-guide", false),
        ("/admin", false),
    ] {
        assert_eq!(is_admin_path(path), admin, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_path_tricks_guard_the_admin_route() {
    let mesh = Mesh::start().await;
    let user = ClerkClaims::user("USER");
    let user_token = user.sign(&mesh.key);
    let admin = ClerkClaims::user("ADMIN");

    let response = mesh.get("/api/admin").bearer(&user_token).send().await;
    assert_eq!(response.status, 403, "USER on /api/admin: {response}");
    assert_deny_body("USER on /api/admin", &response);

    let response = mesh
        .get("/api/admin/users")
        .bearer(&admin.sign(&mesh.key))
        .send()
        .await;
    let seen = assert_reached_upstream("ADMIN on /api/admin/users", &response);
    assert_eq!(seen.path, "/api/admin/users");
    assert_eq!(seen.header("x-user-id"), Some(admin.sub.as_str()));
    assert_eq!(seen.header("x-user-role"), Some("ADMIN"));

    // Spellings of the admin API that a naive prefix match on the raw path would
    // take for a video URL (or miss entirely). Envoy normalizes the path before
    // ext_authz, rejects encoded slashes, and portcullis decides on what is left.
    let tricks = [
        "/api/videos/../admin",
        "/api//admin",
        "/api/%2e%2e/admin",
        "/api/videos/..%2fadmin",
        "/api/videos/..%2Fadmin",
        "/api/videos/%2e%2e/%2e%2e/api/admin",
        "/api/videos/%2E%2E/%2E%2E/api/admin",
        "/api/videos/./../../api/./admin",
        "//api//videos//..//..//api//admin",
        // Tomcat-style path parameters: `..;x` is a `..` segment.
        "/api/..;/admin",
        "/api/videos/..;/admin",
        "/api/videos/..;jsessionid=1/admin",
        "/api/videos/.;/../admin",
        "/api/videos/%2e%2e;/admin",
        "/api/videos/..%3b/admin",
        // Double-encoded dots and slashes (a server that decodes twice sees
        // `..` and `/`) and Unicode look-alikes that NFKC folds into them.
        "/api/videos/%252e%252e/admin",
        "/api/videos/..%252fadmin",
        "/api/videos/%252e%252e%252fadmin",
        "/api/videos/%25252e%25252e/admin",
        "/api/videos/%ef%bc%8e%ef%bc%8e/admin",
        "/api/videos/%e2%80%a5/admin",
        "/api/videos/..%ef%bc%8fadmin",
    ];
    for path in tricks {
        let response = mesh.get(path).bearer(&user_token).send().await;
        match response.status {
            400 | 403 | 404 => {}
            200 => {
                let seen = response.upstream().expect("a 200 comes from the upstream");
                assert!(
                    !is_admin_path(&seen.path),
                    "USER token, {path}: the upstream served the admin path {}",
                    seen.path
                );
            }
            _ => panic!("USER token, {path}: unexpected answer {response}"),
        }
    }

    for seen in mesh.upstream.seen() {
        if seen.header("x-user-id") == Some(user.sub.as_str()) {
            assert!(
                !is_admin_path(&seen.path),
                "the upstream saw an admin path for a USER token: {seen:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_rotation_is_picked_up_and_outage_keeps_last_good_keys() {
    let mut mesh = Mesh::start().await;
    let response = mesh
        .get("/api/videos")
        .bearer(&ClerkClaims::user("USER").sign(&mesh.key))
        .send()
        .await;
    assert_reached_upstream("first key", &response);

    let fetches_before = mesh.jwks.fetches();
    let rotated = SigningKey::generate("key-2");
    mesh.jwks.set_keys(&[&mesh.key, &rotated]);
    let user = ClerkClaims::user("USER");
    let response = mesh
        .get("/api/videos")
        .bearer(&user.sign(&rotated))
        .send()
        .await;
    let seen = assert_reached_upstream("token with the rotated-in kid", &response);
    assert_eq!(seen.header("x-user-id"), Some(user.sub.as_str()));
    assert!(
        mesh.jwks.fetches() > fetches_before,
        "an unknown kid refetches the JWKS ({} fetches before, {} after)",
        fetches_before,
        mesh.jwks.fetches()
    );

    mesh.jwks.stop().await;
    // Fresh tokens (new subjects), so a verified-token cache cannot answer for them.
    for (case, key) in [
        ("JWKS down: rotated key", &rotated),
        ("JWKS down: first key", &mesh.key),
    ] {
        let user = ClerkClaims::user("USER");
        let response = mesh.get("/api/videos").bearer(&user.sign(key)).send().await;
        let seen = assert_reached_upstream(case, &response);
        assert_eq!(seen.header("x-user-id"), Some(user.sub.as_str()), "{case}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_on_a_new_kid_share_one_jwks_fetch() {
    const REQUESTS: usize = 200;
    let mesh = Mesh::start().await;
    let rotated = SigningKey::generate("key-2");
    let users: Vec<(String, String)> = (0..REQUESTS)
        .map(|_| {
            let user = ClerkClaims::user("USER");
            let token = user.sign(&rotated);
            (user.sub, token)
        })
        .collect();

    mesh.jwks.set_keys(&[&mesh.key, &rotated]);
    // Slow answers, so the requests pile up while the first fetch is in flight.
    mesh.jwks.set_delay(Duration::from_millis(200));
    let fetches_before = mesh.jwks.fetches();

    let mut requests = JoinSet::new();
    for (sub, token) in users {
        let request = mesh.get("/api/videos").bearer(&token);
        requests.spawn(async move { (sub, request.send().await) });
    }
    let mut failures = Vec::new();
    while let Some(joined) = requests.join_next().await {
        let (sub, response) = joined.expect("request task");
        let verified = response
            .upstream()
            .is_some_and(|seen| seen.header("x-user-id") == Some(sub.as_str()));
        if response.status != 200 || !verified {
            failures.push(response.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {REQUESTS} concurrent requests on a new kid failed; first: {}",
        failures.len(),
        failures[0]
    );

    let caused = mesh.jwks.fetches() - fetches_before;
    assert!(
        (1..=2).contains(&caused),
        "{REQUESTS} concurrent requests on one new kid caused {caused} JWKS fetches (want 1, at most 2)"
    );
}
