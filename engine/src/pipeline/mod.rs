//! Pipeline definitions: the workflow YAML format, its validation, the step DAG, `when:`
//! routing conditions, and pictures of the graph. See `ARCHITECTURE.md` ("Pipeline
//! definitions"); the file format is documented in `parse.rs`. Besides Cairn's own form, the
//! design brief's `pipeline:`/`stages:` form (`brief.rs`) and GitHub/Gitea Actions workflows
//! (`actions/`) load into the same model; `render.rs` prints any of them in the native form.

mod actions;
mod branches;
mod brief;
mod condition;
mod dag;
mod duration;
mod error;
mod evaluate;
mod files;
mod graph;
pub mod limits;
mod llm;
mod load;
pub mod model;
mod parse;
mod render;
mod sandbox;
mod schedule;
mod secret_refs;
mod step;
mod suggest;
mod validate;
mod yaml;

pub use branches::{BranchFilter, PatternError as BranchPatternError};
pub use brief::ON_PUSH_SCHEDULE;
pub use condition::{Condition, ConditionError, ROOTS as CONDITION_ROOTS, RiskLevel};
pub use dag::Dag;
pub use duration::{format_duration, parse_duration};
pub use error::{Diagnostic, Error};
pub use files::workspace_pattern;
pub use graph::{to_dot, to_mermaid};
pub use load::{LoadOptions, Loaded, load_file, load_file_detailed, load_str, load_str_detailed};
pub use model::*;
pub use parse::Form;
pub(crate) use parse::describe_load_error;
pub use render::to_native_yaml;
pub use sandbox::{SandboxSettings, load_sandbox_settings};
pub use schedule::parse_schedule;
