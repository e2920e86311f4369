//! The bundled certificate and token tool (docs/configuration.md, certs/README.md; issue 5) as a user runs
//! it: what `ca`, `cert` and `token` write, checked by OpenSSL (`openssl verify`,
//! `openssl x509 -text`) rather than by our own code; `cert inspect` verdicts on
//! hand-made bad certificates; deterministic renewal; exit codes; `server.tls` in
//! the config. Needs the `openssl` command.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis::ca::profile::{self, LEAF_TTL};
use portcullis::ca::{CaDir, KeyedCert, LeafSpec, RenewOutcome, RenewThreshold, Validity};
use portcullis::identity::TrustDomain;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use serde_json::Value;
use support::pki::{portcullis, portcullis_ok, TestPki};

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("run openssl (it must be installed)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 temporary path")
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn openssl_verifies_the_chain_and_reads_every_field_of_each_profile() {
    let pki = TestPki::new("example.org");
    let certs = pki.certs();
    let root = certs.join("ca/root-cert.pem");
    let intermediate = certs.join("ca/intermediate-cert.pem");
    let out = pki.issue("web", &["web.default.svc", "localhost"]);
    let leaf = out.join("cert.pem");

    let verify = openssl(&[
        "verify",
        "-CAfile",
        p(&root),
        "-untrusted",
        p(&intermediate),
        p(&leaf),
    ]);
    assert!(verify.trim_end().ends_with(": OK"), "{verify}");
    // chain.pem carries the intermediate, bundle.pem is the root.
    let verify = openssl(&[
        "verify",
        "-CAfile",
        p(&out.join("bundle.pem")),
        "-untrusted",
        p(&out.join("chain.pem")),
        p(&leaf),
    ]);
    assert!(verify.trim_end().ends_with(": OK"), "{verify}");

    let text = openssl(&["x509", "-in", p(&leaf), "-noout", "-text"]);
    for expected in [
        "Version: 3 (0x2)",
        "Signature Algorithm: ecdsa-with-SHA256",
        "ASN1 OID: prime256v1",
        "X509v3 Subject Alternative Name: critical",
        "URI:spiffe://example.org/ns/default/sa/web, DNS:web.default.svc, DNS:localhost",
        "X509v3 Key Usage: critical",
        "X509v3 Basic Constraints: critical",
        "CA:FALSE",
        "TLS Web Server Authentication, TLS Web Client Authentication",
        "X509v3 Authority Key Identifier",
    ] {
        assert!(text.contains(expected), "leaf lacks {expected:?}:\n{text}");
    }
    let ku = text
        .split("X509v3 Key Usage: critical")
        .nth(1)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap();
    assert_eq!(ku.trim(), "Digital Signature", "{text}");
    let subject = openssl(&["x509", "-in", p(&leaf), "-noout", "-subject"]);
    assert_eq!(subject.trim(), "subject=", "empty subject");
    assert_eq!(text.matches("URI:").count(), 1, "exactly one URI SAN");
    let serial = openssl(&["x509", "-in", p(&leaf), "-noout", "-serial"]);
    let hex = serial.trim().trim_start_matches("serial=");
    assert_eq!(hex.len(), 40, "a 20-octet serial: {serial}");
    assert!(
        u8::from_str_radix(&hex[..2], 16).unwrap() < 0x80,
        "positive, 159 bits"
    );

    let dates = openssl(&["x509", "-in", p(&leaf), "-noout", "-startdate", "-enddate"]);
    assert!(
        dates.contains("notBefore=") && dates.contains("notAfter="),
        "{dates}"
    );

    let root_text = openssl(&["x509", "-in", p(&root), "-noout", "-text"]);
    for expected in [
        "CA:TRUE",
        "Certificate Sign, CRL Sign",
        "URI:spiffe://example.org",
        "X509v3 Key Usage: critical",
    ] {
        assert!(
            root_text.contains(expected),
            "root lacks {expected:?}:\n{root_text}"
        );
    }
    let inter_text = openssl(&["x509", "-in", p(&intermediate), "-noout", "-text"]);
    assert!(inter_text.contains("CA:TRUE, pathlen:0"), "{inter_text}");
    assert!(
        inter_text.contains("Certificate Sign, CRL Sign"),
        "{inter_text}"
    );

    // Keys: PKCS#8, 0600, and they match their certificates.
    for (cert, key) in [
        (leaf.clone(), out.join("key.pem")),
        (root.clone(), certs.join("ca/root-key.pem")),
        (intermediate.clone(), certs.join("ca/intermediate-key.pem")),
    ] {
        assert_eq!(mode(&key), 0o600, "{}", key.display());
        let pem = std::fs::read_to_string(&key).unwrap();
        assert!(
            pem.starts_with("-----BEGIN PRIVATE KEY-----"),
            "PKCS#8: {}",
            key.display()
        );
        let from_key = openssl(&["pkey", "-in", p(&key), "-pubout"]);
        let from_cert = openssl(&["x509", "-in", p(&cert), "-noout", "-pubkey"]);
        assert_eq!(
            from_key,
            from_cert,
            "{} matches {}",
            key.display(),
            cert.display()
        );
    }
    assert_eq!(mode(&leaf), 0o644);
}

