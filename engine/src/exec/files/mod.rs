//! Artifacts and caches: files a step hands to the steps depending on it, and files kept
//! between runs of the same repository. Archives (`archive.rs`) are stored as blobs named by
//! their SHA-256 (`blobs.rs`), indexed in the store (`store/files.rs`). See `ARCHITECTURE.md`
//! ("Artifacts and caches").

mod archive;
mod attempt;
mod blobs;
mod error;
mod key;

pub use archive::{Collected, Entry, Extracted, collect, extract, write_tar};
pub use attempt::{AttemptFiles, Restored};
pub use blobs::{BlobWriter, Blobs, GARBAGE_GRACE};
pub use error::{Error, Result};
pub use key::render as render_key;

/// The cache limit when `cairn.yaml` says nothing (`retention.cache_size`): 1 GiB.
pub const DEFAULT_CACHE_LIMIT: u64 = 1 << 30;
