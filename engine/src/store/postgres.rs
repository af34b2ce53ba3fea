//! PostgreSQL as the store (`store: postgres://…`): many engines and workers on one database.
//!
//! The statements are the SQLite ones ([`super::sql`]); this file is what differs:
//! - **Placeholders**: `?N` becomes `$N`, outside quoted text.
//! - **Writes are serialized** like SQLite's `BEGIN IMMEDIATE`: every write transaction first
//!   takes one transaction-scoped advisory lock, so a read-then-write (claiming a lease,
//!   raising a fencing epoch, moving a cursor) sees every earlier write and no later one can
//!   slip between. Reads take no lock (MVCC). The exception is the workers' writes to their
//!   tasks (leases, renewals, results): they lock only the task's row, and a lease skips rows
//!   another transaction holds (`FOR UPDATE SKIP LOCKED`), so workers never queue behind each
//!   other or behind the engines.
//! - **The schema** is SQLite's migration list translated ([`translate_ddl`]): integer columns
//!   become `BIGINT`, `AUTOINCREMENT` keys identity columns, SQLite's triggers PL/pgSQL ones;
//!   the version lives in `cairn_schema` instead of `PRAGMA user_version`, and a SQL function
//!   stands in for SQLite's `json_extract`.
//! - **Threads**: the `postgres` client drives a runtime of its own, which must not run on a
//!   thread that is already inside the engine's tokio runtime, so each session runs on a
//!   scoped thread of its own (a thread start per transaction, microseconds beside a network
//!   round trip). A connection found closed (the server restarted) is reopened by the next
//!   session.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use postgres::types::{IsNull, ToSql, Type};
use postgres::{Client, NoTls};

use super::error::{Error, Result};
use super::schema::MIGRATIONS;
use super::sql::{Backend, Conn, Kind, Row, ToValue, Value};

/// The advisory lock every write transaction holds (an arbitrary constant: "cairn" in ASCII),
/// taken in the simple protocol: one round trip.
const WRITE_LOCK_SQL: &str = "SELECT pg_advisory_xact_lock(426836062830)";

/// A PostgreSQL database: its address and one connection, opened on first use.
pub(super) struct Postgres {
    url: String,
    session: Mutex<Option<Session>>,
    /// Whether a connection ever succeeded: from then on an unreachable server is waited for
    /// (a restart), while a first connection fails fast (a wrong address).
    connected: AtomicBool,
}

/// One connection and the statements prepared on it: a statement is parsed and planned once
/// per connection, then each use is one round trip instead of two.
struct Session {
    client: Client,
    statements: Statements,
}

type Statements = HashMap<(String, Vec<Kind>), postgres::Statement>;

impl Postgres {
    /// Connects and migrates the schema to this build's version.
    pub(super) fn open(url: &str) -> Result<Self> {
        let db = Self {
            url: url.to_string(),
            session: Mutex::new(None),
            connected: AtomicBool::new(false),
        };
        let migrated = db.session(|client, _| migrate(client, url));
        match migrated {
            // The server let us in, then went down (a restart): wait for it as for any lost
            // connection. The migration is one transaction and a no-op once applied.
            Err(error) if error.is_unavailable() && db.connected.load(Ordering::Relaxed) => {
                db.session(|client, _| migrate(client, url))?
            }
            result => result?,
        }
        Ok(db)
    }

    /// The address without its password, for messages.
    pub(super) fn display_url(&self) -> String {
        redact(&self.url)
    }

    /// Runs `work` in one write transaction, serialized with every other writer.
    pub(super) fn write<T: Send>(
        &self,
        work: impl FnOnce(&dyn Conn) -> Result<T> + Send,
    ) -> Result<T> {
        self.session(|client, statements| {
            let mut txn = client.transaction()?;
            txn.batch_execute(WRITE_LOCK_SQL)?;
            run_in(txn, statements, work, &AtomicBool::new(false))
        })
    }

    /// [`Postgres::write`] for `work` that may run twice: a transaction cut off by a lost
    /// connection before its commit was sent (so it certainly did not commit) runs again once
    /// on a new connection, which waits for a restarting server. One cut off while committing
    /// may have committed, so its error is returned.
    pub(super) fn write_again<T: Send>(
        &self,
        work: impl Fn(&dyn Conn) -> Result<T> + Send + Sync,
    ) -> Result<T> {
        let committing = AtomicBool::new(false);
        let attempt = || {
            self.session(|client, statements| {
                let mut txn = client.transaction()?;
                txn.batch_execute(WRITE_LOCK_SQL)?;
                run_in(txn, statements, &work, &committing)
            })
        };
        match attempt() {
            Err(error) if error.is_unavailable() && !committing.load(Ordering::Relaxed) => {
                attempt()
            }
            result => result,
        }
    }