#[test]
fn issued_without_an_intermediate_the_root_signs() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    portcullis_ok(&[
        "ca",
        "init",
        "--dir",
        p(&certs),
        "--trust-domain",
        "mesh.test",
    ]);
    let out = dir.path().join("api");
    portcullis_ok(&[
        "cert",
        "issue",
        "--spiffe-id",
        "spiffe://mesh.test/api",
        "--ttl",
        "1h",
        "--out",
        p(&out),
        "--dir",
        p(&certs),
    ]);
    let verify = openssl(&[
        "verify",
        "-CAfile",
        p(&certs.join("bundle.pem")),
        p(&out.join("cert.pem")),
    ]);
    assert!(verify.trim_end().ends_with(": OK"), "{verify}");
    assert_eq!(
        std::fs::read_to_string(out.join("cert.pem")).unwrap(),
        std::fs::read_to_string(out.join("chain.pem")).unwrap(),
        "no intermediate: the chain is the leaf"
    );
    let end = openssl(&[
        "x509",
        "-in",
        p(&out.join("cert.pem")),
        "-noout",
        "-checkend",
        "3500",
    ]);
    assert!(end.contains("will not expire"), "{end}");
}

#[test]
fn ca_init_refuses_to_overwrite_without_force() {
    let pki = TestPki::new("example.org");
    let before = std::fs::read(pki.bundle()).unwrap();
    let out = portcullis(&["ca", "init", "--dir", pki.certs_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("a CA already exists") && stderr(&out).contains("--force"),
        "{}",
        stderr(&out)
    );
    assert_eq!(std::fs::read(pki.bundle()).unwrap(), before, "untouched");
    portcullis_ok(&["ca", "init", "--dir", pki.certs_str(), "--force"]);
    assert_ne!(std::fs::read(pki.bundle()).unwrap(), before, "replaced");
    assert!(
        !pki.certs().join("ca/intermediate-cert.pem").exists(),
        "the old intermediate is gone"
    );
}

#[test]
fn istio_plug_in_ca_files_and_the_kubectl_command() {
    let pki = TestPki::new("cluster.local");
    let istio = pki.path("istio");
    let out = portcullis_ok(&[
        "ca",
        "intermediate",
        "--dir",
        pki.certs_str(),
        "--istio-dir",
        p(&istio),
    ]);
    let text = stdout(&out);
    assert!(
        text.contains("kubectl create secret generic cacerts -n istio-system"),
        "{text}"
    );
    for name in [
        "ca-cert.pem",
        "ca-key.pem",
        "root-cert.pem",
        "cert-chain.pem",
    ] {
        assert!(
            text.contains(&format!("--from-file={}", istio.join(name).display())),
            "{name}: {text}"
        );
        assert!(istio.join(name).is_file(), "{name}");
    }
    assert_eq!(mode(&istio.join("ca-key.pem")), 0o600);
    let verify = openssl(&[
        "verify",
        "-CAfile",
        p(&istio.join("root-cert.pem")),
        p(&istio.join("ca-cert.pem")),
    ]);
    assert!(verify.trim_end().ends_with(": OK"), "{verify}");
    let ca_cert = std::fs::read_to_string(istio.join("ca-cert.pem")).unwrap();
    let root = std::fs::read_to_string(istio.join("root-cert.pem")).unwrap();
    assert_eq!(
        std::fs::read_to_string(istio.join("cert-chain.pem")).unwrap(),
        format!("{ca_cert}{root}")
    );
    assert_eq!(
        std::fs::read_to_string(pki.certs().join("ca/intermediate-cert.pem")).unwrap(),
        ca_cert
    );
    // Leaves issued from now on chain through this intermediate.
    let web = pki.issue("web", &[]);
    let verify = openssl(&[
        "verify",
        "-CAfile",
        p(&istio.join("root-cert.pem")),
        "-untrusted",
        p(&istio.join("ca-cert.pem")),
        p(&web.join("cert.pem")),
    ]);
    assert!(verify.trim_end().ends_with(": OK"), "{verify}");
}

#[test]
fn cert_inspect_of_a_good_certificate() {
    let pki = TestPki::new("example.org");
    let web = pki.issue("web", &["localhost"]);
    let out = portcullis_ok(&["cert", "inspect", p(&web.join("cert.pem"))]);
    let text = stdout(&out);
    for expected in [
        "SPIFFE ID  spiffe://example.org/ns/default/sa/web",
        "DNS SANs   localhost",
        "subject    (empty)",
        "issuer     O=portcullis, CN=portcullis intermediate CA example.org",
        "key        ECDSA P-256",
        "CA         no",
        "verdict    OK",
    ] {
        assert!(text.contains(expected), "{expected:?} missing:\n{text}");
    }
    assert!(
        text.contains("23h 59m left") || text.contains("1d left"),
        "{text}"
    );
    let out = portcullis_ok(&["cert", "inspect", "--json", p(&web.join("chain.pem"))]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], true);
    assert_eq!(
        report["spiffe_id"],
        "spiffe://example.org/ns/default/sa/web"
    );
    assert_eq!(report["chain_certificates"], 1);
    assert_eq!(report["chain_verified"], true);
    assert_eq!(report["problems"], serde_json::json!([]));
}

