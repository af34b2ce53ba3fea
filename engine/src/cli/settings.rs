//! Where Cairn keeps its state, resolved once from flags and the environment.

use std::path::PathBuf;

use anyhow::{Context, Result};

use cairn_engine::agents::Registry;
use cairn_engine::exec::{Engine, EngineSettings};
use cairn_engine::store::Store;

/// Resolved locations and limits for this invocation.
pub struct Settings {
    /// `$CAIRN_HOME`: the state database, run workspaces and models live under it.
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

    pub fn open_store(&self) -> Result<Store> {
        Ok(Store::open(&self.database())?)
    }

    pub fn engine(&self) -> Result<Engine> {
        Ok(Engine::new(
            self.open_store()?,
            Registry::builtin(),
            EngineSettings {
                concurrency: self.concurrency,
                lease: EngineSettings::DEFAULT_LEASE,
                work_dir: self.home.join("work"),
            },
        ))
    }
}
