//! Store calls from async code run on tokio's blocking threads: a SQLite commit waits for
//! fsync (and perhaps for another process's write lock), a PostgreSQL one for the network and
//! a cut-off server for a TCP timeout. None of that may stall the runtime's workers, which also
//! carry every running step's output, timers and lease renewals.

use super::error::{Error, Result};
use crate::store::{self, Store};

/// `call` with a handle to `store`, on a blocking thread.
pub async fn store_call<T: Send + 'static>(
    store: &Store,
    call: impl FnOnce(&Store) -> store::Result<T> + Send + 'static,
) -> Result<T> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || call(&store))
        .await
        .map_err(|error| Error::Blocking(error.to_string()))?
        .map_err(Error::from)
}
