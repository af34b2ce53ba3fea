//! What a sandboxed step must not see although it lies in the read-only system view: Cairn's
//! state directory (database, secrets key, every run's workspace, mirrors), its configuration
//! file, credentials in the home directory, and container-engine sockets.

use std::path::{Path, PathBuf};

/// Credentials and keys that commonly sit in a home directory.
const HOME_SECRETS: &[&str] = &[
    ".ssh",
    ".gnupg",
    ".docker",
    ".aws",
    ".azure",
    ".kube",
    ".config/gcloud",
    ".config/gh",
    ".netrc",
    ".git-credentials",
    ".pypirc",
    ".npmrc",
    ".cargo/credentials",
    ".cargo/credentials.toml",
];

/// Sockets (and their directories) through which a process could drive a container engine,
/// which is root on the host.
const ENGINE_SOCKETS: &[&str] = &[
    "/run/docker.sock",
    "/var/run/docker.sock",
    "/run/docker",
    "/run/containerd",
    "/run/podman",
    "/run/crio",
    "/var/lib/docker",
];

/// Places to hide, canonical and existing, without duplicates.
pub struct Hidden {
    /// Always hidden.
    pub always: Vec<PathBuf>,
    /// Hidden unless the step declares `docker: true`.
    pub engine_sockets: Vec<PathBuf>,
}

impl Hidden {
    pub fn collect(home: Option<&Path>) -> Hidden {
        let mut always = Vec::new();
        if let Some(home) = home {
            // Made before the engine starts steps; kept even if not there yet.
            always.push(home.canonicalize().unwrap_or_else(|_| home.to_path_buf()));
        }
        if let Some(config) = std::env::var_os("CAIRN_CONFIG") {
            always.push(PathBuf::from(config));
        }
        if let Some(user_home) = std::env::var_os("HOME") {
            let user_home = PathBuf::from(user_home);
            always.extend(HOME_SECRETS.iter().map(|entry| user_home.join(entry)));
        }
        let mut engine_sockets: Vec<PathBuf> = ENGINE_SOCKETS.iter().map(PathBuf::from).collect();
        if let Ok(user) = std::env::var("XDG_RUNTIME_DIR") {
            engine_sockets.push(Path::new(&user).join("docker.sock"));
        }
        if let Some(socket) = std::env::var("DOCKER_HOST")
            .ok()
            .and_then(|host| host.strip_prefix("unix://").map(PathBuf::from))
        {
            engine_sockets.push(socket);
        }
        let state = always.first().cloned();
        let mut always = canonical(always);
        if let Some(state) = state.filter(|s| !always.contains(s)) {
            always.insert(0, state);
        }
        Hidden {
            always,
            engine_sockets: canonical(engine_sockets),
        }
    }
}

fn canonical(paths: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = paths
        .into_iter()
        .filter_map(|path| path.canonicalize().ok())
        .collect();
    found.sort();
    found.dedup();
    found
}
