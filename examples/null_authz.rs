//! The do-nothing ext_authz server of the side-by-side benchmark (`scripts/bench`,
//! `BENCHMARKS.md`): `cargo run --release --example null_authz -- 127.0.0.1:9292`.

#[path = "../benches/sidebyside/null_authz.rs"]
mod null_authz;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    null_authz::main()
}
