//! Wycheproof's JSON Web Signature vectors against our signature layer
//! (`tests/data/wycheproof/json_web_signature_test.json`, Apache-2.0: see the
//! README and LICENSE there).
//!
//! Every `invalid` vector must be rejected — at key import, at parsing, or at
//! verification. Every `valid` vector whose algorithm we implement must verify;
//! valid vectors of algorithms we do not implement (ES512) must still be rejected,
//! never accepted by accident. Payloads are not JWT claims sets, so this drives the
//! JWS layer directly.
//!
//! Six vectors of this file contradict the rest of it; each is listed in
//! [`CONTRADICTORY`] with the fact that makes it so, and the test checks that fact
//! (so a corrected file is noticed) and our verdict for it.

use portcullis::identity::{
    jws::CompactJws,
    keys::{KeySet, VerificationKey},
    Algorithm,
};
use serde_json::Value;

fn vectors() -> Value {
    read_vectors(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/wycheproof/json_web_signature_test.json"
    ))
}

/// A vector file of `tests/data/wycheproof/`; a missing one fails the test and
/// says so.
fn read_vectors(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!("cannot read {path}: {e} (the Wycheproof vectors belong in tests/data/wycheproof/)")
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// Vectors whose expected result contradicts other vectors of the same file.
const CONTRADICTORY: &[(u64, Contradiction)] = &[
    // The key declares alg PS256 but the token is PS384. Vectors 331-340 require a
    // JWK's declared alg to bind (an RS256 token under a PS512 key is invalid), so
    // we reject these too.
    (346, Contradiction::KeyDeclaresOtherAlg),
    (350, Contradiction::KeyDeclaresOtherAlg),
    // Marked invalid, yet byte-identical to vector 357, which is marked valid
    // (the padding they are named after is absent from the file).
    (367, Contradiction::SameAsValid(357)),
    (370, Contradiction::SameAsValid(357)),
    // Marked valid, yet they contain '?', outside the base64url alphabet that
    // RFC 7515 §2 mandates; a strict decoder rejects them.
    (372, Contradiction::NotBase64Url),
    (373, Contradiction::NotBase64Url),
];

#[derive(Debug, Clone, Copy)]
enum Contradiction {
    KeyDeclaresOtherAlg,
    SameAsValid(u64),
    NotBase64Url,
}

fn find_case(vectors: &Value, id: u64) -> (&Value, &Value) {
    for group in vectors["testGroups"].as_array().unwrap() {
        for case in group["tests"].as_array().unwrap() {
            if case["tcId"].as_u64() == Some(id) {
                return (group, case);
            }
        }
    }
    panic!("tcId {id} not in the file")
}

/// The verifier's answer for one vector: Ok(payload) or why not.
fn verify(key: &Value, jws: &str) -> Result<Vec<u8>, String> {
    let key = VerificationKey::from_jwk(key).map_err(|e| format!("key: {e}"))?;
    let keys = KeySet::new(vec![key]);
    let parsed = CompactJws::parse(jws).map_err(|e| format!("parse: {e}"))?;
    parsed
        .verify(&keys, &Algorithm::ALL)
        .map_err(|e| format!("verify: {e}"))
}

#[test]
fn wycheproof_json_web_signature_vectors() {
    let vectors = vectors();
    let mut checked = 0;
    let mut valid_verified = 0;
    let mut invalid_rejected = 0;
    let mut unsupported_rejected = 0;
    let mut failures = Vec::new();
    for group in vectors["testGroups"].as_array().expect("testGroups") {
        // Symmetric groups only have a `private` key: the shared secret.
        let key = group.get("public").unwrap_or(&group["private"]);
        let group_alg = key.get("alg").and_then(Value::as_str);
        for case in group["tests"].as_array().expect("tests") {
            let id = &case["tcId"];
            let jws = case["jws"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| case["jws"].to_string());
            let result = verify(key, &jws);
            checked += 1;
            if CONTRADICTORY.iter().any(|(c, _)| Some(*c) == id.as_u64()) {
                continue;
            }
            match case["result"].as_str() {
                Some("valid") => {
                    let supported = group_alg.is_none_or(|a| a.parse::<Algorithm>().is_ok());
                    match (&result, supported) {
                        (Ok(_), true) => valid_verified += 1,
                        (Err(_), false) => unsupported_rejected += 1,
                        (Err(why), true) => failures.push(format!(
                            "tcId {id} ({}) is valid but was rejected: {why}",
                            case["comment"]
                        )),
                        (Ok(_), false) => failures.push(format!(
                            "tcId {id}: accepted an algorithm we do not implement ({group_alg:?})"
                        )),
                    }
                }
                _ => match result {
                    Err(_) => invalid_rejected += 1,
                    Ok(_) => failures.push(format!(
                        "tcId {id} ({}) is invalid but verified",
                        case["comment"]
                    )),
                },
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failure(s):\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(checked, vectors["numberOfTests"].as_u64().unwrap() as usize);
    println!(
        "wycheproof JWS: {checked} vectors: {valid_verified} valid verified, {invalid_rejected} invalid rejected, {unsupported_rejected} valid-but-unsupported (ES512) rejected"
    );
    assert!(valid_verified > 0 && invalid_rejected > 300);
}

#[test]
fn contradictory_vectors_are_what_we_say_and_get_a_strict_verdict() {
    let vectors = vectors();
    for (id, why) in CONTRADICTORY {
        let (group, case) = find_case(&vectors, *id);
        let key = group.get("public").unwrap_or(&group["private"]);
        let jws = case["jws"].as_str().unwrap();
        let verdict = verify(key, jws);
        match why {
            Contradiction::KeyDeclaresOtherAlg => {
                let header = jws.split('.').next().unwrap();
                let header: Value = serde_json::from_slice(
                    &base64::Engine::decode(
                        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                        header,
                    )
                    .unwrap(),
                )
                .unwrap();
                assert_ne!(header["alg"], key["alg"], "tcId {id}: the algs differ");
                assert!(verdict.is_err(), "tcId {id}: a JWK's declared alg binds");
            }
            Contradiction::SameAsValid(twin) => {
                let (_, valid) = find_case(&vectors, *twin);
                assert_eq!(valid["result"], "valid");
                assert_eq!(
                    valid["jws"].as_str(),
                    Some(jws),
                    "tcId {id} equals tcId {twin}"
                );
                assert!(
                    verdict.is_ok(),
                    "tcId {id}: same bytes as a valid vector, same verdict"
                );
            }
            Contradiction::NotBase64Url => {
                assert!(
                    jws.contains('?'),
                    "tcId {id}: carries a non-base64url character"
                );
                assert!(
                    verdict.is_err(),
                    "tcId {id}: strict base64url decoding rejects it"
                );
            }
        }
    }
}

/// Wycheproof's JSON Web Key vectors: key sets that must be refused (mixed
/// symmetry, duplicate kid, ROCA, small RSA, e = 1, short or empty HMAC keys, AES
/// keys, wrong alg/curve/kty/use, points off the curve) and sets that must verify.
#[test]
fn wycheproof_json_web_key_vectors() {
    let vectors = read_vectors(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/wycheproof/json_web_key_test.json"
    ));
    let mut failures = Vec::new();
    let mut checked = 0;
    for group in vectors["testGroups"].as_array().unwrap() {
        let set = group.get("public").unwrap_or(&group["private"]);
        for case in group["tests"].as_array().unwrap() {
            checked += 1;
            let verdict = KeySet::from_jwks(set.to_string().as_bytes())
                .map_err(|e| format!("key set: {e}"))
                .and_then(|(keys, _)| {
                    CompactJws::parse(case["jws"].as_str().unwrap())
                        .and_then(|jws| jws.verify(&keys, &Algorithm::ALL))
                        .map_err(|e| e.to_string())
                });
            let want_valid = case["result"] == "valid";
            if verdict.is_ok() != want_valid {
                failures.push(format!(
                    "tcId {} ({} / {}): expected {}, got {verdict:?}",
                    case["tcId"], group["comment"], case["comment"], case["result"]
                ));
            }
        }
    }
    assert_eq!(checked, vectors["numberOfTests"].as_u64().unwrap() as usize);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