    /// Runs `work` in one write transaction that takes no store-wide lock (READ COMMITTED):
    /// `work` locks the rows it reads to change (`FOR UPDATE`, `SKIP LOCKED`) itself. For
    /// workers' writes to their tasks (`store/tasks.rs`), so that many workers lease and renew
    /// at once instead of queueing behind each other and behind every engine's writes.
    pub(super) fn write_row_locked<T: Send>(
        &self,
        work: impl FnOnce(&dyn Conn) -> Result<T> + Send,
    ) -> Result<T> {
        self.session(|client, statements| {
            run_in(
                client.transaction()?,
                statements,
                work,
                &AtomicBool::new(false),
            )
        })
    }

    /// Runs `work` in one read-only transaction (one snapshot for all its queries). A read
    /// cut off by a lost connection (the server restarted since the last session) is tried
    /// once more on a new one: unlike a write, it changed nothing.
    pub(super) fn read<T: Send>(
        &self,
        work: impl Fn(&dyn Conn) -> Result<T> + Send + Sync,
    ) -> Result<T> {
        let attempt = || {
            self.session(|client, statements| {
                let txn = client
                    .build_transaction()
                    .isolation_level(postgres::IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()?;
                run_in(txn, statements, &work, &AtomicBool::new(false))
            })
        };
        match attempt() {
            Err(error) if error.is_unavailable() => attempt(),
            result => result,
        }
    }

    /// Runs `work` with a connected client on a thread of its own (see the module docs).
    fn session<T: Send>(
        &self,
        work: impl FnOnce(&mut Client, &mut Statements) -> Result<T> + Send,
    ) -> Result<T> {
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| {
                // A panic while holding the lock leaves at worst an open transaction on a
                // connection that is dropped below; the data is the server's to keep safe.
                let mut guard = self
                    .session
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                let session = match guard.take() {
                    Some(session) if !session.client.is_closed() => guard.insert(session),
                    _ => {
                        // The first connection fails fast (a wrong address is a clear error at
                        // start); a lost one is waited for (the server restarting), also when
                        // the session that lost it is already gone.
                        let client = connect(&self.url, self.connected.load(Ordering::Relaxed))?;
                        self.connected.store(true, Ordering::Relaxed);
                        guard.insert(Session {
                            client,
                            statements: HashMap::new(),
                        })
                    }
                };
                let result = work(&mut session.client, &mut session.statements);
                let lost = matches!(&result, Err(error) if error.is_unavailable());
                if lost || session.client.is_closed() {
                    *guard = None;
                }
                result
            });
            handle.join().unwrap_or(Err(Error::SessionPanicked))
        })
    }
}

/// How long a lost connection is tried again before the store's caller sees the error: a
/// PostgreSQL restart (a fast shutdown and start) fits well inside.
const RECONNECT_WINDOW: Duration = Duration::from_secs(30);

/// Connects; with `patient`, keeps trying while the server is unreachable (not when it
/// answers with an error: a refused login stays refused) for up to [`RECONNECT_WINDOW`].
fn connect(url: &str, patient: bool) -> Result<Client> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(100);
    loop {
        match Client::connect(url, NoTls) {
            Ok(client) => return Ok(client),
            Err(source)
                if patient
                    && super::error::postgres_unavailable(&source)
                    && started.elapsed() + pause < RECONNECT_WINDOW =>
            {
                tracing::warn!(url = %redact(url), error = %source, "PostgreSQL unreachable; retrying");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(source) => {
                return Err(Error::Connect {
                    url: redact(url),
                    source,
                });
            }
        }
    }
}

/// Closing the connection blocks on the client's own runtime too, so it happens on a thread
/// of its own: the last handle to a store is often dropped inside the engine's runtime.
impl Drop for Postgres {
    fn drop(&mut self) {
        let session = self
            .session
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(session) = session {
            let _ = std::thread::spawn(move || drop(session)).join();
        }
    }
}

