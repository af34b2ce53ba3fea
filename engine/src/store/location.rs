//! Where the state lives, from the `store:` key of `$CAIRN_HOME/cairn.yaml` (or `CAIRN_STORE`,
//! which wins):
//!
//! ```yaml
//! store: postgres://cairn:secret@db.internal:5432/cairn   # many engines and workers on one database
//! ```
//!
//! Absent: the SQLite file `$CAIRN_HOME/cairn.db`, the embedded default. The other sections of
//! the file have their own readers; this one looks at `store:` only.

use std::path::{Path, PathBuf};

use marked_yaml::Spanned;
use serde::Deserialize;

use super::error::Result as StoreResult;
use super::sqlite::Store;
use crate::pipeline::limits;

/// The state database, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Sqlite(PathBuf),
    Postgres(String),
}

#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct LocationError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct File {
    store: Option<Spanned<String>>,
}

impl Location {
    /// `CAIRN_STORE`, else `store:` in `config` (a missing file or key: SQLite in `home`).
    pub fn load(config: &Path, home: &Path) -> Result<Location, LocationError> {
        if let Some(value) = std::env::var_os("CAIRN_STORE") {
            let value = value.to_string_lossy();
            return Self::parse_value(&value, home).map_err(|message| LocationError {
                file: "CAIRN_STORE".into(),
                line: 1,
                column: 1,
                message,
            });
        }
        let file = config.display().to_string();
        if !config.exists() {
            return Ok(Location::Sqlite(home.join("cairn.db")));
        }
        let text = limits::read_limited(config).map_err(|message| LocationError {
            file: file.clone(),
            line: 1,
            column: 1,
            message: format!("failed to read: {message}"),
        })?;
        Self::parse(&file, &text, home)
    }

    pub fn parse(file: &str, text: &str, home: &Path) -> Result<Location, LocationError> {
        let error = |line: usize, column: usize, message: String| LocationError {
            file: file.to_owned(),
            line,
            column,
            message,
        };
        if text.trim().is_empty() {
            return Ok(Location::Sqlite(home.join("cairn.db")));
        }
        let parsed: File = limits::deserialize(text, |message| format!("`store`: {message}"))
            .map_err(|e| error(e.location.line, e.location.column, e.message))?;
        match parsed.store {
            None => Ok(Location::Sqlite(home.join("cairn.db"))),
            Some(value) => {
                let (line, column) = value
                    .span()
                    .start()
                    .map_or((1, 1), |mark| (mark.line(), mark.column()));
                Self::parse_value(value.as_str(), home)
                    .map_err(|message| error(line, column, message))
            }
        }
    }

    fn parse_value(value: &str, home: &Path) -> Result<Location, String> {
        let value = value.trim();
        if value.is_empty() || value == "sqlite" {
            return Ok(Location::Sqlite(home.join("cairn.db")));
        }
        if value.starts_with("postgres://") || value.starts_with("postgresql://") {
            return Ok(Location::Postgres(value.to_string()));
        }
        Err(format!(
            "`store` must be a PostgreSQL address (postgres://user:password@host:port/database) \
             or `sqlite` (the file $CAIRN_HOME/cairn.db, also the default), not {value:?}"
        ))
    }

    /// Opens the store here; `home` keeps what stays per machine either way.
    pub fn open(&self, home: &Path) -> StoreResult<Store> {
        match self {
            Location::Sqlite(path) => Store::open(path),
            Location::Postgres(url) => Store::open_postgres(url, &home.join("cairn.db")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_key_picks_the_backend_and_a_bad_one_is_placed() {
        let home = Path::new("/h");
        assert_eq!(
            Location::parse("c.yaml", "retention: { runs: 9d }\n", home).expect("default"),
            Location::Sqlite(home.join("cairn.db"))
        );
        assert_eq!(
            Location::parse("c.yaml", "store: postgres://db/cairn\n", home).expect("postgres"),
            Location::Postgres("postgres://db/cairn".into())
        );
        let error = Location::parse("c.yaml", "llm: {}\nstore: mysql://db\n", home)
            .expect_err("not a store");
        assert_eq!((error.line, error.column), (2, 8), "{error}");
        assert!(error.to_string().contains("PostgreSQL address"), "{error}");
        let error = Location::parse("c.yaml", "store: [a]\n", home).expect_err("not a string");
        assert!(error.to_string().contains("c.yaml:1:"), "{error}");
    }
}
