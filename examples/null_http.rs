//! The do-nothing HTTP check endpoint of the side-by-side benchmark (`scripts/bench`,
//! `BENCHMARKS.md`, "nginx"): `cargo run --release --example null_http -- 127.0.0.1:9393`.

#[path = "../benches/sidebyside/null_http.rs"]
mod null_http;

/// The same allocator as portcullis (src/main.rs), so the CPU comparison is fair.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    null_http::main()
}