/// 2020-01-01T00:00:00Z: windows far in the past, for expired certificates.
fn t2020() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_577_836_800)
}

fn signer_of(ca: &CaDir) -> KeyedCert {
    ca.intermediate_ca().unwrap().expect("an intermediate")
}

/// A leaf built by hand with rcgen (to break one SVID rule), signed by `signer`.
fn hand_made(signer: &KeyedCert, edit: impl FnOnce(&mut CertificateParams)) -> String {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let issuer = Issuer::from_ca_cert_pem(
        &signer.cert_pem,
        KeyPair::from_pem(&signer.key_pem).unwrap(),
    )
    .unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(
        "spiffe://example.org/ns/default/sa/web".try_into().unwrap(),
    )];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(60)).into();
    params.not_after = (now + Duration::from_secs(3600)).into();
    edit(&mut params);
    let cert = params.signed_by(&key, &issuer).unwrap();
    // The file holds the leaf and the intermediate, like chain.pem.
    format!("{}{}", cert.pem(), signer.cert_pem)
}

fn inspect_fails(pki: &TestPki, name: &str, pem: &str, expected: &str) {
    let file = pki.path(&format!("{name}.pem"));
    std::fs::write(&file, pem).unwrap();
    let out = portcullis(&["cert", "inspect", p(&file), "--bundle", p(&pki.bundle())]);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{name}: exit 1 expected:\n{text}{}",
        stderr(&out)
    );
    assert!(text.contains("verdict    INVALID"), "{name}:\n{text}");
    assert!(
        text.contains(expected),
        "{name}: {expected:?} missing:\n{text}"
    );
    let out = portcullis(&[
        "cert",
        "inspect",
        "--json",
        p(&file),
        "--bundle",
        p(&pki.bundle()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], false);
    assert!(
        report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m.as_str().unwrap().contains(expected)),
        "{name}: {report}"
    );
}

