//! The do-nothing ext_authz server of the side-by-side benchmark (`scripts/bench`,
//! `BENCHMARKS.md`): `cargo run --release --example null_authz -- 127.0.0.1:9292`.

#[path = "../benches/sidebyside/null_authz.rs"]
mod null_authz;

/// The same allocator as portcullis (src/main.rs), so the CPU comparison is fair.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    null_authz::main()
}
