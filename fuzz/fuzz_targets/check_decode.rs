//! The `Check` reader (`portcullis::ext_authz::check_request`) on any bytes: it
//! never panics, agrees with prost's decoding of the same bytes with
//! `envoy-types`' `CheckRequest` wherever prost accepts them, and never returns
//! a string that is not in the input (the relation is spelled out in
//! `tests/check_decode/oracle.rs`, which the property test shares).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/check_decode/oracle.rs"]
mod oracle;

fuzz_target!(|data: &[u8]| {
    if let Err(why) = oracle::check(data) {
        panic!("{why}");
    }
});
