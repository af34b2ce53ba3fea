//! [`Sandbox`]: the mechanism found at start, the policy, the default limits and what to hide;
//! [`Sandbox::command`] turns one planned shell command into the process to spawn.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use tokio::process::Command;

use super::bwrap::{View, arguments, git_alternates};
use super::cgroup::{Cgroups, Controller, Group};
use super::detect::Mechanism;
use super::env;
use super::error::Error;
use super::hidden::Hidden;
use crate::pipeline::{
    Limit, Limits, SandboxPolicy, SandboxRequirement, SandboxSettings, StepSandbox,
};

const GIB: u64 = 1 << 30;

/// Every step's limits unless `cairn.yaml` or the step says otherwise: generous for a
/// compiler and a test suite, small enough that a runaway step cannot take the machine.
pub const DEFAULT_LIMITS: Limits = Limits {
    memory: Some(Limit::At(4 * GIB)),
    processes: Some(Limit::At(1024)),
    file_size: Some(Limit::At(4 * GIB)),
};

pub struct Sandbox {
    pub mechanism: Mechanism,
    pub policy: SandboxPolicy,
    /// Defaults for steps that do not say.
    pub limits: Limits,
    hidden: Hidden,
    cgroups: Cgroups,
}

/// One process to start: a shell script, where, with what.
pub struct Plan<'a> {
    pub script: &'a str,
    pub cwd: &'a Path,
    /// Writable beyond `cwd` (an output file, a scratch tree).
    pub writable: Vec<PathBuf>,
    /// The documented `CAIRN_*` variables and the declared env; nothing else of the engine's.
    pub env: Vec<(String, String)>,
    pub step: &'a StepSandbox,
    pub requirement: SandboxRequirement,
}

/// The command to spawn (callers add stdio, process group and kill-on-drop), and the guard
/// that must live until the process has ended.
pub struct Sandboxed {
    pub command: Command,
    pub guard: Guard,
}

/// Holds the attempt's control groups; explains a death by a limit.
pub struct Guard {
    group: Option<Group>,
    limits: Limits,
}

impl Sandbox {
    /// No isolation (environment still cleaned): the policy `off`, and library tests.
    pub fn off() -> Sandbox {
        Sandbox {
            mechanism: Mechanism::Unavailable {
                why: "the sandbox policy is off".into(),
            },
            policy: SandboxPolicy::Off,
            limits: Limits::default(),
            hidden: Hidden {
                always: Vec::new(),
                engine_sockets: Vec::new(),
            },
            cgroups: Cgroups::default(),
        }
    }

    /// Detects the mechanism and the control groups. `home` is `$CAIRN_HOME`, hidden from steps.
    pub fn detect(settings: &SandboxSettings, policy: Option<SandboxPolicy>, home: &Path) -> Self {
        let policy = policy.or(settings.policy).unwrap_or_default();
        let mechanism = match policy {
            SandboxPolicy::Off => Mechanism::Unavailable {
                why: "the sandbox policy is off".into(),
            },
            _ => Mechanism::detect(),
        };
        Sandbox {
            mechanism,
            policy,
            limits: settings.limits.or(DEFAULT_LIMITS),
            hidden: Hidden::collect(Some(home)),
            cgroups: Cgroups::detect(),
        }
    }

    /// Refuses what must not run unsandboxed; `demand` names who asked (for the message).
    pub fn admit(&self, requirement: SandboxRequirement) -> Result<(), Error> {
        if self.mechanism.is_available() {
            return Ok(());
        }
        let demand = match (requirement, self.policy) {
            (SandboxRequirement::Required, _) => "this workflow (`sandbox: required`)",
            (_, SandboxPolicy::Required) => "the engine's policy (`sandbox: { policy: required }`)",
            _ => return Ok(()),
        };
        let why = match &self.mechanism {
            Mechanism::Unavailable { why } => why.clone(),
            Mechanism::Bubblewrap { .. } => String::new(),
        };
        Err(Error::Unavailable {
            why,
            demand: demand.to_string(),
        })
    }

    /// How limits are enforced here, for `cairn doctor`.
    pub fn limit_report(&self) -> Vec<String> {
        let how = |controller, fallback: &'static str| -> &'static str {
            if self.cgroups.has(controller) {
                "control group"
            } else if fallback.is_empty() {
                "not enforced"
            } else {
                fallback
            }
        };
        let show = |limit: Option<Limit>, size: bool| match limit {
            Some(Limit::At(value)) if size => human(value),
            Some(Limit::At(value)) => value.to_string(),
            _ => "unlimited".into(),
        };
        // The owner of our own /proc entry is our effective user.
        let root = std::fs::metadata("/proc/self")
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
        let mut lines = vec![
            format!(
                "memory: {} ({})",
                show(self.limits.memory, true),
                how(Controller::Memory, "RLIMIT_DATA per process")
            ),
            format!(
                "processes: {} ({})",
                show(self.limits.processes, false),
                how(
                    Controller::Pids,
                    if root { "" } else { "RLIMIT_NPROC per user" }
                )
            ),
            format!(
                "file size: {} (RLIMIT_FSIZE)",
                show(self.limits.file_size, true)
            ),
        ];
        lines.extend(self.cgroups.missing.iter().map(|m| format!("cgroup {m}")));
        lines
    }

