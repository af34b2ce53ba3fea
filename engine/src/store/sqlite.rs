//! [`Store`], the handle to the state database: one SQLite file (WAL, `synchronous=FULL`), the
//! embedded default, or a PostgreSQL database shared by many engines (`postgres.rs`). The
//! store's logic is written once against [`Conn`] (`sql.rs`); this file opens the database
//! and runs transactions on it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};
use serde_json::Value;

use super::check;
use super::error::{Error, Result};
use super::postgres::Postgres;
use super::runs::WriteTxn;
use super::schema;
use super::sql::{Backend, Conn};

/// A handle to the state database; cheap to clone, safe to share between tasks.
#[derive(Clone)]
pub struct Store {
    database: Arc<Database>,
    path: PathBuf,
}

enum Database {
    Sqlite(Mutex<Connection>),
    Postgres(Box<Postgres>),
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating if needed) the database, checks it (`quick_check`, read-only first, so
    /// a damaged file is refused untouched: see `check.rs`) and migrates it.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| {
                check::writable_or(
                    dir,
                    Error::CreateDir {
                        path: dir.to_path_buf(),
                        source,
                    },
                )
            })?;
        }
        create_if_missing(path)?;
        check::refuse_damaged(path, check::Check::Quick)?;
        let open_err = |source| Error::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(|source| {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
            match dir {
                Some(dir) => check::writable_or(dir, open_err(source)),
                None => open_err(source),
            }
        })?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        schema::migrate(&mut conn, path)?;
        Ok(Store {
            database: Arc::new(Database::Sqlite(Mutex::new(conn))),
            path: path.to_path_buf(),
        })
    }

    /// Connects to a PostgreSQL database (`postgres://user:password@host:port/name`) and
    /// migrates it. `home_file` stands where the SQLite file would be: the home beside it
    /// keeps what stays per machine (blobs, the secrets key).
    pub fn open_postgres(url: &str, home_file: &Path) -> Result<Store> {
        Ok(Store {
            database: Arc::new(Database::Postgres(Box::new(Postgres::open(url)?))),
            path: home_file.to_path_buf(),
        })
    }

    /// The SQLite file, or with PostgreSQL the place it would have in the home.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Which database this store is on.
    pub fn backend(&self) -> Backend {
        match &*self.database {
            Database::Sqlite(_) => Backend::Sqlite,
            Database::Postgres(_) => Backend::Postgres,
        }
    }

    /// Where the state lives, for messages: the SQLite file or the PostgreSQL address
    /// (without its password).
    pub fn location(&self) -> String {
        match &*self.database {
            Database::Sqlite(_) => self.path.display().to_string(),
            Database::Postgres(db) => db.display_url(),
        }
    }

    /// Runs `work` in one write transaction and commits it durably: SQLite's `BEGIN
    /// IMMEDIATE`, or PostgreSQL's transaction under the store's write lock; either way,
    /// writers one at a time.
    pub fn write<T: Send>(
        &self,
        work: impl FnOnce(&WriteTxn<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        match &*self.database {
            Database::Sqlite(conn) => {
                let mut conn = lock(conn);
                let txn = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let value = work(&WriteTxn { conn: &*txn })?;
                txn.commit()?;
                Ok(value)
            }
            Database::Postgres(db) => db.write(|conn| work(&WriteTxn { conn })),
        }
    }

    /// [`Store::write`] for `work` that may run twice: on PostgreSQL, a transaction cut off by
    /// a lost connection (the server restarting) before its commit was sent runs again on a
    /// new connection instead of failing. For writes a caller cannot look up afterwards,
    /// such as creating a run.
    pub fn write_again<T: Send>(
        &self,
        work: impl Fn(&WriteTxn<'_>) -> Result<T> + Send + Sync,
    ) -> Result<T> {
        match &*self.database {
            Database::Sqlite(_) => self.write(work),
            Database::Postgres(db) => db.write_again(|conn| work(&WriteTxn { conn })),
        }
    }

    /// Runs `work` in one write transaction that, on PostgreSQL, takes no store-wide lock: the
    /// statements of `work` lock the rows they change themselves (`store/tasks.rs`). On SQLite
    /// it is [`Store::write`]'s transaction: one writer at a time locks every row anyway.
    pub(super) fn write_row_locked<T: Send>(
        &self,
        work: impl FnOnce(&dyn Conn) -> Result<T> + Send,
    ) -> Result<T> {
        match &*self.database {
            Database::Sqlite(conn) => {
                let mut conn = lock(conn);
                let txn = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let value = work(&*txn)?;
                txn.commit()?;
                Ok(value)
            }
            Database::Postgres(db) => db.write_row_locked(work),
        }
    }

    /// Runs `work` on one consistent view of the database: on SQLite a deferred transaction,
    /// whose first read fixes the snapshot (WAL) until it ends, so several queries agree
    /// even while another process writes.
    pub(super) fn read<T: Send>(
        &self,
        work: impl Fn(&dyn Conn) -> Result<T> + Send + Sync,
    ) -> Result<T> {
        match &*self.database {
            Database::Sqlite(conn) => {
                let conn = lock(conn);
                let txn = conn.unchecked_transaction()?;
                let value = work(&*txn)?;
                txn.commit()?;
                Ok(value)
            }
            Database::Postgres(db) => db.read(work),
        }
    }

    /// `PRAGMA integrity_check` on the open database: the full check, O(database size) with
    /// index lookups, for `cairn doctor` and `cairn serve`'s periodic check. PostgreSQL keeps
    /// its own data safe (and `amcheck` is its administrators' tool): "ok".
    pub fn integrity_check(&self) -> Result<String> {
        match &*self.database {
            Database::Sqlite(conn) => Ok(check::run_check(&lock(conn), check::Check::Full)?),
            Database::Postgres(_) => Ok("ok".to_string()),
        }
    }
}

/// A panic while holding the lock cannot leave a half-applied transaction behind (SQLite rolls
/// it back), so a poisoned lock is still safe to use.
fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Stored JSON was written by us; if it is unreadable anyway, show it as a string rather than
/// refusing to display the run.
pub(super) fn parse_json(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// Makes a new database under a temporary name, migrated and closed, then links it into place,
/// so that no process ever sees a half-made (empty) `cairn.db`: an empty one is then always
/// damage, refused by `check.rs`. When several processes create one at once the first link
/// wins and the others open it; a process killed midway leaves only its temporary file.
fn create_if_missing(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => return Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        // Reported with its cause by `refuse_damaged`.
        Err(_) => return Ok(()),
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cairn.db".to_owned());
    let temporary = path.with_file_name(format!(
        ".{name}.new-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let made = (|| -> Result<()> {
        let mut conn = Connection::open(&temporary).map_err(|source| {
            let error = Error::Open {
                path: path.to_path_buf(),
                source,
            };
            match path.parent().filter(|d| !d.as_os_str().is_empty()) {
                Some(dir) => check::writable_or(dir, error),
                None => error,
            }
        })?;
        // WAL is recorded in the file's header, so the linked database opens in WAL mode.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        schema::migrate(&mut conn, path)?;
        // Closing the last connection checkpoints the WAL into the file and removes it.
        conn.close().map_err(|(_, source)| Error::Sqlite(source))?;
        match std::fs::hard_link(&temporary, path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(source) => Err(Error::Create {
                path: path.to_path_buf(),
                source,
            }),
        }
    })();
    for suffix in ["", "-wal", "-shm"] {
        let mut leftover = temporary.clone().into_os_string();
        leftover.push(suffix);
        let _ = std::fs::remove_file(leftover);
    }
    made
}

#[cfg(test)]
#[path = "sqlite_tests.rs"]
mod tests;
