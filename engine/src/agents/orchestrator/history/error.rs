//! Errors of learning risk from a repository's history (`orchestrator::history`).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read the history of {repo}: {message}")]
    Git { repo: String, message: String },
    #[error(
        "{repo} has too little history to learn from: {found} commits older than the \
         {gap_days}-day gap (at least {needed} are needed)"
    )]
    TooFewCommits {
        repo: String,
        found: usize,
        needed: usize,
        gap_days: u32,
    },
    #[error(
        "{repo} has no {missing} commits in the training part of its history, so no model can \
         tell them apart (labelled {positives} defect-inducing of {total})"
    )]
    OneClass {
        repo: String,
        missing: &'static str,
        positives: usize,
        total: usize,
    },
    #[error("failed to fit the logistic regression")]
    Fit(#[source] linfa_logistic::error::Error),
    #[error("the stored risk model is unreadable: {0}")]
    BadModel(String),
    #[error("failed to read the risk model from the store")]
    Store(#[from] crate::store::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
