//! The subcommands' implementations; `main.rs` holds only the argument types and
//! the dispatch. One file per command group.

pub mod serve;