#[test]
fn cert_inspect_names_the_broken_rule_and_exits_1() {
    let pki = TestPki::new("example.org");
    let ca = CaDir::new(pki.certs());
    let signer = signer_of(&ca);

    let two_uris = hand_made(&signer, |params| {
        params.subject_alt_names.push(SanType::URI(
            "spiffe://example.org/ns/default/sa/admin"
                .try_into()
                .unwrap(),
        ));
    });
    inspect_fails(&pki, "two-uris", &two_uris, "2 URI SANs (spiffe://example.org/ns/default/sa/web, spiffe://example.org/ns/default/sa/admin): an X509-SVID carries exactly one SPIFFE ID");

    let ca_leaf = hand_made(&signer, |params| {
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ];
    });
    inspect_fails(
        &pki,
        "ca-leaf",
        &ca_leaf,
        "basicConstraints cA=true: a leaf X509-SVID must not be a CA certificate",
    );
    inspect_fails(
        &pki,
        "ca-leaf",
        &ca_leaf,
        "key usage has keyCertSign or cRLSign",
    );

    // Issued by the right CA, for another trust domain (the library's leaf
    // profile does not check membership; `cert issue` does).
    let other_td = TrustDomain::new("other.org")
        .unwrap()
        .service("default", "web")
        .unwrap();
    let spec = LeafSpec::new(other_td, vec![]).unwrap();
    let foreign = profile::leaf(
        &spec,
        &signer,
        Validity::starting_at(SystemTime::now(), LEAF_TTL),
    )
    .unwrap();
    inspect_fails(
        &pki,
        "wrong-td",
        &format!("{}{}", foreign.cert_pem, signer.cert_pem),
        "wrong trust domain: spiffe://other.org/ns/default/sa/web is in other.org, but the expected trust domain is example.org",
    );

    // Expired: a fixed window in 2020.
    let spec = LeafSpec::new(
        TrustDomain::new("example.org")
            .unwrap()
            .service("default", "web")
            .unwrap(),
        vec![],
    )
    .unwrap();
    let expired = profile::leaf(&spec, &signer, Validity::starting_at(t2020(), LEAF_TTL)).unwrap();
    inspect_fails(
        &pki,
        "expired",
        &format!("{}{}", expired.cert_pem, signer.cert_pem),
        "expired at 2020-01-02T00:00:00Z: renew it",
    );

    // A perfectly good SVID of another CA with the same trust domain.
    let other = TestPki::new("example.org");
    let theirs = other.issue("web", &[]);
    inspect_fails(
        &pki,
        "other-root",
        &std::fs::read_to_string(theirs.join("chain.pem")).unwrap(),
        "the chain does not verify to the bundle",
    );

    // And an SVID without any URI SAN.
    let no_uri = hand_made(&signer, |params| {
        params.subject_alt_names = vec![SanType::DnsName("web.example.org".try_into().unwrap())];
    });
    inspect_fails(&pki, "no-uri", &no_uri, "no URI SAN");
}

