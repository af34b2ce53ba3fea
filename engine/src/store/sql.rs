//! Backend-neutral SQL: the one transaction type the store's logic is written against, so that
//! SQLite (the embedded default) and PostgreSQL (`store/postgres.rs`, many engines and workers
//! on one database) run the same statements.
//!
//! Statements use SQLite's numbered placeholders (`?1`, `?2`); the PostgreSQL side rewrites
//! them to `$1`, `$2`. Values cross the boundary as [`Value`] (SQLite's five storage classes),
//! so a column read as `i64` on one side is `i64` on the other; booleans are integers 0/1, as
//! SQLite stores them, and integer columns are `BIGINT` on PostgreSQL.

use super::error::{Error, Result};

/// One SQL value, as SQLite stores it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// What a parameter holds, even when it is NULL: PostgreSQL must know a parameter's type
/// where a statement alone does not tell it (`?2 IS NULL OR step_id = ?2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Integer,
    Real,
    Text,
    Blob,
}

/// A Rust value usable as a statement parameter.
pub trait ToValue {
    fn to_value(&self) -> Value;
    fn kind(&self) -> Kind;
}

/// The [`Kind`] of a type, known without a value (for `None`).
pub trait Typed {
    const KIND: Kind;
}

/// A Rust value readable from a column.
pub trait FromValue: Sized {
    fn from_value(value: Value) -> std::result::Result<Self, String>;
}

/// One result row, its values in column order.
#[derive(Debug, Clone)]
pub struct Row {
    values: Vec<Value>,
}

impl Row {
    pub(super) fn new(values: Vec<Value>) -> Self {
        Self { values }
    }

    /// Column `index` as `T`; a missing column or a value of another type is
    /// [`Error::BadColumn`], naming both.
    pub fn get<T: FromValue>(&self, index: usize) -> Result<T> {
        let value = self
            .values
            .get(index)
            .cloned()
            .ok_or_else(|| Error::BadColumn {
                index,
                detail: format!("the row has {} columns", self.values.len()),
            })?;
        T::from_value(value).map_err(|detail| Error::BadColumn { index, detail })
    }
}

/// One open transaction of either backend. Every method runs inside it; the backend commits
/// when the work given to `Store::write` returns `Ok`, and rolls back otherwise.
pub trait Conn {
    /// Runs a statement that returns no rows; the number of rows it changed.
    fn execute(&self, sql: &str, params: &[&dyn ToValue]) -> Result<u64>;

    /// Runs a query; all its rows.
    fn query(&self, sql: &str, params: &[&dyn ToValue]) -> Result<Vec<Row>>;

    /// Which database this is: for the few statements whose SQL differs (row locks).
    fn backend(&self) -> Backend;

    /// Runs a query expected to return at most one row.
    fn query_opt(&self, sql: &str, params: &[&dyn ToValue]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
}

/// The two stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "PostgreSQL",
        })
    }
}

macro_rules! integer {
    ($($t:ty),*) => {$(
        impl ToValue for $t {
            fn to_value(&self) -> Value {
                Value::Integer(i64::from(*self))
            }
            fn kind(&self) -> Kind {
                Kind::Integer
            }
        }
        impl Typed for $t {
            const KIND: Kind = Kind::Integer;
        }
        impl FromValue for $t {
            fn from_value(value: Value) -> std::result::Result<Self, String> {
                match value {
                    Value::Integer(i) => <$t>::try_from(i)
                        .map_err(|_| format!("{i} does not fit {}", stringify!($t))),
                    other => Err(format!("expected an integer, found {}", kind(&other))),
                }
            }
        }
    )*};
}
integer!(i64, i32, u32, u16, u8);

/// Counts (tokens, sizes) are `u64` in Rust and signed 64-bit in both databases: a count past
/// `i64::MAX` is stored as `i64::MAX` (no real count gets there), and a negative stored value
/// does not read as a count.
impl ToValue for u64 {
    fn to_value(&self) -> Value {
        Value::Integer(i64::try_from(*self).unwrap_or(i64::MAX))
    }
    fn kind(&self) -> Kind {
        Kind::Integer
    }
}

impl Typed for u64 {
    const KIND: Kind = Kind::Integer;
}

impl FromValue for u64 {
    fn from_value(value: Value) -> std::result::Result<Self, String> {
        let i = i64::from_value(value)?;
        u64::try_from(i).map_err(|_| format!("{i} does not fit u64"))
    }
}

impl Typed for bool {
    const KIND: Kind = Kind::Integer;
}

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Integer(i64::from(*self))
    }

    fn kind(&self) -> Kind {
        Kind::Integer
    }
}

impl FromValue for bool {
    fn from_value(value: Value) -> std::result::Result<Self, String> {
        i64::from_value(value).map(|i| i != 0)
    }
}

impl Typed for f64 {
    const KIND: Kind = Kind::Real;
}

impl ToValue for f64 {
    fn to_value(&self) -> Value {
        Value::Real(*self)
    }

