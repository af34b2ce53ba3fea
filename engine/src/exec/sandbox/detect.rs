//! Finding the sandbox mechanism at start: bubblewrap from the distribution's package,
//! probed once, since a present `bwrap` can still be refused namespaces by the kernel or a
//! container runtime.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Overrides where `bwrap` is looked for; `none` pretends it is absent (tests, and operators
/// who want to see what an unsandboxed machine reports).
pub const BWRAP_VARIABLE: &str = "CAIRN_SANDBOX_BWRAP";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mechanism {
    Bubblewrap { path: PathBuf, version: String },
    Unavailable { why: String },
}

impl Mechanism {
    pub fn detect() -> Mechanism {
        let path = match std::env::var_os(BWRAP_VARIABLE) {
            Some(value) if value == "none" => {
                return Mechanism::Unavailable {
                    why: format!("{BWRAP_VARIABLE}=none"),
                };
            }
            Some(value) => PathBuf::from(value),
            None => match find_on_path("bwrap") {
                Some(path) => path,
                None => {
                    return Mechanism::Unavailable {
                        why: "bubblewrap (`bwrap`) is not installed".into(),
                    };
                }
            },
        };
        probe(&path)
    }

    pub fn is_available(&self) -> bool {
        matches!(self, Mechanism::Bubblewrap { .. })
    }

    pub fn describe(&self) -> String {
        match self {
            Mechanism::Bubblewrap { path, version } => {
                format!("bubblewrap {version} ({})", path.display())
            }
            Mechanism::Unavailable { why } => format!("none: {why}"),
        }
    }
}

/// Runs `bwrap` once with every namespace the steps will get; its refusal is the reason.
fn probe(path: &Path) -> Mechanism {
    let version = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output();
    let version = match version {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
            .trim()
            .trim_start_matches("bubblewrap ")
            .to_string(),
        Ok(output) => {
            return Mechanism::Unavailable {
                why: format!(
                    "{} --version failed: {}",
                    path.display(),
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            };
        }
        Err(error) => {
            return Mechanism::Unavailable {
                why: format!("cannot run {}: {error}", path.display()),
            };
        }
    };
    let trial = Command::new(path)
        .args([
            "--unshare-all",
            "--die-with-parent",
            "--ro-bind",
            "/",
            "/",
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--tmpfs",
            "/tmp",
            "--",
            "true",
        ])
        .stdin(Stdio::null())
        .output();
    match trial {
        Ok(output) if output.status.success() => Mechanism::Bubblewrap {
            path: path.to_path_buf(),
            version,
        },
        Ok(output) => Mechanism::Unavailable {
            why: format!(
                "bubblewrap cannot create namespaces here: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        },
        Err(error) => Mechanism::Unavailable {
            why: format!("cannot run {}: {error}", path.display()),
        },
    }
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