#[test]
fn renewal_is_decided_by_the_share_of_the_lifetime_and_keeps_the_identity() {
    let pki = TestPki::new("example.org");
    let ca = CaDir::new(pki.certs());
    // An explicit instant inside the CA's lifetime: the next midnight UTC.
    let today = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86400;
    let t0 = UNIX_EPOCH + Duration::from_secs((today + 1) * 86400);
    let out = pki.path("web");
    let spec = LeafSpec::new(
        TrustDomain::new("example.org")
            .unwrap()
            .service("prod", "web")
            .unwrap(),
        vec!["web.prod.svc".into()],
    )
    .unwrap();
    ca.issue(&spec, Validity::starting_at(t0, LEAF_TTL), &out)
        .unwrap();
    let first = std::fs::read_to_string(out.join("cert.pem")).unwrap();
    let first_key = std::fs::read_to_string(out.join("key.pem")).unwrap();

    // 24h + 1 min lifetime starting at t0 - 1 min: 50% is at t0 + 12h - 30s.
    let half = RenewThreshold::default();
    let kept = ca
        .renew(&out, half, None, t0 + Duration::from_secs(12 * 3600 - 31))
        .unwrap();
    assert!(
        matches!(&kept, RenewOutcome::Kept { due_at, .. } if *due_at == t0 + Duration::from_secs(12 * 3600 - 30)),
        "{kept:?}"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("cert.pem")).unwrap(),
        first,
        "kept untouched"
    );

    let now = t0 + Duration::from_secs(12 * 3600 - 30);
    let renewed = ca.renew(&out, half, None, now).unwrap();
    assert!(
        matches!(&renewed, RenewOutcome::Renewed { id, not_after } if id.to_string() == "spiffe://example.org/ns/prod/sa/web" && *not_after == now + LEAF_TTL),
        "{renewed:?}"
    );
    let second = std::fs::read_to_string(out.join("cert.pem")).unwrap();
    assert_ne!(second, first);
    assert_ne!(
        std::fs::read_to_string(out.join("key.pem")).unwrap(),
        first_key,
        "a new key"
    );
    assert_eq!(mode(&out.join("key.pem")), 0o600);
    let report = portcullis::ca::inspect::inspect(
        &std::fs::read(out.join("chain.pem")).unwrap(),
        None,
        &std::fs::read(pki.bundle()).unwrap(),
        None,
        now,
    )
    .unwrap();
    assert!(report.valid, "{:?}", report.problems);
    assert_eq!(
        report.spiffe_id.as_deref(),
        Some("spiffe://example.org/ns/prod/sa/web")
    );
    assert_eq!(report.dns_sans, vec!["web.prod.svc"]);
    // No temporary files left behind.
    let mut names: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["bundle.pem", "cert.pem", "chain.pem", "key.pem"]);

    // An expired certificate is always due.
    ca.issue(&spec, Validity::starting_at(t2020(), LEAF_TTL), &out)
        .unwrap();
    let zero_share = RenewThreshold::new(1.0).unwrap();
    assert!(matches!(
        ca.renew(&out, zero_share, None, SystemTime::now()).unwrap(),
        RenewOutcome::Renewed { .. }
    ));
}

