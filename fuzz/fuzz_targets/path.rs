//! Path normalization on any text: it never panics; what it accepts is
//! absolute, holds no `//`, `.` or `..` segment, and normalizes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::policy::NormalizedPath;

fuzz_target!(|raw: &str| {
    let Ok(path) = NormalizedPath::parse(raw) else {
        return;
    };
    let text = path.to_string();
    assert!(text.starts_with('/'), "{raw:?} → {text:?} is not absolute");
    assert!(
        !text.contains("//") && !text.contains("/../") && !text.ends_with("/.."),
        "{raw:?} → {text:?} is not normalized"
    );
    assert!(
        path.segments()
            .iter()
            .all(|s| !s.is_empty() && s != "." && s != ".."),
        "{raw:?} → {:?} keeps an empty, `.` or `..` segment",
        path.segments()
    );
    // Normalizing twice changes nothing, unless the first pass decoded text that
    // reads as a query, a fragment or an escape (`%3F` → `?`, `%2525` → `%25`):
    // decoding exactly once is the point.
    if !text.contains(['?', '#', '%']) {
        match NormalizedPath::parse(&text) {
            Ok(again) => assert_eq!(again, path, "{raw:?} → {text:?} → {again}"),
            Err(e) => panic!("{raw:?} → {text:?}, which does not parse again: {e}"),
        }
    }
});
