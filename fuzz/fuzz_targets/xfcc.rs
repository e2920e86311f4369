//! The `x-forwarded-client-cert` parser on any text: it never panics, and what it
//! accepts has at least one element, each with at least one pair.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::identity::xfcc::{self, XfccElement};

fuzz_target!(|header: &str| {
    let Ok(elements) = xfcc::parse(header) else {
        return;
    };
    assert!(!elements.is_empty(), "{header:?} parsed to no element");
    assert!(
        !elements.contains(&XfccElement::default()),
        "{header:?} parsed to an empty element"
    );
});
