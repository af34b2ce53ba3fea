//! Pipeline definitions: the workflow YAML format, its validation, the step DAG, `when:`
//! routing conditions, and pictures of the graph. See `ARCHITECTURE.md` ("Pipeline
//! definitions"); the file format is documented in `parse.rs`.

mod condition;
mod dag;
mod duration;
mod error;
mod evaluate;
mod graph;
pub mod limits;
mod llm;
mod load;
pub mod model;
mod parse;
mod sandbox;
mod schedule;
mod step;
mod suggest;
mod validate;
mod yaml;

pub use condition::{Condition, ConditionError, ROOTS as CONDITION_ROOTS, RiskLevel};
pub use dag::Dag;
pub use duration::{format_duration, parse_duration};
pub use error::{Diagnostic, Error};
pub use graph::{to_dot, to_mermaid};
pub use load::{LoadOptions, load_file, load_str};
pub use model::*;
pub(crate) use parse::describe_load_error;
pub use sandbox::{SandboxSettings, load_sandbox_settings};
pub use schedule::parse_schedule;
