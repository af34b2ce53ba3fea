//! Where Cairn keeps its state and how it is configured, resolved once from flags, the
//! environment and `$CAIRN_HOME/cairn.yaml`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};

use cairn_engine::agents::Registry;
use cairn_engine::exec::sandbox::{self, Mechanism, Sandbox};
use cairn_engine::exec::{Engine, EngineSettings};
use cairn_engine::llm::{self, Router};
use cairn_engine::pipeline::{SandboxPolicy, load_sandbox_settings};
use cairn_engine::store::Store;

/// Resolved locations and limits for this invocation.
pub struct Settings {
    /// `$CAIRN_HOME`: the state database, run workspaces and mirrors live under it.
    pub home: PathBuf,
    pub concurrency: Option<usize>,
}

impl Settings {
    pub fn resolve(home: Option<PathBuf>, concurrency: Option<usize>) -> Result<Settings> {
        let home = match home {
            Some(home) => home,
            None => dirs::data_dir()
                .map(|dir| dir.join("cairn"))
                .context("no per-user data directory is known here: set CAIRN_HOME")?,
        };
        Ok(Settings { home, concurrency })
    }

    pub fn database(&self) -> PathBuf {
        self.home.join("cairn.db")
    }

    /// `CAIRN_CONFIG`, else `$CAIRN_HOME/cairn.yaml` (absent: the defaults, local only).
    pub fn config_path(&self) -> PathBuf {
        std::env::var_os("CAIRN_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.home.join("cairn.yaml"))
    }

    pub fn open_store(&self) -> Result<Store> {
        Ok(Store::open(&self.database())?)
    }

    pub fn llm(&self, store: &Store) -> Result<Router> {
        let settings = llm::Settings::load(&self.config_path())?;
        Router::new(settings, store.clone()).map_err(|e| anyhow::anyhow!(e))
    }

    /// The sandbox from `cairn.yaml`'s `sandbox:` section and `CAIRN_SANDBOX` (which wins),
    /// with the mechanism detected on this machine.
    pub fn sandbox(&self) -> Result<Sandbox> {
        let path = self.config_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => return Err(sandbox::Error::ReadConfig { path, source }.into()),
        };
        let config = load_sandbox_settings(&path.display().to_string(), &text)
            .map_err(sandbox::Error::Config)?;
        let policy = match std::env::var("CAIRN_SANDBOX") {
            Ok(value) if !value.is_empty() => {
                Some(SandboxPolicy::parse(&value).ok_or(sandbox::Error::Variable(value.clone()))?)
            }
            _ => None,
        };
        Ok(Sandbox::detect(&config, policy, &self.home))
    }

    pub fn engine(&self) -> Result<Engine> {
        let store = self.open_store()?;
        let sandbox = self.sandbox()?;
        if sandbox.policy == SandboxPolicy::Auto
            && let Mechanism::Unavailable { why } = &sandbox.mechanism
        {
            eprintln!(
                "warning: steps run without a sandbox: {why}; install bubblewrap, or set \
                 `sandbox: {{ policy: required }}` in cairn.yaml to refuse to run like this"
            );
        }
        sandbox::install(sandbox);
        let router = Arc::new(self.llm(&store)?);
        Ok(Engine::new(
            store,
            Arc::new(Registry::builtin(Some(router))),
            EngineSettings {
                concurrency: self.concurrency,
                lease: EngineSettings::DEFAULT_LEASE,
                work_dir: self.home.join("work"),
            },
        ))
    }
}
