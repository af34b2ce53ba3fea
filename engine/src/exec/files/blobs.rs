//! Content-addressed blob files: `$CAIRN_HOME/blobs/sha256/<hex>`, beside the database.
//!
//! A blob is written under a temporary name in `blobs/tmp/`, synced, then renamed into place,
//! so a blob file that exists is complete; its name is the SHA-256 of its bytes, so the same
//! archive saved twice is stored once. Reading checks the hash before anything is extracted:
//! a damaged or missing blob is an error naming it, never half an archive.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::error::{Error, Result, io};
use crate::store::Store;

/// Unreferenced blobs younger than this are left alone by garbage collection: a step may have
/// written one whose index row is not committed yet.
pub const GARBAGE_GRACE: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct Blobs {
    root: PathBuf,
}

impl Blobs {
    /// The blob directory of the home holding `store`'s database.
    pub fn beside(store: &Store) -> Blobs {
        let home = store.path().parent().unwrap_or(Path::new("."));
        Blobs {
            root: home.join("blobs"),
        }
    }

    pub fn path(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(sha256)
    }

    /// A new blob, written through [`BlobWriter`] and named when finished.
    pub fn writer(&self) -> Result<BlobWriter> {
        let temporary = self.root.join("tmp");
        std::fs::create_dir_all(&temporary).map_err(io("create", &temporary))?;
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let path = temporary.join(format!("{}-{nanos}", std::process::id()));
        let file = File::create_new(&path).map_err(io("create", &path))?;
        Ok(BlobWriter {
            file,
            path,
            root: self.root.clone(),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// The blob, opened at its start after checking that its bytes hash to its name.
    pub fn open_verified(&self, sha256: &str) -> Result<File> {
        let path = self.path(sha256);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::BlobMissing {
                    sha256: sha256.to_owned(),
                    path,
                });
            }
            Err(error) => return Err(io("open", &path)(error)),
        };
        let mut hasher = Sha256::new();
        std::io::copy(&mut file, &mut hasher).map_err(io("read", &path))?;
        let found = hex::encode(hasher.finalize());
        if found != sha256 {
            return Err(Error::BlobDamaged {
                sha256: sha256.to_owned(),
                found,
            });
        }
        file.rewind().map_err(io("read", &path))?;
        Ok(file)
    }

    /// Deletes one blob; a blob already gone is fine.
    pub fn remove(&self, sha256: &str) -> Result<()> {
        let path = self.path(sha256);
        match std::fs::remove_file(&path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(io("remove", &path)(error))
            }
            _ => Ok(()),
        }
    }

    /// Deletes blobs `referenced` does not name and temporary files, both only when older than
    /// [`GARBAGE_GRACE`]; returns how many files went and their bytes.
    pub fn collect_garbage(&self, referenced: &HashSet<String>) -> Result<(usize, u64)> {
        let cutoff = SystemTime::now()
            .checked_sub(GARBAGE_GRACE)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut removed = (0, 0);
        for (directory, keep_referenced) in [("sha256", true), ("tmp", false)] {
            let directory = self.root.join(directory);
            let entries = match std::fs::read_dir(&directory) {
                Ok(entries) => entries,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
                Err(error) => return Err(io("read", &directory)(error)),
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if keep_referenced && referenced.contains(&name) {
                    continue;
                }
                let Ok(metadata) = entry.metadata() else {
                    continue;
                };
                if metadata.modified().is_ok_and(|at| at > cutoff) {
                    continue;
                }
                let path = entry.path();
                std::fs::remove_file(&path).map_err(io("remove", &path))?;
                removed.0 += 1;
                removed.1 += metadata.len();
            }
        }
        Ok(removed)
    }
}

/// A blob being written: hashes what passes through, then takes its name.
pub struct BlobWriter {
    file: File,
    path: PathBuf,
    root: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl Write for BlobWriter {
    fn write(&mut self, buffer: &[u8]) -> std::io::Result<usize> {
        let written = self.file.write(buffer)?;
        self.hasher.update(&buffer[..written]);
        self.size += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter {
    /// Syncs the bytes and renames the file to its hash: `(sha256, size)`.
    pub fn finish(self) -> Result<(String, u64)> {
        self.file.sync_all().map_err(io("sync", &self.path))?;
        let sha256 = hex::encode(self.hasher.finalize());
        let directory = self.root.join("sha256");
        std::fs::create_dir_all(&directory).map_err(io("create", &directory))?;
        let target = directory.join(&sha256);
        // Same name, same bytes: a blob already there is this one.
        std::fs::rename(&self.path, &target).map_err(io("store", &target))?;
        Ok((sha256, self.size))
    }

    /// Drops what was written (the archive could not be completed).
    pub fn abandon(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// SHA-256 of everything `reader` yields, hex, and the byte count.
pub fn hash_reader(mut reader: impl Read) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let size = std::io::copy(&mut reader, &mut hasher)?;
    Ok((hex::encode(hasher.finalize()), size))
}
