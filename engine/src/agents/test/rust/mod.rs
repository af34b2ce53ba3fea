//! Test selection for Cargo workspaces below the crate: a module reference graph built from
//! the sources (`parse.rs` → `graph.rs`) maps a commit's changed lines (`diff.rs`) to the test
//! targets and unit-test modules that can reach them (`plan.rs`), falling back to the crate
//! graph or to everything wherever the analysis cannot place a change. Where each test's own
//! coverage was recorded, a change inside function bodies narrows further, to the tests that
//! executed those functions (`per_test.rs`, with `bodies.rs`).

mod bodies;
mod diff;
mod graph;
mod manifest;
mod parse;
pub mod per_test;
pub(crate) mod plan;
mod workspace;

#[cfg(test)]
mod plan_tests;

pub use diff::{Change, changes, parse_patch};
pub use parse::parse_source;
pub use plan::unit_key;
pub use workspace::{Kind, Workspace};
