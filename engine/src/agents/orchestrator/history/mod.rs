//! Risk learned from a repository's own history: SZZ labels of past defect-inducing commits
//! (and Cairn's own failed tests and rollbacks), just-in-time change features, and a logistic
//! regression that may raise the rule floor, never lower it. See `ARCHITECTURE.md`, "Risk
//! learned from history".

mod calibrate;
mod error;
mod evaluate;
mod explain;
mod features;
mod log;
mod model;
mod szz;

pub use calibrate::{Bin, Calibration, Evaluation, MIN_COMMITS, Options, Span, calibrate};
pub use error::{Error, Result};
pub use evaluate::{FlagScore, auc};
pub use explain::{Explanation, canonical, explain, from_store, raise, root_commit};
pub use features::NAMES as FEATURES;
pub use model::{Contribution, Model};
pub use szz::{introducers, is_fix};
