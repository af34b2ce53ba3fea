//! Rendering a cache key template (`pipeline::KeyTemplate`) in a run's workspace.
//!
//! `{{ hash 'Cargo.lock' }}` is the SHA-256 of that file's bytes, hex (what `sha256sum` prints),
//! so a key can be checked by hand. Several patterns, a glob or a directory hash every
//! regular file they match: the SHA-256 of `sha256sum`-style lines (`<hex>  <path>\n`) in path
//! order. A link is hashed by its target's name and never followed. A pattern matching
//! nothing is an error naming it: a misspelt lockfile would otherwise give a constant key that
//! restores a stale cache forever.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::archive::{Entry, collect};
use super::blobs::hash_reader;
use super::error::{Result, io};
use crate::pipeline::{KeyPart, KeyTemplate};

pub fn render(template: &KeyTemplate, root: &Path) -> Result<String> {
    let mut key = String::new();
    for part in &template.parts {
        match part {
            KeyPart::Literal(text) => key.push_str(text),
            KeyPart::Hash(patterns) => key.push_str(&hash(patterns, root)?),
        }
    }
    Ok(key)
}

fn hash(patterns: &[String], root: &Path) -> Result<String> {
    let collected = collect(root, patterns, true)?;
    let mut lines = Vec::new();
    for (relative, entry) in &collected {
        let digest = match entry {
            Entry::Directory => continue,
            Entry::Link(target) => hex::encode(Sha256::digest(target.as_bytes())),
            Entry::File => {
                let full = root.join(relative);
                let file = std::fs::File::open(&full).map_err(io("read", &full))?;
                hash_reader(file).map_err(io("read", &full))?.0
            }
        };
        lines.push((relative, digest));
    }
    if let [(_, digest)] = lines.as_slice() {
        return Ok(digest.clone());
    }
    let mut hasher = Sha256::new();
    for (relative, digest) in &lines {
        hasher.update(format!("{digest}  {relative}\n").as_bytes());
    }
    Ok(hex::encode(hasher.finalize()))
}