/// Runs `work` in `txn` and commits it (dropping it on an error rolls it back); `committing`
/// is set once the commit is about to be sent.
fn run_in<T>(
    txn: postgres::Transaction<'_>,
    statements: &mut Statements,
    work: impl FnOnce(&dyn Conn) -> Result<T>,
    committing: &AtomicBool,
) -> Result<T> {
    let conn = PgConn {
        txn: RefCell::new(txn),
        statements: RefCell::new(statements),
    };
    let value = work(&conn)?;
    committing.store(true, Ordering::Relaxed);
    conn.txn.into_inner().commit()?;
    Ok(value)
}

/// One open PostgreSQL transaction as a [`Conn`].
struct PgConn<'a> {
    txn: RefCell<postgres::Transaction<'a>>,
    statements: RefCell<&'a mut Statements>,
}

impl Conn for PgConn<'_> {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    fn execute(&self, sql: &str, params: &[&dyn ToValue]) -> Result<u64> {
        let mut txn = self.txn.borrow_mut();
        let statement = prepare(&mut txn, &mut self.statements.borrow_mut(), sql, params)?;
        let values = values(params);
        Ok(txn.execute(&statement, &refs(&values))?)
    }

    fn query(&self, sql: &str, params: &[&dyn ToValue]) -> Result<Vec<Row>> {
        let mut txn = self.txn.borrow_mut();
        let statement = prepare(&mut txn, &mut self.statements.borrow_mut(), sql, params)?;
        let values = values(params);
        let rows = txn.query(&statement, &refs(&values))?;
        rows.iter().map(row_values).collect()
    }
}

/// The statement with every parameter's type given (from its [`Kind`]), prepared once per
/// connection.
fn prepare(
    txn: &mut postgres::Transaction<'_>,
    statements: &mut Statements,
    sql: &str,
    params: &[&dyn ToValue],
) -> Result<postgres::Statement> {
    let kinds: Vec<Kind> = params.iter().map(|p| p.kind()).collect();
    let key = (sql.to_string(), kinds);
    if let Some(statement) = statements.get(&key) {
        return Ok(statement.clone());
    }
    let types: Vec<Type> = key
        .1
        .iter()
        .map(|kind| match kind {
            Kind::Integer => Type::INT8,
            Kind::Real => Type::FLOAT8,
            Kind::Text => Type::TEXT,
            Kind::Blob => Type::BYTEA,
        })
        .collect();
    let statement = txn.prepare_typed(&placeholders(sql), &types)?;
    statements.insert(key, statement.clone());
    Ok(statement)
}

fn values(params: &[&dyn ToValue]) -> Vec<Value> {
    params.iter().map(|p| p.to_value()).collect()
}

fn refs(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// A result row's values by their column types.
fn row_values(row: &postgres::Row) -> Result<Row> {
    let mut values = Vec::with_capacity(row.len());
    for (index, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let value = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(index)?.map(Value::Integer)
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(index)?
                .map(|i| Value::Integer(i.into()))
        } else if *ty == Type::INT2 {
            row.try_get::<_, Option<i16>>(index)?
                .map(|i| Value::Integer(i.into()))
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(index)?
                .map(|b| Value::Integer(b.into()))
        } else if *ty == Type::FLOAT8 {
            row.try_get::<_, Option<f64>>(index)?.map(Value::Real)
        } else if *ty == Type::FLOAT4 {
            row.try_get::<_, Option<f32>>(index)?
                .map(|f| Value::Real(f.into()))
        } else if *ty == Type::BYTEA {
            row.try_get::<_, Option<Vec<u8>>>(index)?.map(Value::Blob)
        } else if [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME].contains(ty) {
            row.try_get::<_, Option<String>>(index)?.map(Value::Text)
        } else {
            return Err(Error::BadColumn {
                index,
                detail: format!(
                    "column `{}` has PostgreSQL type {ty}, which the store does not read \
                     (cast it to BIGINT, DOUBLE PRECISION or TEXT)",
                    column.name()
                ),
            });
        };
        values.push(value.unwrap_or(Value::Null));
    }
    Ok(Row::new(values))
}