    fn kind(&self) -> Kind {
        Kind::Real
    }
}

impl FromValue for f64 {
    fn from_value(value: Value) -> std::result::Result<Self, String> {
        match value {
            Value::Real(f) => Ok(f),
            Value::Integer(i) => Ok(i as f64),
            other => Err(format!("expected a number, found {}", kind(&other))),
        }
    }
}

impl Typed for str {
    const KIND: Kind = Kind::Text;
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_string())
    }

    fn kind(&self) -> Kind {
        Kind::Text
    }
}

impl Typed for String {
    const KIND: Kind = Kind::Text;
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }

    fn kind(&self) -> Kind {
        Kind::Text
    }
}

impl FromValue for String {
    fn from_value(value: Value) -> std::result::Result<Self, String> {
        match value {
            Value::Text(s) => Ok(s),
            other => Err(format!("expected text, found {}", kind(&other))),
        }
    }
}

impl Typed for [u8] {
    const KIND: Kind = Kind::Blob;
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }

    fn kind(&self) -> Kind {
        Kind::Blob
    }
}

impl Typed for Vec<u8> {
    const KIND: Kind = Kind::Blob;
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }

    fn kind(&self) -> Kind {
        Kind::Blob
    }
}

impl FromValue for Vec<u8> {
    fn from_value(value: Value) -> std::result::Result<Self, String> {
        match value {
            Value::Blob(b) => Ok(b),
            other => Err(format!("expected bytes, found {}", kind(&other))),
        }
    }
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
    fn kind(&self) -> Kind {
        (**self).kind()
    }
}

impl<T: Typed + ?Sized> Typed for &T {
    const KIND: Kind = T::KIND;
}

impl<T: ToValue + Typed> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        self.as_ref().map_or(Value::Null, ToValue::to_value)
    }
    fn kind(&self) -> Kind {
        T::KIND
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(value: Value) -> std::result::Result<Self, String> {
        match value {
            Value::Null => Ok(None),
            other => T::from_value(other).map(Some),
        }
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "NULL",
        Value::Integer(_) => "an integer",
        Value::Real(_) => "a real number",
        Value::Text(_) => "text",
        Value::Blob(_) => "bytes",
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// SQLite: the connection a `Store::write` transaction (or a read) runs on.
impl Conn for rusqlite::Connection {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    fn execute(&self, sql: &str, params: &[&dyn ToValue]) -> Result<u64> {
        let values = values(params);
        let changed = self
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(values.iter()))?;
        Ok(changed as u64)
    }

    fn query(&self, sql: &str, params: &[&dyn ToValue]) -> Result<Vec<Row>> {
        let values = values(params);
        let mut stmt = self.prepare_cached(sql)?;
        let columns = stmt.column_count();
        let rows = stmt.query_map(rusqlite::params_from_iter(values.iter()), |row| {
            (0..columns)
                .map(|i| {
                    Ok(match row.get_ref(i)? {
                        rusqlite::types::ValueRef::Null => Value::Null,
                        rusqlite::types::ValueRef::Integer(i) => Value::Integer(i),
                        rusqlite::types::ValueRef::Real(f) => Value::Real(f),
                        rusqlite::types::ValueRef::Text(t) => {
                            Value::Text(String::from_utf8_lossy(t).into_owned())
                        }
                        rusqlite::types::ValueRef::Blob(b) => Value::Blob(b.to_vec()),
                    })
                })
                .collect::<rusqlite::Result<Vec<Value>>>()
                .map(Row::new)
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn values(params: &[&dyn ToValue]) -> Vec<Value> {
    params.iter().map(|p| p.to_value()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_sqlite() {
        let conn = rusqlite::Connection::open_in_memory().expect("in-memory database");
        conn.execute(
            "CREATE TABLE t (a INTEGER, b TEXT, c REAL, d BLOB, e INTEGER)",
            [],
        )
        .expect("table");
        let none: Option<String> = None;
        let changed = Conn::execute(
            &conn,
            "INSERT INTO t VALUES (?1, ?2, ?3, ?4, ?5)",
            &[&7_u32, &"seven", &0.5, &vec![1_u8, 2], &none],
        )
        .expect("insert");
        assert_eq!(changed, 1);
        let row = conn
            .query_opt("SELECT a, b, c, d, e, a = 7 FROM t", &[])
            .expect("query")
            .expect("one row");
        assert_eq!(row.get::<u32>(0).expect("a"), 7);
        assert_eq!(row.get::<String>(1).expect("b"), "seven");
        assert_eq!(row.get::<f64>(2).expect("c"), 0.5);
        assert_eq!(row.get::<Vec<u8>>(3).expect("d"), vec![1, 2]);
        assert_eq!(row.get::<Option<String>>(4).expect("e"), None);
        assert!(row.get::<bool>(5).expect("bool"));
        let wrong = row.get::<String>(0).expect_err("an integer is not text");
        assert!(wrong.to_string().contains("column 0"), "{wrong}");
        assert!(row.get::<i64>(9).is_err());
    }
}
