//! Test selection for Cargo workspaces below the crate: a module reference graph built from
//! the sources (`parse.rs` → `graph.rs`) maps a commit's changed lines (`diff.rs`) to the test
//! targets and unit-test modules that can reach them (`plan.rs`), falling back to the crate
//! graph or to everything wherever the analysis cannot place a change. Where each test's own
//! coverage was recorded, the selection narrows further, to the tests that executed what the
//! change reaches at the item level (`per_test.rs`, with `reach.rs` over `items.rs`).

mod diff;
mod graph;
mod items;
mod manifest;
mod parse;
pub mod per_test;
pub(crate) mod plan;
mod reach;
mod reach_package;
mod workspace;

#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod reach_tests;

pub use diff::{Change, changes, parse_patch};
pub use parse::parse_source;
pub use plan::unit_key;
pub use workspace::{Kind, Workspace};
