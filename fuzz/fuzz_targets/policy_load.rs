//! The policy loader on any text: it never panics (a bad policy is a `LoadError`
//! with its file and line), and each error names the file it is about.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::policy::{LoadError, LoadOptions, Policy};

fuzz_target!(|text: &str| {
    let options = LoadOptions {
        trust_domain: "example.org".into(),
        federated_trust_domains: vec!["partner.example".into()],
    };
    match Policy::parse("policy.yaml", text, &options) {
        Ok(_) => {}
        Err(LoadError::Invalid(errors)) => {
            assert!(!errors.is_empty(), "an invalid policy without an error");
            assert!(errors.iter().all(|e| e.file == "policy.yaml"));
        }
        Err(e @ LoadError::Read { .. }) => panic!("parsing text read a file: {e}"),
    }
});