/// A [`Value`] bound to whatever type PostgreSQL inferred for its placeholder: an integer is
/// also a `BOOLEAN` (SQLite's 0/1) or a narrower integer where the statement says so.
impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Integer(i) => {
                if *ty == Type::INT8 {
                    i.to_sql(ty, out)
                } else if *ty == Type::INT4 {
                    i32::try_from(*i)?.to_sql(ty, out)
                } else if *ty == Type::INT2 {
                    i16::try_from(*i)?.to_sql(ty, out)
                } else if *ty == Type::BOOL {
                    (*i != 0).to_sql(ty, out)
                } else if *ty == Type::FLOAT8 {
                    (*i as f64).to_sql(ty, out)
                } else {
                    i.to_string().to_sql(ty, out)
                }
            }
            Value::Real(f) => {
                if *ty == Type::FLOAT4 {
                    (*f as f32).to_sql(ty, out)
                } else {
                    f.to_sql(ty, out)
                }
            }
            Value::Text(s) => s.to_sql(ty, out),
            Value::Blob(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// `?N` (and a bare `?`, numbered in order) as `$N`, leaving quoted text and identifiers alone.
pub(super) fn placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    let mut next = 1;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => {
                quote = None;
                out.push(c);
            }
            (Some(_), c) => out.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                out.push(c);
            }
            (None, '?') => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                if digits.is_empty() {
                    digits = next.to_string();
                }
                next = digits.parse::<usize>().map_or(next, |n| n + 1);
                out.push('$');
                out.push_str(&digits);
            }
            (None, c) => out.push(c),
        }
    }
    out
}

/// Brings the database to this build's schema in one transaction under the write lock, so
/// engines starting at once against a new database migrate it once.
fn migrate(client: &mut Client, url: &str) -> Result<()> {
    let mut txn = client.transaction()?;
    txn.batch_execute(WRITE_LOCK_SQL)?;
    txn.batch_execute("CREATE TABLE IF NOT EXISTS cairn_schema (version BIGINT NOT NULL)")?;
    txn.batch_execute(JSON_EXTRACT)?;
    let found: Option<i64> = txn
        .query_opt("SELECT version FROM cairn_schema", &[])?
        .map(|row| row.try_get(0))
        .transpose()?;
    let found = match found {
        Some(version) => version,
        None => {
            txn.execute("INSERT INTO cairn_schema (version) VALUES (0)", &[])?;
            0
        }
    };
    let latest = MIGRATIONS.len() as i64;
    if found > latest {
        return Err(Error::NewerPostgresSchema {
            url: redact(url),
            found,
            supported: latest,
        });
    }
    for (version, ddl) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        txn.batch_execute(&translate_ddl(ddl))
            .map_err(|source| Error::MigratePostgres {
                version: version as i64 + 1,
                source,
            })?;
    }
    txn.execute("UPDATE cairn_schema SET version = $1", &[&latest])?;
    txn.commit()?;
    Ok(())
}

/// SQLite's `json_extract(document, '$.a.b')` for the statements and indexes that use it: the
/// value at that path as text (an object as its JSON text), NULL where there is none.
const JSON_EXTRACT: &str = "CREATE OR REPLACE FUNCTION json_extract(document TEXT, path TEXT)
    RETURNS TEXT LANGUAGE sql IMMUTABLE
    AS $$ SELECT document::jsonb #>> string_to_array(substr(path, 3), '.') $$";

