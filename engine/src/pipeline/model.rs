//! The validated, in-memory form of a workflow file (`workflows/*.yaml`).
//!
//! Everything here has passed [`super::parse`] and [`super::validate`]: ids are unique,
//! dependencies exist, the graph is acyclic, durations and conditions are well formed. The
//! executor never sees raw YAML. See `ARCHITECTURE.md` ("Pipeline definitions").

use std::collections::BTreeMap;
use std::time::Duration;

use super::condition::Condition;

/// A position in a workflow file, 1-based, as editors show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// A whole pipeline: what triggers it and the DAG of steps it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Workflow {
    pub name: String,
    pub description: Option<String>,
    pub trigger: Option<Trigger>,
    /// Most steps of one run executing at once; `None` means the engine default.
    pub concurrency: Option<usize>,
    /// Environment for every step; a step's own `env` wins on conflicts.
    pub env: BTreeMap<String, String>,
    /// In file order, which is also the tie-break order for scheduling.
    pub steps: Vec<Step>,
    /// Top-level `sandbox: required`: refuse to run where no sandbox mechanism exists.
    pub sandbox: SandboxRequirement,
    /// Top-level `llm:`: which language models every step's agent may use.
    pub llm: ModelUse,
}

impl Workflow {
    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|step| step.id == id)
    }
}

/// When and for which repositories the engine starts runs on its own (`cairn serve`).
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// A cron expression (5 fields, or 6 with seconds), checked at validation.
    pub schedule: Option<String>,
    pub repositories: Vec<Repository>,
    /// Which new commits start a run when several arrived between two ticks.
    pub commits: CommitSelection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CommitSelection {
    /// One run per new commit, oldest first.
    #[default]
    Each,
    /// Only the newest commit of each branch.
    Latest,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Repository {
    /// A local path or any URL `git` can fetch.
    pub url: String,
    /// Branches to watch; empty means the remote's default branch.
    pub branches: Vec<String>,
    /// The environment variable of `cairn serve` holding this repository's webhook secret
    /// (`webhook_secret_env:`); the secret itself never sits in the workflow file.
    pub webhook_secret_env: Option<String>,
}

/// One node of the DAG.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: String,
    /// Human-readable label; defaults to the id.
    pub name: String,
    pub action: Action,
    pub depends_on: Vec<String>,
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    pub on_failure: OnFailure,
    /// Evaluated against the run context when the step becomes ready; false skips the step.
    pub when: Option<Condition>,
    pub env: BTreeMap<String, String>,
    /// Stored secrets the step is given, as environment variable → secret name (`secrets:`,
    /// `${{ secrets.NAME }}`); only `run:` steps receive them.
    pub secrets: BTreeMap<String, String>,
    /// Declared sandbox exceptions and resource limits (`sandbox:`, `network:`, `limits:`).
    pub sandbox: StepSandbox,
    /// The step's `llm:`; keys it leaves out come from the workflow's.
    pub llm: ModelUse,
    /// Labels a worker must have to run this step (`runs_on:`); empty: the engine runs it.
    pub runs_on: Vec<String>,
    /// Where the step starts in its file, for messages about it.
    pub location: Location,
}

/// Which language models an agent may use (`llm: { local: off, remote: off }`, see
/// `llm.rs`); `None` means not said here, and unsaid at every level means on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelUse {
    pub local: Option<bool>,
    pub remote: Option<bool>,
}

impl ModelUse {
    /// These keys where said, `base`'s otherwise (a step's over its workflow's).
    pub fn over(self, base: ModelUse) -> ModelUse {
        ModelUse {
            local: self.local.or(base.local),
            remote: self.remote.or(base.remote),
        }
    }

    pub fn local_allowed(&self) -> bool {
        self.local.unwrap_or(true)
    }

    pub fn remote_allowed(&self) -> bool {
        self.remote.unwrap_or(true)
    }
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// A shell command, run with `sh -c` in its own process group.
    Run { command: String },
    /// A built-in agent registered under `name`; `with` is its configuration.
    Agent {
        name: String,
        with: serde_json::Value,
    },
}

/// How often and how patiently a step is attempted again after a failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Extra attempts after the first. `None` when the file did not say: then only
    /// infrastructure failures (timeout, killed process, interrupted engine) are retried,
    /// with [`RetryPolicy::DEFAULT_INFRASTRUCTURE_RETRIES`].
    pub retries: Option<u32>,
    /// Delay before the first retry; doubles each time up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl RetryPolicy {
    pub const DEFAULT_INFRASTRUCTURE_RETRIES: u32 = 2;
    pub const DEFAULT_BACKOFF: Duration = Duration::from_secs(1);
    pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            retries: None,
            backoff: Self::DEFAULT_BACKOFF,
            max_backoff: Self::DEFAULT_MAX_BACKOFF,
        }
    }
}

