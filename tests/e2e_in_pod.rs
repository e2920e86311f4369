//! End to end, Envoy and portcullis in one pod (docs/in-pod.md): portcullis'
//! gRPC listener on a Unix domain socket (`server.grpc_listen: unix:PATH`), the
//! shipped bootstrap `mesh/kubernetes/overlays/in-pod/envoy.yaml` (also
//! `mesh/envoy/front-proxy-uds.yaml`) rendered with a temporary socket path and
//! ephemeral ports. Needs Envoy: run `scripts/test`, or set `ENVOY_BIN`.

mod support;

use std::net::SocketAddr;
use std::time::Duration;
use support::{
    envoy, free_port, ClerkClaims, EchoUpstream, Envoy, JwksServer, Portcullis, PortcullisConfig,
    SigningKey,
};

const BOOTSTRAP: &str = include_str!("../mesh/kubernetes/overlays/in-pod/envoy.yaml");

/// The shipped bootstrap with its socket path and addresses replaced (each must
/// occur exactly once, so the file and this test cannot drift apart).
fn render(
    socket: &std::path::Path,
    listener: SocketAddr,
    app: SocketAddr,
    admin: SocketAddr,
) -> String {
    let edits = [
        (
            "pipe: { path: /run/portcullis/grpc.sock }".to_owned(),
            format!("pipe: {{ path: {} }}", socket.display()),
        ),
        (
            "socket_address: { address: 0.0.0.0, port_value: 8080 }".to_owned(),
            format!(
                "socket_address: {{ address: {}, port_value: {} }}",
                listener.ip(),
                listener.port()
            ),
        ),
        (
            "socket_address: { address: app.default.svc.cluster.local, port_value: 8000 }"
                .to_owned(),
            format!(
                "socket_address: {{ address: {}, port_value: {} }}",
                app.ip(),
                app.port()
            ),
        ),
        (
            "socket_address: { address: 127.0.0.1, port_value: 9901 }".to_owned(),
            format!(
                "socket_address: {{ address: {}, port_value: {} }}",
                admin.ip(),
                admin.port()
            ),
        ),
    ];
    let mut yaml = BOOTSTRAP.to_owned();
    for (from, to) in edits {
        assert_eq!(
            yaml.matches(&from).count(),
            1,
            "envoy.yaml must contain `{from}` once"
        );
        yaml = yaml.replace(&from, &to);
    }
    yaml
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_checks_over_a_unix_socket_and_fails_closed_without_it() {
    envoy::envoy_bin();
    let key = SigningKey::generate("in-pod");
    let jwks = JwksServer::start(&[&key]).await;
    let upstream = EchoUpstream::start().await;
    let socket_dir = tempfile::tempdir().expect("temporary directory");
    let socket = socket_dir.path().join("grpc.sock");
    let mut portcullis = Portcullis::start(
        &PortcullisConfig::user_traffic(jwks.uri())
            .with_grpc_listen(&format!("unix:{}", socket.display())),
    )
    .await;
    let mode = std::fs::metadata(&socket).expect("the socket file exists");
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o660,
        "the socket is for the pod's group only"
    );

    let listener = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let dir = tempfile::tempdir().expect("temporary directory");
    let yaml = render(&socket, listener, upstream.addr(), admin);
    let envoy = Envoy::start_bootstrap(dir, &yaml, listener, admin).await;

    // Allowed, with the verified context and the spoofed role stripped.
    let user = ClerkClaims::user("USER");
    let token = user.sign(&key);
    let response = envoy
        .get("/api/videos")
        .bearer(&token)
        .header("x-user-role", "ADMIN")
        .send()
        .await;
    assert_eq!(response.status, 200, "allowed over the socket: {response}");
    let seen = upstream.seen().pop().expect("the upstream saw the request");
    assert_eq!(seen.header("x-user-id"), Some(user.sub.as_str()));
    assert_eq!(
        seen.header("x-user-role"),
        Some("USER"),
        "the spoofed role never arrives"
    );

    // Denied by portcullis, answered through the socket.
    let before = upstream.seen().len();
    let response = envoy.get("/api/admin").bearer(&token).send().await;
    assert_eq!(response.status, 403, "{response}");
    let response = envoy.get("/api/videos").send().await;
    assert_eq!(response.status, 401, "{response}");
    assert!(response.header("www-authenticate").is_some());
    assert_eq!(
        upstream.seen().len(),
        before,
        "no deny reached the upstream"
    );

    // A graceful stop removes the socket file; with portcullis gone, Envoy
    // fails closed.
    portcullis.signal("INT");
    let status = portcullis.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "exit 0 on SIGINT: {status}");
    assert!(!socket.exists(), "the socket file is removed on shutdown");
    let response = envoy.get("/api/videos").bearer(&token).send().await;
    assert_eq!(
        response.status, 503,
        "fail closed without portcullis: {response}"
    );
    assert_eq!(
        upstream.seen().len(),
        before,
        "nothing reached the upstream unchecked"
    );

    // Restarted on the same path (as a container restart would), it serves again.
    portcullis.restart().await;
    let mut status = 0;
    for _ in 0..50 {
        status = envoy.get("/api/videos").bearer(&token).send().await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 200,
        "served again after a restart on the same socket path"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_file_is_replaced_and_any_other_file_refused() {
    let jwks = JwksServer::start(&[&SigningKey::generate("stale")]).await;
    let dir = tempfile::tempdir().expect("temporary directory");
    // What a killed process leaves behind: a socket file nobody listens on.
    let socket = dir.path().join("grpc.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).expect("bind a stale socket"));
    assert!(socket.exists());
    let portcullis = Portcullis::start(
        &PortcullisConfig::user_traffic(jwks.uri())
            .with_grpc_listen(&format!("unix:{}", socket.display())),
    )
    .await;
    let channel = tokio::net::UnixStream::connect(&socket).await;
    assert!(channel.is_ok(), "portcullis listens on the replaced socket");
    drop(channel);
    drop(portcullis);

    // A regular file at the path is never deleted: `serve` refuses to start.
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "data").expect("write a file");
    let config = dir.path().join("portcullis.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  grpc_listen: unix:{}\n  http_listen: 127.0.0.1:0\npolicy: policy.yaml\n",
            file.display()
        ),
    )
    .expect("write config");
    std::fs::write(dir.path().join("policy.yaml"), "rules: []\n").expect("write policy");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("run portcullis");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not a socket"),
        "the error says why: {stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "data",
        "the file is untouched"
    );
}