/// SQLite's DDL as PostgreSQL's (see the module docs).
pub(super) fn translate_ddl(sqlite: &str) -> String {
    static RULES: OnceLock<Vec<(regex::Regex, &'static str)>> = OnceLock::new();
    let rules = RULES.get_or_init(|| {
        [
            // An append-only guard: a trigger that refuses, optionally only while the run
            // that owns the row exists.
            (
                r"(?s)CREATE TRIGGER (\w+) BEFORE (UPDATE|DELETE) ON (\w+)\s+WHEN EXISTS \(SELECT 1 FROM (\w+) WHERE id = OLD\.(\w+)\)\s+BEGIN SELECT RAISE\(ABORT, '([^']*)'\); END;",
                "CREATE FUNCTION ${1}_guard() RETURNS trigger LANGUAGE plpgsql AS $$$$ BEGIN \
                 IF EXISTS (SELECT 1 FROM $4 WHERE id = OLD.$5) THEN RAISE EXCEPTION '$6'; END IF; \
                 RETURN OLD; END $$$$; CREATE TRIGGER $1 BEFORE $2 ON $3 FOR EACH ROW EXECUTE FUNCTION ${1}_guard();",
            ),
            (
                r"(?s)CREATE TRIGGER (\w+) BEFORE (UPDATE|DELETE) ON (\w+)\s+BEGIN SELECT RAISE\(ABORT, '([^']*)'\); END;",
                "CREATE FUNCTION ${1}_guard() RETURNS trigger LANGUAGE plpgsql AS $$$$ BEGIN \
                 RAISE EXCEPTION '$4'; END $$$$; CREATE TRIGGER $1 BEFORE $2 ON $3 FOR EACH ROW \
                 EXECUTE FUNCTION ${1}_guard();",
            ),
            (
                r"DROP TRIGGER (\w+);",
                "DROP TRIGGER $1 ON events; DROP FUNCTION ${1}_guard();",
            ),
            (
                r"INTEGER\s+PRIMARY KEY AUTOINCREMENT",
                "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
            ),
            (r"\bINTEGER\b", "BIGINT"),
            (r"\bREAL\b", "DOUBLE PRECISION"),
            (r"\bBLOB\b", "BYTEA"),
        ]
        .into_iter()
        .filter_map(|(pattern, replacement)| {
            regex::Regex::new(pattern)
                .ok()
                .map(|regex| (regex, replacement))
        })
        .collect()
    });
    let mut ddl = sqlite.to_string();
    for (regex, replacement) in rules {
        ddl = regex.replace_all(&ddl, *replacement).into_owned();
    }
    ddl
}

/// `postgres://user:secret@host/db` as `postgres://user:***@host/db`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres_outside_quotes() {
        assert_eq!(
            placeholders("SELECT ?1, '?2', \"a?\" FROM t WHERE a = ?3 AND b = ?"),
            "SELECT $1, '?2', \"a?\" FROM t WHERE a = $3 AND b = $4"
        );
        assert_eq!(placeholders("a = ? AND b = ?"), "a = $1 AND b = $2");
    }

    #[test]
    fn the_schema_translates_to_postgres() {
        let all: String = MIGRATIONS.iter().map(|m| translate_ddl(m)).collect();
        assert!(!all.contains("AUTOINCREMENT"));
        assert!(!all.contains("RAISE(ABORT"));
        assert!(!all.contains(" INTEGER"), "{all}");
        assert!(all.contains("CREATE FUNCTION events_are_append_only_update_guard()"));
        assert!(all.contains("DROP TRIGGER events_are_append_only_delete ON events"));
    }

    /// A write whose connection is cut while it waits for the write lock (as a restart cuts
    /// every session) did not commit: `write_again` runs it once more on a new connection and
    /// it lands once; a plain `write` reports the lost connection.
    #[test]
    fn a_write_cut_off_before_its_commit_runs_again() {
        let url = super::super::test_postgres::database();
        let db = Postgres::open(&url).expect("the store");
        db.write(|conn| conn.execute("CREATE TABLE marks (id BIGINT)", &[]))
            .expect("a table");
        let count = || {
            db.read(|conn| {
                let row = conn.query_opt("SELECT count(*) FROM marks", &[])?;
                row.ok_or(Error::SessionPanicked)?.get::<i64>(0)
            })
            .expect("the count")
        };
        let mut holder = Client::connect(&url, NoTls).expect("connect");
        // The backend waiting for the write lock, once there is one.
        let waiter = |holder: &mut Client| {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let waiting =
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND NOT granted";
                if let Some(row) = holder.query_opt(waiting, &[]).expect("pg_locks") {
                    return row.get::<_, i32>(0);
                }
                assert!(Instant::now() < deadline, "the write never waited");
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        for again in [true, false] {
            holder
                .batch_execute(&format!("BEGIN; {WRITE_LOCK_SQL}"))
                .expect("the write lock");
            let result = std::thread::scope(|scope| {
                let writing = scope.spawn(|| {
                    let insert =
                        |conn: &dyn Conn| conn.execute("INSERT INTO marks VALUES (1)", &[]);
                    if again {
                        db.write_again(insert)
                    } else {
                        db.write(insert)
                    }
                });
                let cut = waiter(&mut holder);
                holder
                    .execute("SELECT pg_terminate_backend($1)", &[&cut])
                    .expect("terminate");
                if again {
                    // Tried again on a new connection: it waits for the lock once more.
                    assert_ne!(waiter(&mut holder), cut, "a new session");
                }
                holder.batch_execute("ROLLBACK").expect("release");
                writing.join().expect("no panic")
            });
            if again {
                result.expect("run again on a new connection");
            } else {
                let error = result.expect_err("a plain write is not run again");
                assert!(error.is_unavailable(), "{error}");
            }
            assert_eq!(count(), 1, "inserted once in all");
        }
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("postgres://cairn:hunter2@db:5432/cairn"),
            "postgres://cairn:***@db:5432/cairn"
        );
        assert_eq!(redact("postgres://db/cairn"), "postgres://db/cairn");
    }
}
