//! Where Cairn keeps its state and how it is configured, resolved once from flags, the
//! environment and `$CAIRN_HOME/cairn.yaml`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use cairn_engine::agents::Registry;
use cairn_engine::exec::sandbox::{self, Mechanism, Sandbox};
use cairn_engine::exec::{Engine, EngineSettings};
use cairn_engine::llm::{self, Router};
use cairn_engine::pipeline::{SandboxPolicy, load_sandbox_settings};
use cairn_engine::retention::{Retention, WorkspacePolicy};
use cairn_engine::store::{Location, Store};

/// Resolved locations and limits for this invocation.
pub struct Settings {
    /// `$CAIRN_HOME`: the state database, run workspaces and mirrors live under it.
    pub home: PathBuf,
    pub concurrency: Option<usize>,
    /// Keep each run's checkout after the run (`--keep-workspace`), whatever `retention:` says.
    pub keep_workspaces: bool,
}

impl Settings {
    pub fn resolve(home: Option<PathBuf>, concurrency: Option<usize>) -> Result<Settings> {
        let home = match home {
            Some(home) => home,
            None => dirs::data_dir()
                .map(|dir| dir.join("cairn"))
                .context("no per-user data directory is known here: set CAIRN_HOME")?,
        };
        Ok(Settings {
            home,
            concurrency,
            keep_workspaces: false,
        })
    }

    /// `CAIRN_CONFIG`, else `$CAIRN_HOME/cairn.yaml` (absent: the defaults, local only).
    pub fn config_path(&self) -> PathBuf {
        std::env::var_os("CAIRN_CONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.home.join("cairn.yaml"))
    }

    /// The state database: `CAIRN_STORE` or `store:` in `cairn.yaml` (PostgreSQL), else the
    /// SQLite file in the home.
    pub fn open_store(&self) -> Result<Store> {
        Ok(self.store_location()?.open(&self.home)?)
    }

    /// Where the state database is (see [`Settings::open_store`]), without opening it.
    pub fn store_location(&self) -> Result<Location> {
        Ok(Location::load(&self.config_path(), &self.home)?)
    }

    pub fn llm(&self, store: &Store) -> Result<Router> {
        let settings = llm::Settings::load(&self.config_path())?;
        Router::new(settings, store.clone()).map_err(|e| anyhow::anyhow!(e))
    }

    /// `CAIRN_LEASE` (`30s`, `1500ms`, `2m`): how long a run's lease lasts without renewal,
    /// i.e. how soon another engine may take over a run whose engine stalled.
    pub fn lease() -> Result<Duration> {
        let Some(text) = std::env::var_os("CAIRN_LEASE") else {
            return Ok(EngineSettings::DEFAULT_LEASE);
        };
        let text = text.to_string_lossy();
        let lease = cairn_engine::pipeline::parse_duration(&text)
            .map_err(|reason| anyhow::anyhow!("CAIRN_LEASE={text:?}: {reason}"))?;
        if lease < Duration::from_millis(300) || lease > Duration::from_secs(3600) {
            anyhow::bail!("CAIRN_LEASE={text:?} is out of range: use 300ms to 1h");
        }
        Ok(lease)
    }

    /// The `retention:` section of the configuration (defaults when absent).
    pub fn retention(&self) -> Result<Retention> {
        Ok(Retention::load(&self.config_path())?)
    }

    /// Where run workspaces live.
    pub fn work_dir(&self) -> PathBuf {
        self.home.join("work")
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
        let retention = self.retention()?;
        let remove_workspaces =
            !self.keep_workspaces && retention.workspaces == WorkspacePolicy::Remove;
        Ok(Engine::new(
            store,
            Arc::new(Registry::builtin(Some(router))),
            EngineSettings {
                concurrency: self.concurrency,
                lease: Self::lease()?,
                work_dir: self.work_dir(),
            },
        )
        .remove_workspaces(remove_workspaces)
        .cache_limit(retention.cache_size))
    }
}
