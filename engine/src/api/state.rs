//! What every handler shares: read connections to the store, the engine (to create runs), the
//! channel to the serving loop, the served workflows and the access policy.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc;

use super::error::{Error, Result};
use super::hooks::HookSecrets;
use crate::exec::Engine;
use crate::store::Store;
use crate::trigger::ServeCommand;

/// A workflow file `cairn serve` was given, by its name: what `POST /api/v1/runs` starts.
#[derive(Debug, Clone)]
pub struct ServedWorkflow {
    pub file_name: String,
    pub source_path: Option<String>,
    pub definition: String,
}

#[derive(Debug, Clone, Default)]
pub struct ApiOptions {
    /// Reading needs no token (writing still does).
    pub public_read: bool,
    /// Served over TLS: the session cookie is marked `Secure`.
    pub tls: bool,
}

/// Read connections of their own: API readers never queue behind the engine's writes on its
/// connection's lock (WAL lets readers and the writer go on at once).
const READERS: usize = 4;

#[derive(Clone)]
pub struct ApiState {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    readers: Vec<Store>,
    next: AtomicUsize,
    pub engine: Arc<Engine>,
    pub commands: mpsc::UnboundedSender<ServeCommand>,
    pub workflows: BTreeMap<String, ServedWorkflow>,
    pub hooks: HookSecrets,
    pub options: ApiOptions,
}

impl ApiState {
    pub fn new(
        engine: Arc<Engine>,
        commands: mpsc::UnboundedSender<ServeCommand>,
        workflows: BTreeMap<String, ServedWorkflow>,
        hooks: HookSecrets,
        options: ApiOptions,
    ) -> Result<ApiState> {
        let path: &Path = engine.store().path();
        let readers = (0..READERS)
            .map(|_| Store::open(path))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(ApiState {
            inner: Arc::new(Inner {
                readers,
                next: AtomicUsize::new(0),
                engine,
                commands,
                workflows,
                hooks,
                options,
            }),
        })
    }

    /// A read connection, round robin.
    pub(super) fn store(&self) -> &Store {
        let index = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.readers.len();
        &self.inner.readers[index]
    }

    /// Runs a store read on a blocking thread: SQLite calls never block the runtime's workers.
    pub(super) async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> crate::store::Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.store().clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|_| Error::Task)?
            .map_err(Error::from)
    }

    pub(super) fn send(&self, command: ServeCommand) -> Result<()> {
        self.inner
            .commands
            .send(command)
            .map_err(|_| Error::LoopGone)
    }
}
