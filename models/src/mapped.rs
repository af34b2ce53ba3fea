//! [`SharedBytes`]: read-only bytes shared without copying — the model file mapped into
//! memory ([`map_file`]), or a vector. The quantized weights are read in place from the
//! mapping, as llama.cpp does: loading touches no weight, the pages come from the page cache
//! when a layer first runs, and processes running the same model share them.

use std::fs::File;
use std::ops::{Deref, Range};
use std::sync::Arc;

/// A range of shared, immutable bytes; cloning shares them.
#[derive(Clone)]
pub(crate) struct SharedBytes {
    owner: Arc<dyn AsRef<[u8]> + Send + Sync>,
    range: Range<usize>,
}

impl SharedBytes {
    /// All of `bytes` (tests build matrices from vectors).
    #[cfg(test)]
    pub(crate) fn from_vec(bytes: Vec<u8>) -> Self {
        let range = 0..bytes.len();
        Self {
            owner: Arc::new(bytes),
            range,
        }
    }

    /// The bytes at `range` of these, or `None` when it does not lie inside them.
    pub(crate) fn slice(&self, range: Range<usize>) -> Option<Self> {
        let start = self.range.start.checked_add(range.start)?;
        let end = self.range.start.checked_add(range.end)?;
        (start <= end && end <= self.range.end).then(|| Self {
            owner: self.owner.clone(),
            range: start..end,
        })
    }
}

impl Deref for SharedBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &(*self.owner).as_ref()[self.range.clone()]
    }
}

/// `file` mapped read-only into memory.
#[allow(unsafe_code)]
pub(crate) fn map_file(file: &File) -> std::io::Result<SharedBytes> {
    // SAFETY: the mapping is read-only and private to this process. Its one hazard is the
    // file changing underneath it (a truncation turns reads past the new end into SIGBUS);
    // Cairn never writes model files, and the model cache replaces a file by renaming a new
    // one over it, which leaves this mapping on the old inode. llama.cpp maps models the same
    // way.
    let map = unsafe { memmap2::Mmap::map(file)? };
    let range = 0..map.len();
    Ok(SharedBytes {
        owner: Arc::new(map),
        range,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_stay_inside_their_bytes() {
        let bytes = SharedBytes::from_vec((0..10).collect());
        let middle = bytes.slice(2..8).expect("inside");
        assert_eq!(&*middle, &[2, 3, 4, 5, 6, 7]);
        assert_eq!(&*middle.slice(1..3).expect("inside"), &[3, 4]);
        assert!(middle.slice(5..7).is_none());
        assert!(middle.slice(usize::MAX..usize::MAX).is_none());
    }

    #[test]
    fn maps_a_file() {
        let mut file = tempfile::tempfile().expect("temp file");
        std::io::Write::write_all(&mut file, b"GGUF and more").expect("write");
        let bytes = map_file(&file).expect("map");
        assert_eq!(&*bytes, b"GGUF and more");
    }
}
