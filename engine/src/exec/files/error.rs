//! What can go wrong storing or restoring artifacts and caches; every message names the file,
//! pattern, blob or archive entry it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{pattern}` matches no file in the workspace")]
    NoMatch { pattern: String },
    #[error("`{path}` is a symbolic link to `{target}`, outside the workspace; it is not followed")]
    LinkOutside { path: String, target: String },
    #[error("blob sha256:{sha256} is missing from {}", path.display())]
    BlobMissing { sha256: String, path: PathBuf },
    #[error("blob sha256:{sha256} is damaged: its content hashes to sha256:{found}")]
    BlobDamaged { sha256: String, found: String },
    #[error("refusing archive entry `{entry}`: {reason}")]
    UnsafeEntry { entry: String, reason: String },
    #[error("failed to read the archive: {source}")]
    Archive {
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// `map_err` for an I/O call on `path`.
pub(crate) fn io(
    action: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}