#[test]
fn cert_renew_on_the_command_line() {
    let pki = TestPki::new("example.org");
    let web = pki.issue("web", &[]);
    let before = std::fs::read(web.join("cert.pem")).unwrap();
    let out = portcullis_ok(&["cert", "renew", "--out", p(&web), "--dir", pki.certs_str()]);
    assert!(
        stdout(&out).starts_with("kept spiffe://example.org/ns/default/sa/web"),
        "{}",
        stdout(&out)
    );
    assert_eq!(std::fs::read(web.join("cert.pem")).unwrap(), before);
    let out = portcullis_ok(&[
        "cert",
        "renew",
        "--out",
        p(&web),
        "--if-within",
        "0%",
        "--dir",
        pki.certs_str(),
    ]);
    assert!(
        stdout(&out).starts_with("renewed spiffe://example.org/ns/default/sa/web"),
        "{}",
        stdout(&out)
    );
    assert_ne!(std::fs::read(web.join("cert.pem")).unwrap(), before);
    portcullis_ok(&["cert", "inspect", p(&web.join("cert.pem"))]);
    let out = portcullis(&[
        "cert",
        "renew",
        "--out",
        p(&pki.path("nothing")),
        "--dir",
        pki.certs_str(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cert.pem"), "{}", stderr(&out));
}

#[test]
fn tokens_are_signed_by_the_key_the_jwks_publishes() {
    let pki = TestPki::new("example.org");
    let out = portcullis_ok(&[
        "token",
        "issue",
        "--service",
        "videos",
        "--audience",
        "spiffe://example.org/ns/default/sa/channels",
        "--dir",
        pki.certs_str(),
    ]);
    assert!(
        stderr(&out).contains("created the token signing key"),
        "{}",
        stderr(&out)
    );
    let token = stdout(&out).trim().to_owned();
    let key = pki.certs().join("tokens/signing-key.pem");
    assert_eq!(mode(&key), 0o600);
    let jwks = portcullis_ok(&["token", "jwks", "--dir", pki.certs_str()]);
    assert!(
        !stderr(&jwks).contains("created"),
        "the key is created once"
    );
    let document: Value = serde_json::from_slice(&jwks.stdout).unwrap();
    let file: Value =
        serde_json::from_slice(&std::fs::read(pki.certs().join("tokens/jwks.json")).unwrap())
            .unwrap();
    assert_eq!(document, file, "jwks.json is what `token jwks` prints");
    let jwk = &document["keys"][0];
    assert_eq!(
        (
            jwk["kty"].as_str(),
            jwk["crv"].as_str(),
            jwk["alg"].as_str()
        ),
        (Some("EC"), Some("P-256"), Some("ES256"))
    );
    assert!(jwk.get("d").is_none(), "no private material");

    let (keys, skipped) = portcullis::identity::keys::KeySet::from_jwks(&jwks.stdout).unwrap();
    assert!(skipped.is_empty());
    let jws = portcullis::identity::jws::CompactJws::parse(&token).unwrap();
    assert_eq!(jws.kid(), jwk["kid"].as_str());
    let claims: Value = serde_json::from_slice(
        &jws.verify(&keys, &[portcullis::identity::Algorithm::ES256])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], "spiffe://example.org/ns/default/sa/videos");
    assert_eq!(claims["iss"], "spiffe://example.org");
    assert_eq!(
        claims["aud"],
        serde_json::json!(["spiffe://example.org/ns/default/sa/channels"])
    );
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        900
    );

    // Default audience: the trust domain.
    let out = portcullis_ok(&[
        "token",
        "issue",
        "--service",
        "videos",
        "--ttl",
        "1h",
        "--dir",
        pki.certs_str(),
    ]);
    let token = stdout(&out);
    let jws = portcullis::identity::jws::CompactJws::parse(token.trim()).unwrap();
    let claims: Value = serde_json::from_slice(
        &jws.verify(&keys, &[portcullis::identity::Algorithm::ES256])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], serde_json::json!(["spiffe://example.org"]));
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        3600
    );
}

#[test]
fn exit_codes_invalid_input_is_1_usage_is_2() {
    let pki = TestPki::new("example.org");
    let certs = pki.certs_str();
    for (args, code, says) in [
        (vec!["cert", "issue", "--dir", certs], 2, "--service"),
        (
            vec![
                "cert",
                "issue",
                "--service",
                "a",
                "--spiffe-id",
                "spiffe://example.org/a",
                "--dir",
                certs,
            ],
            2,
            "cannot be used with",
        ),
        (
            vec![
                "cert",
                "issue",
                "--service",
                "a",
                "--ttl",
                "soon",
                "--dir",
                certs,
            ],
            2,
            "invalid lifetime",
        ),
        (
            vec!["cert", "renew", "--out", certs, "--if-within", "150%"],
            2,
            "percentage",
        ),
        (
            vec![
                "cert",
                "issue",
                "--spiffe-id",
                "spiffe://Example.org/a",
                "--dir",
                certs,
            ],
            1,
            "trust domain character 'E'",
        ),
        (
            vec![
                "cert",
                "issue",
                "--spiffe-id",
                "spiffe://other.org/a",
                "--dir",
                certs,
            ],
            1,
            "is not in this CA's trust domain example.org",
        ),
        (
            vec!["cert", "issue", "--service", "a/b", "--dir", certs],
            1,
            "path character '/'",
        ),
        (
            vec![
                "cert",
                "issue",
                "--service",
                "a",
                "--dns",
                "bad name",
                "--dir",
                certs,
            ],
            1,
            "is not a DNS name",
        ),
        (
            vec![
                "ca",
                "init",
                "--trust-domain",
                "Example.org",
                "--dir",
                "/nonexistent/never",
            ],
            1,
            "trust domain character",
        ),
        (
            vec![
                "cert",
                "issue",
                "--service",
                "a",
                "--dir",
                "/nonexistent/never",
            ],
            1,
            "portcullis ca init --dir /nonexistent/never",
        ),
        (
            vec![
                "token",
                "issue",
                "--service",
                "a",
                "--dir",
                "/nonexistent/never",
            ],
            1,
            "portcullis ca init",
        ),
        (
            vec![
                "cert",
                "inspect",
                "/nonexistent/never.pem",
                "--bundle",
                "/nonexistent/b.pem",
            ],
            1,
            "/nonexistent/never.pem",
        ),
    ] {
        let out = portcullis(&args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(says),
            "{args:?}: {says:?} missing: {}",
            stderr(&out)
        );
    }
}

