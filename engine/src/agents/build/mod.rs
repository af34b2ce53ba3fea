//! `agent: build_agent`: builds the commit's Docker image through the Docker engine API
//! (bollard), decides between a full and a cached build from what the commit changed, reviews
//! the Dockerfile with deterministic rules (explained by the local model), and reports sizes,
//! layers and timings. See `DESIGN.md`, "The pipeline" (build stage) and "Real parts".
//!
//! Outputs (the build report): `image` (`repo:short-sha`), `tags` (plus `repo:branch`), `id`,
//! `digest`, `size`, `previous` and `size_change` (against the branch tag before it moved),
//! `decision` (`full`/`cached`) and `reason`, `cache` (triggers, changed files, cache hits),
//! `duration_ms`, `last_full_build_ms`, `time_saved_ms`, `layers`, `context`, and `review`
//! (findings, their explanation and the tier that wrote it, and with `optimize:` a rewritten
//! Dockerfile proven by building and measuring it: `rewrite.rs`, `prove.rs`).

mod agent;
mod cache;
mod config;
mod context;
pub(crate) mod docker;
mod dockerfile;
mod dockerignore;
mod error;
mod history;
mod naming;
mod prove;
mod review;
mod rewrite;
mod size;

pub use agent::BuildAgent;
pub use cache::{Decision, Mode};
pub use config::BuildConfig;
pub use dockerfile::{Instruction, parse as parse_dockerfile};
pub use dockerignore::Dockerignore;
pub use error::Error;
pub use history::BuildRecord;
pub use naming::{repository_name, tag_name};
pub use review::{Finding, Severity, review as review_dockerfile};
pub use size::{format_size, parse_size};
