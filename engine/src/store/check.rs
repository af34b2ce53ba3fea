//! Looking at a state database before using it: refuse a damaged file without changing it.
//!
//! Opening read-write and then finding damage is too late: closing that connection checkpoints
//! the WAL into the refused file (it grows) and deletes its `-wal`/`-shm`, destroying evidence
//! that might have recovered it. So the check opens the file read-only first (a read-only
//! connection never checkpoints nor deletes the WAL), runs `PRAGMA quick_check` (cheap: it
//! skips the index-content cross-checks of `integrity_check`, which `cairn doctor` runs), and
//! only a file that passes is opened for writing. A zero-length file is refused too: SQLite
//! would happily turn it into a fresh database, silently starting an empty history in place of
//! whatever was lost.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::error::{Error, Result};

/// How much of a damage report goes into the error message; the first lines say what broke,
/// and `cairn doctor` prints the whole of `integrity_check`.
const REPORT_LIMIT: usize = 600;

/// Which `PRAGMA` checks a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// `quick_check`: page structure and formats, O(database size) but without index lookups.
    Quick,
    /// `integrity_check`: everything `quick_check` does, plus every index against its table.
    Full,
}

impl Check {
    fn pragma(self) -> &'static str {
        match self {
            Check::Quick => "PRAGMA quick_check",
            Check::Full => "PRAGMA integrity_check",
        }
    }
}

/// Refuses an existing database that is empty or fails `check`, touching none of its files.
/// A missing file passes: the caller creates it.
pub fn refuse_damaged(path: &Path, check: Check) -> Result<()> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Inspect {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if !metadata.is_file() {
        return Err(Error::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if metadata.len() == 0 {
        return Err(Error::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    let report = check_read_only(path, check)?;
    if report == "ok" {
        return Ok(());
    }
    Err(Error::Corrupt {
        path: path.to_path_buf(),
        check: check.pragma(),
        report: shorten(&report),
    })
}

/// The check's report (`ok` when sound), from a read-only connection.
fn check_read_only(path: &Path, check: Check) -> Result<String> {
    let corrupt = |source: rusqlite::Error| Error::Corrupt {
        path: path.to_path_buf(),
        check: check.pragma(),
        report: source.to_string(),
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let open_error = |source| Error::Open {
        path: path.to_path_buf(),
        source,
    };
    // Without a WAL holding commits, the file alone is the whole database: open it
    // `immutable`, which creates no `-wal`/`-shm` and takes no lock, so nothing at all changes.
    // With one, a plain read-only connection reads it (and never checkpoints or deletes it).
    let wal = format!("{}-wal", path.display());
    let has_wal = std::fs::metadata(&wal).is_ok_and(|metadata| metadata.len() > 0);
    let opened = if has_wal {
        Connection::open_with_flags(path, flags)
    } else {
        Connection::open_with_flags(immutable_uri(path), flags | OpenFlags::SQLITE_OPEN_URI)
    };
    let conn =
        opened.map_err(
            |source| match path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
                Some(dir) => writable_or(dir, open_error(source)),
                None => open_error(source),
            },
        )?;
    // Another engine may be mid-commit; wait for it as the read-write open would.
    let _ = conn.busy_timeout(std::time::Duration::from_secs(30));
    let report = run_check(&conn, check).map_err(|source| match source {
        rusqlite::Error::SqliteFailure(ref failure, _) if is_damage(failure.code) => {
            corrupt(source)
        }
        other => open_error(other),
    })?;
    Ok(report)
}

/// `file:PATH?immutable=1`, with the path percent-encoded as SQLite's URI parser expects.
fn immutable_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut uri = String::from("file:");
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"/-_.~".contains(&byte) {
            uri.push(char::from(byte));
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
}

fn is_damage(code: rusqlite::ErrorCode) -> bool {
    matches!(
        code,
        rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
    )
}

/// Runs the check's pragma on an open connection; its lines joined with "; ".
pub(super) fn run_check(conn: &Connection, check: Check) -> rusqlite::Result<String> {
    let mut stmt = conn.prepare(check.pragma())?;
    let lines = stmt
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(lines.join("; "))
}

/// `fallback`, unless `dir` cannot be written to, which is the likelier thing for a person to
/// fix than SQLite's "unable to open database file".
pub(super) fn writable_or(dir: &Path, fallback: Error) -> Error {
    match nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK) {
        Err(errno) if dir.exists() => Error::NotWritable {
            dir: dir.to_path_buf(),
            reason: errno.desc().to_lowercase(),
        },
        _ => match nearest_existing(dir) {
            Some(ancestor)
                if nix::unistd::access(ancestor, nix::unistd::AccessFlags::W_OK).is_err() =>
            {
                Error::NotWritable {
                    dir: dir.to_path_buf(),
                    reason: format!("{} is not writable", ancestor.display()),
                }
            }
            _ => fallback,
        },
    }
}

fn nearest_existing(dir: &Path) -> Option<&Path> {
    dir.ancestors().find(|ancestor| ancestor.exists())
}

fn shorten(report: &str) -> String {
    if report.len() <= REPORT_LIMIT {
        return report.to_owned();
    }
    let mut end = REPORT_LIMIT;
    while !report.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (`cairn doctor` shows the full report)", &report[..end])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_passes_and_an_empty_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cairn.db");
        refuse_damaged(&path, Check::Quick).unwrap();
        std::fs::write(&path, b"").unwrap();
        let error = refuse_damaged(&path, Check::Quick).unwrap_err();
        assert!(matches!(error, Error::EmptyFile { .. }), "{error}");
        assert!(error.to_string().contains("is empty"), "{error}");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "left as found");
    }

    #[test]
    fn a_directory_in_place_of_the_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let error = refuse_damaged(dir.path(), Check::Quick).unwrap_err();
        assert!(matches!(error, Error::NotAFile { .. }), "{error}");
    }

    #[test]
    fn a_sound_database_without_a_wal_is_checked_without_creating_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("odd name?#%.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);",
            )
            .unwrap();
        }
        let listing = || {
            let mut names: Vec<String> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        let before = listing();
        refuse_damaged(&path, Check::Full).unwrap();
        assert_eq!(listing(), before, "no -wal or -shm appears");
    }

    #[test]
    fn long_reports_are_shortened_on_a_character_boundary() {
        let report = "é".repeat(REPORT_LIMIT);
        let short = shorten(&report);
        assert!(short.len() < report.len());
        assert!(short.ends_with("full report)"));
    }
}