#[test]
fn help_describes_the_commands() {
    for (args, expected) in [
        (vec!["ca", "--help"], vec!["init", "intermediate"]),
        (
            vec!["ca", "init", "--help"],
            vec!["--trust-domain", "--dir", "--force", "10 years"],
        ),
        (
            vec!["ca", "intermediate", "--help"],
            vec!["--istio-dir", "--ttl", "pathlen 0", "[default: 2y]"],
        ),
        (
            vec!["cert", "issue", "--help"],
            vec![
                "--service",
                "--namespace",
                "--spiffe-id",
                "--dns",
                "[default: 24h]",
                "--out",
            ],
        ),
        (
            vec!["cert", "inspect", "--help"],
            vec!["--bundle", "--json", "Exit 1"],
        ),
        (
            vec!["cert", "renew", "--help"],
            vec!["--out", "--if-within", "[default: 50%]"],
        ),
        (
            vec!["token", "issue", "--help"],
            vec!["--service", "--audience", "[default: 15m]"],
        ),
        (vec!["token", "jwks", "--help"], vec!["JWKS"]),
    ] {
        let out = portcullis_ok(&args);
        for word in expected {
            assert!(
                stdout(&out).contains(word),
                "{args:?}: {word:?} missing:\n{}",
                stdout(&out)
            );
        }
    }
}

#[test]
fn server_tls_in_the_config_loads_the_files_and_reports_problems_with_lines() {
    let pki = TestPki::new("example.org");
    let server = pki.issue("portcullis", &["localhost"]);
    let dir = pki.root();
    std::fs::write(dir.join("policy.yaml"), "default: deny\nrules: []\n").unwrap();
    let config = |tls: &str| {
        format!("server:\n  grpc_listen: 127.0.0.1:0\n  http_listen: 127.0.0.1:0\n{tls}policy: policy.yaml\n")
    };
    let good = config("  tls:\n    cert: certs/portcullis/chain.pem\n    key: certs/portcullis/key.pem\n    client_ca: certs/bundle.pem\n");
    let loaded = portcullis::config::Config::parse("portcullis.yaml", &good, dir, None).unwrap();
    let tls = loaded.tls.unwrap();
    assert_eq!(
        tls.cert,
        server.join("chain.pem"),
        "relative to the config's directory"
    );
    assert_eq!(tls.client_ca, Some(pki.bundle()));

    for (tls, expected) in [
        ("  tls:\n    cert: certs/portcullis/chain.pem\n    key: certs/missing.pem\n", "portcullis.yaml:6: server.tls.key: cannot read"),
        ("  tls:\n    cert: certs/portcullis/chain.pem\n    key: certs/ca/root-key.pem\n", "portcullis.yaml:6: server.tls.key: the certificate and key do not make a TLS identity"),
        ("  tls:\n    cert: certs/portcullis/key.pem\n    key: certs/portcullis/key.pem\n", "portcullis.yaml:5: server.tls.cert:"),
        ("  tls:\n    cert: certs/portcullis/chain.pem\n    key: certs/portcullis/key.pem\n    client_ca: certs/portcullis/key.pem\n", "portcullis.yaml:7: server.tls.client_ca:"),
        ("  tls:\n    cert: a\n    key: b\n    ca: c\n", "unknown field `ca`"),
    ] {
        let err = portcullis::config::Config::parse("portcullis.yaml", &config(tls), dir, None).unwrap_err();
        let errors = err.errors().join("\n");
        assert!(errors.contains(expected), "{expected:?} missing from:\n{errors}");
    }
}