/// What a failed step (after its retries) means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// The run fails; steps not yet started are cancelled.
    #[default]
    Abort,
    /// The failure is recorded, dependants still run, the run can still succeed.
    Continue,
    /// Retry on every kind of failure, a script's own exit code included
    /// (once when `retries` is not given), then abort.
    Retry,
    /// The run fails, but only once the steps that do not depend on this one have finished
    /// (GitHub Actions' behaviour); a dependant runs only when it has a `when:` and that is
    /// true (`when: steps.<id>.state == 'failed'` reacts to the failure).
    Finish,
}

impl OnFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Abort => "abort",
            Self::Continue => "continue",
            Self::Retry => "retry",
            Self::Finish => "finish",
        }
    }
}

/// Whether a workflow insists on a sandbox (top-level `sandbox:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxRequirement {
    /// The engine's configured policy decides.
    #[default]
    Default,
    /// Refuse to run where no sandbox mechanism exists, whatever the configuration says.
    Required,
}

/// What a step may reach beyond its workspace, and what it may consume. Every field is an
/// exception to, or a change of, the engine's defaults; empty means none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StepSandbox {
    /// Absolute or `~/` paths readable beyond the system (for hidden places).
    pub read: Vec<String>,
    /// Absolute or `~/` paths writable beyond the workspace and the private `/tmp`.
    pub write: Vec<String>,
    /// The Docker socket is visible to the step.
    pub docker: bool,
    /// `None`: the default, the host's network.
    pub network: Option<Network>,
    pub limits: Limits,
    /// Files the step hands on and keeps between runs (`artifacts:`, `cache:`). They sit here,
    /// with the rest of what the step's workspace means to the engine, rather than on [`Step`]
    /// itself, so that every form's loader keeps building steps the same way.
    pub files: StepFiles,
}

/// What a step hands to its dependants and keeps between runs of the same repository
/// (`exec/files/`, ARCHITECTURE.md "Artifacts and caches").
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StepFiles {
    /// `artifacts:` paths or globs relative to the workspace, archived when the step succeeds
    /// and restored before every step that depends on it, directly or not.
    pub artifacts: Vec<String>,
    pub cache: Option<CacheSpec>,
}

/// `cache: { key, paths, restore_keys }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSpec {
    pub key: KeyTemplate,
    /// Paths or globs relative to the workspace.
    pub paths: Vec<String>,
    /// Prefixes tried in order when the exact key misses; the newest entry starting with one
    /// is restored.
    pub restore_keys: Vec<KeyTemplate>,
}

/// A cache key as written: literal text and `{{ hash 'PATTERN' ... }}` parts, checked at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    /// The text as written, for messages and `cairn convert`.
    pub source: String,
    pub parts: Vec<KeyPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    Literal(String),
    /// SHA-256 of the files the patterns match in the checkout (see `exec/files/key.rs`).
    Hash(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    #[default]
    Host,
    /// Only a private loopback.
    None,
}

/// Per-step resource limits; `None` means the engine's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Bytes of memory for all the step's processes together.
    pub memory: Option<Limit>,
    /// Processes (and threads) at once.
    pub processes: Option<Limit>,
    /// Bytes in any one file the step writes.
    pub file_size: Option<Limit>,
}

impl Limits {
    /// `self`, with `defaults` where `self` says nothing.
    pub fn or(self, defaults: Limits) -> Limits {
        Limits {
            memory: self.memory.or(defaults.memory),
            processes: self.processes.or(defaults.processes),
            file_size: self.file_size.or(defaults.file_size),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Unlimited,
    At(u64),
}

impl Limit {
    pub fn value(self) -> Option<u64> {
        match self {
            Limit::Unlimited => None,
            Limit::At(value) => Some(value),
        }
    }
}

/// The engine's sandbox policy (`sandbox: { policy: }` in `cairn.yaml`, or `CAIRN_SANDBOX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxPolicy {
    /// Sandbox every step when a mechanism exists; warn at start when none does.
    #[default]
    Auto,
    /// Refuse to run steps when no mechanism exists (for untrusted commits).
    Required,
    /// Run steps unsandboxed (environment still cleaned, limits still applied).
    Off,
}

impl SandboxPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxPolicy::Auto => "auto",
            SandboxPolicy::Required => "required",
            SandboxPolicy::Off => "off",
        }
    }

    pub fn parse(text: &str) -> Option<SandboxPolicy> {
        match text.trim() {
            "auto" => Some(SandboxPolicy::Auto),
            "required" => Some(SandboxPolicy::Required),
            "off" => Some(SandboxPolicy::Off),
            _ => None,
        }
    }
}

/// The environment variable through which a `run:` step reads output `key` of its direct
/// dependency `step_id`: `CAIRN_STEP_<STEP>_<KEY>`, upper case, anything not a letter or
/// digit as `_`.
pub fn dependency_output_variable(step_id: &str, key: &str) -> String {
    let clean = |text: &str| -> String {
        text.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("CAIRN_STEP_{}_{}", clean(step_id), clean(key))
}