    pub fn command(&self, plan: &Plan<'_>) -> Result<Sandboxed, Error> {
        self.admit(plan.requirement)?;
        let limits = plan.step.limits.or(self.limits);
        let mut group = self.cgroups.create(
            limits.processes.and_then(Limit::value),
            limits.memory.and_then(Limit::value),
        )?;
        let join = group.take_join_files();
        let rlimits = Rlimits {
            file_size: limits.file_size.and_then(Limit::value),
            data: (!self.cgroups.has(Controller::Memory))
                .then(|| limits.memory.and_then(Limit::value))
                .flatten(),
            processes: (!self.cgroups.has(Controller::Pids))
                .then(|| limits.processes.and_then(Limit::value))
                .flatten(),
        };
        let mut command = match &self.mechanism {
            Mechanism::Bubblewrap { path, .. } => {
                let home = std::env::var_os("HOME").map(PathBuf::from);
                let resolve = |paths: &[String]| -> Vec<PathBuf> {
                    paths
                        .iter()
                        .filter_map(|p| expand(p, home.as_deref()))
                        .collect()
                };
                let mut hidden = self.hidden.always.clone();
                if !plan.step.docker {
                    hidden.extend(self.hidden.engine_sockets.iter().cloned());
                }
                let mut readable = git_alternates(plan.cwd);
                readable.extend(resolve(&plan.step.read));
                let mut writable = vec![plan.cwd.to_path_buf()];
                writable.extend(plan.writable.iter().cloned());
                writable.extend(resolve(&plan.step.write));
                let view = View {
                    hidden: &hidden,
                    readable: &readable,
                    writable: &writable,
                    network: plan.step.network.unwrap_or_default(),
                    cwd: plan.cwd,
                };
                let mut command = Command::new(path);
                command.args(arguments(&view)).arg("--").arg("/bin/sh");
                command
            }
            Mechanism::Unavailable { .. } => Command::new("/bin/sh"),
        };
        command
            .arg("-c")
            .arg(plan.script)
            .current_dir(plan.cwd)
            .env_clear()
            .envs(env::build(&plan.env, self.mechanism.is_available()));
        if plan.step.docker
            && let Ok(host) = std::env::var("DOCKER_HOST")
        {
            command.env("DOCKER_HOST", host);
        }
        rlimits.apply(&mut command, join);
        Ok(Sandboxed {
            command,
            guard: Guard {
                group: Some(group),
                limits,
            },
        })
    }
}

/// `2 GiB`, `64 MiB`, or bytes when not a whole number of a unit: what users wrote.
fn human(bytes: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{} {unit}", bytes / size);
        }
    }
    format!("{bytes} bytes")
}

/// `~/x` → `$HOME/x`; other paths as written (validation made them absolute).
fn expand(path: &str, home: Option<&Path>) -> Option<PathBuf> {
    match path.strip_prefix('~') {
        Some(rest) => Some(home?.join(rest.trim_start_matches('/'))),
        None => Some(PathBuf::from(path)),
    }
}

impl Guard {
    /// Why the process died, when a limit killed it: a message for the step's error.
    pub fn explain(&self, status: &ExitStatus) -> Option<String> {
        let show = |limit: Option<Limit>| match limit {
            Some(Limit::At(value)) => human(value),
            _ => "unlimited".into(),
        };
        // The shell reports a child killed by SIGXFSZ as 128 + 25, and so does bubblewrap.
        if status.signal() == Some(libc::SIGXFSZ) || status.code() == Some(128 + libc::SIGXFSZ) {
            return Some(format!(
                "a process exceeded the file size limit ({}; `limits: {{ file_size: … }}`)",
                show(self.limits.file_size)
            ));
        }
        let group = self.group.as_ref()?;
        if group.hit_memory_limit() {
            return Some(format!(
                "the step ran out of its memory limit ({}; `limits: {{ memory: … }}`) and the \
                 kernel killed a process",
                show(self.limits.memory)
            ));
        }
        if group.hit_process_limit() {
            let limit = self.limits.processes.and_then(Limit::value).unwrap_or(0);
            return Some(format!(
                "the step reached its process limit ({limit}; `limits: {{ processes: … }}`): \
                 new processes were refused"
            ));
        }
        None
    }
}

/// The per-process limits, set in the child between fork and exec.
struct Rlimits {
    file_size: Option<u64>,
    data: Option<u64>,
    processes: Option<u64>,
}

impl Rlimits {
    #[allow(unsafe_code)]
    fn apply(self, command: &mut Command, join: Vec<std::fs::File>) {
        use std::os::fd::AsRawFd;
        let Rlimits {
            file_size,
            data,
            processes,
        } = self;
        let limits = [
            (libc::RLIMIT_FSIZE, file_size),
            (libc::RLIMIT_DATA, data),
            (libc::RLIMIT_NPROC, processes),
        ];
        // SAFETY: the closure runs in the forked child before exec and only makes system
        // calls (write to descriptors opened before the fork, setrlimit, prctl): no
        // allocation, no locks, so it is safe in a child of a multi-threaded process.
        let hook = move || -> std::io::Result<()> {
            // Joining the groups first: everything the step starts is then counted.
            // The closure owns the files, so they stay open as long as the command lives.
            for file in &join {
                if unsafe { libc::write(file.as_raw_fd(), b"0".as_ptr().cast(), 1) } != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (resource, value) in limits {
                if let Some(value) = value {
                    let limit = libc::rlimit {
                        rlim_cur: value,
                        rlim_max: value,
                    };
                    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            // bubblewrap sets it too; unsandboxed, this keeps setuid programs from gaining.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        };
        unsafe {
            command.pre_exec(hook);
        }
    }
}
