//! The config loader on any text: it never panics, and an invalid config says
//! why. Relative paths in the config (policy, jwks_file, secret_file, TLS files,
//! key_dir) resolve under a directory that does not exist, so they fail to read;
//! inputs that could name a device, a FIFO or a process file by absolute path
//! are skipped, since reading one could block or never end.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::config::Config;
use std::path::Path;

/// Where the fuzzed config's relative paths point: nowhere.
const BASE: &str = "/nonexistent/portcullis-fuzz";

fuzz_target!(|text: &str| {
    // A YAML double-quoted escape could spell any of these too.
    if text.contains('\\')
        || ["/dev", "/proc", "/sys", "/run", "/var"]
            .iter()
            .any(|p| text.contains(p))
    {
        return;
    }
    if let Err(e) = Config::parse("portcullis.yaml", text, Path::new(BASE), None) {
        assert!(!e.errors().is_empty(), "an invalid config without an error");
    }
});
