//! The subcommands' implementations; `main.rs` holds only the argument types and
//! the dispatch. One file per command group.

pub mod ca;
pub mod policy;
pub mod revoke;
pub mod serve;
pub mod token;
