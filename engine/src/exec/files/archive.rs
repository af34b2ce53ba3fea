//! Tar archives of workspace files, made and opened by the engine itself (outside the step
//! sandbox), so everything a step left in its workspace is treated as hostile:
//!
//! - collecting never follows a symbolic link: a link is archived as a link, and one whose
//!   target leaves the workspace (absolute, or `..` past the top) is refused;
//! - extracting accepts only plain relative names (no `..`, no absolute path), regular files,
//!   directories and links that stay inside the root; it never writes through a link already
//!   in the root (a parent that is a link is refused, a file or link in the way is replaced),
//!   and clears set-uid bits. Hard links, devices and FIFOs are refused.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use globset::GlobBuilder;
use sha2::{Digest, Sha256};

use super::error::{Error, Result, io};
use crate::store::ArtifactFile;

/// One thing to archive, by its path relative to the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    File,
    Directory,
    Link(String),
}

/// What patterns matched: relative path → entry, sorted, each once.
pub type Collected = BTreeMap<String, Entry>;

/// Collects what `patterns` (checked by `pipeline::workspace_pattern`) match under `root`.
/// A directory brings everything below it. With `require_each`, a pattern matching nothing
/// is an error naming it; otherwise it adds nothing.
pub fn collect(root: &Path, patterns: &[String], require_each: bool) -> Result<Collected> {
    let mut collected = Collected::new();
    for pattern in patterns {
        let before = collected.len();
        let mut matched = false;
        if pattern.contains(['*', '?', '[', '{', '\\']) {
            let matcher = GlobBuilder::new(pattern)
                .literal_separator(true)
                .build()
                .map_err(|error| Error::UnsafeEntry {
                    entry: pattern.clone(),
                    reason: error.kind().to_string(),
                })?
                .compile_matcher();
            // Walk only below the pattern's literal leading directories.
            let literal: Vec<&str> = pattern
                .split('/')
                .take_while(|part| !part.contains(['*', '?', '[', '{', '\\']))
                .collect();
            let base = literal.join("/");
            let mut stack = vec![base];
            while let Some(directory) = stack.pop() {
                let full = root.join(&directory);
                let Ok(entries) = fs::read_dir(&full) else {
                    continue;
                };
                for entry in entries {
                    let entry = entry.map_err(io("read", &full))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if directory.is_empty() && name == ".git" {
                        continue;
                    }
                    let relative = if directory.is_empty() {
                        name
                    } else {
                        format!("{directory}/{name}")
                    };
                    let is_directory = entry.file_type().is_ok_and(|kind| kind.is_dir());
                    if matcher.is_match(&relative) {
                        matched = true;
                        add(root, &relative, &mut collected)?;
                    } else if is_directory {
                        stack.push(relative);
                    }
                }
            }
        } else if fs::symlink_metadata(root.join(pattern)).is_ok() {
            matched = true;
            add(root, pattern, &mut collected)?;
        }
        if require_each && !matched && collected.len() == before {
            return Err(Error::NoMatch {
                pattern: pattern.clone(),
            });
        }
    }
    Ok(collected)
}

/// Adds `relative` and, for a directory, everything below it (links are not descended).
fn add(root: &Path, relative: &str, collected: &mut Collected) -> Result<()> {
    let mut stack = vec![relative.to_owned()];
    while let Some(relative) = stack.pop() {
        let full = root.join(&relative);
        let metadata = fs::symlink_metadata(&full).map_err(io("read", &full))?;
        let kind = metadata.file_type();
        if kind.is_symlink() {
            let target = fs::read_link(&full).map_err(io("read", &full))?;
            let target = target.to_string_lossy().into_owned();
            if !link_stays_inside(&relative, &target) {
                return Err(Error::LinkOutside {
                    path: relative,
                    target,
                });
            }
            collected.insert(relative, Entry::Link(target));
        } else if kind.is_dir() {
            for entry in fs::read_dir(&full).map_err(io("read", &full))? {
                let entry = entry.map_err(io("read", &full))?;
                stack.push(format!(
                    "{relative}/{}",
                    entry.file_name().to_string_lossy()
                ));
            }
            collected.insert(relative, Entry::Directory);
        } else if kind.is_file() {
            collected.insert(relative, Entry::File);
        }
        // FIFOs, sockets and devices are not files anyone hands on; they are left out.
    }
    Ok(())
}

/// Whether a link at `relative` pointing to `target` resolves inside the root, judged on the
/// names alone (never by following anything on disk).
fn link_stays_inside(relative: &str, target: &str) -> bool {
    if target.starts_with('/') || target.is_empty() {
        return false;
    }
    // The link's own directory, then the target's parts.
    let mut depth: Vec<&str> = relative.split('/').collect();
    depth.pop();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            other => depth.push(other),
        }
    }
    true
}

/// Writes `collected` as a tar to `out`; returns the regular files with their sizes and
/// SHA-256 (what `cairn artifacts list` shows).
pub fn write_tar(root: &Path, collected: &Collected, out: impl Write) -> Result<Vec<ArtifactFile>> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut files = Vec::new();
    let archive_error = |source| Error::Archive { source };
    for (relative, entry) in collected {
        let full = root.join(relative);
        let metadata = fs::symlink_metadata(&full).map_err(io("read", &full))?;
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&metadata, tar::HeaderMode::Complete);
        match entry {
            Entry::Directory => {
                header.set_size(0);
                builder
                    .append_data(&mut header, relative, std::io::empty())
                    .map_err(archive_error)?;
            }
            Entry::Link(target) => {
                header.set_size(0);
                builder
                    .append_link(&mut header, relative, target)
                    .map_err(archive_error)?;
            }
            Entry::File => {
                let file = File::open(&full).map_err(io("read", &full))?;
                let size = metadata.len();
                header.set_size(size);
                let mut hashing = Hashing {
                    inner: file.take(size),
                    hasher: Sha256::new(),
                };
                builder
                    .append_data(&mut header, relative, &mut hashing)
                    .map_err(archive_error)?;
                files.push(ArtifactFile {
                    path: relative.clone(),
                    size,
                    sha256: hex::encode(hashing.hasher.finalize()),
                });
            }
        }
    }
    builder
        .into_inner()
        .and_then(|mut out| out.flush())
        .map_err(archive_error)?;
    Ok(files)
}

struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buffer)?;
        self.hasher.update(&buffer[..read]);
        Ok(read)
    }
}

/// What an extraction wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extracted {
    pub files: usize,
    pub bytes: u64,
}

/// Extracts `archive` into `root` under the rules in the module doc. An unsafe entry stops
/// the extraction with an error naming it; entries before it stay written.
pub fn extract(archive: impl Read, root: &Path) -> Result<Extracted> {
    fs::create_dir_all(root).map_err(io("create", root))?;
    let mut archive = tar::Archive::new(archive);
    let mut extracted = Extracted::default();
    let archive_error = |source| Error::Archive { source };
    for entry in archive.entries().map_err(archive_error)? {
        let mut entry = entry.map_err(archive_error)?;
        let name = entry.path().map_err(archive_error)?.into_owned();
        let shown = name.display().to_string();
        let unsafe_entry = |reason: &str| Error::UnsafeEntry {
            entry: shown.clone(),
            reason: reason.to_owned(),
        };
        let relative = plain_relative(&name).map_err(unsafe_entry)?;
        let Some(relative) = relative else {
            continue;
        };
        let kind = entry.header().entry_type();
        let destination = root.join(&relative);
        match kind {
            tar::EntryType::Directory => {
                make_directories(root, &relative).map_err(|reason| unsafe_entry(&reason))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                prepare_place(root, &relative).map_err(|reason| unsafe_entry(&reason))?;
                let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&destination)
                    .map_err(io("create", &destination))?;
                let bytes = std::io::copy(&mut entry, &mut file).map_err(archive_error)?;
                // The umask may have cut the mode; restore what was archived.
                let _ = file.set_permissions(fs::Permissions::from_mode(mode));
                if let Ok(mtime) = entry.header().mtime() {
                    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime);
                    let _ = file.set_modified(at);
                }
                extracted.files += 1;
                extracted.bytes += bytes;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(archive_error)?
                    .map(|target| target.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let relative_text = relative.to_string_lossy();
                if !link_stays_inside(&relative_text, &target) {
                    return Err(unsafe_entry(&format!(
                        "a symbolic link to `{target}`, outside the workspace"
                    )));
                }
                prepare_place(root, &relative).map_err(|reason| unsafe_entry(&reason))?;
                std::os::unix::fs::symlink(&target, &destination)
                    .map_err(io("create", &destination))?;
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            other => {
                return Err(unsafe_entry(&format!(
                    "entries of type {other:?} (hard links, devices, FIFOs) are not extracted"
                )));
            }
        }
    }
    Ok(extracted)
}

/// The entry's name as plain relative components; `None` for the root itself.
fn plain_relative(name: &Path) -> std::result::Result<Option<PathBuf>, &'static str> {
    let mut relative = PathBuf::new();
    for component in name.components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("its name leaves the root with `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("its name is absolute"),
        }
    }
    Ok((!relative.as_os_str().is_empty()).then_some(relative))
}

/// Makes `relative` and its parents as real directories under `root`; a link (or a file)
/// where a directory must be is refused, never followed.
fn make_directories(root: &Path, relative: &Path) -> std::result::Result<(), String> {
    let mut path = root.to_path_buf();
    for component in relative.components() {
        path.push(component);
        match fs::symlink_metadata(&path) {
            Ok(metadata) if metadata.file_type().is_dir() => {}
            Ok(metadata) if metadata.file_type().is_symlink() => {
                return Err(format!(
                    "`{}` in the destination is a symbolic link; nothing is written through one",
                    path.strip_prefix(root).unwrap_or(&path).display()
                ));
            }
            Ok(_) => {
                return Err(format!(
                    "`{}` in the destination is a file where a directory is needed",
                    path.strip_prefix(root).unwrap_or(&path).display()
                ));
            }
            Err(_) => fs::create_dir(&path)
                .or_else(|error| match fs::symlink_metadata(&path) {
                    Ok(metadata) if metadata.is_dir() => Ok(()),
                    _ => Err(error),
                })
                .map_err(|error| format!("failed to create {}: {error}", path.display()))?,
        }
    }
    Ok(())
}

/// Makes the parents of `relative` and clears its place: a file or link already there is
/// removed (a link is replaced, never written through); a directory is refused.
fn prepare_place(root: &Path, relative: &Path) -> std::result::Result<(), String> {
    if let Some(parent) = relative.parent() {
        make_directories(root, parent)?;
    }
    let destination = root.join(relative);
    match fs::symlink_metadata(&destination) {
        Ok(metadata) if metadata.is_dir() => Err(format!(
            "`{}` in the destination is a directory",
            relative.display()
        )),
        Ok(_) => fs::remove_file(&destination)
            .map_err(|error| format!("failed to replace {}: {error}", destination.display())),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    fn temporary(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "cairn-archive-{name}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        fs::create_dir_all(&path).unwrap();
        path
    }

    /// A tar with one entry whose name and type are written raw, as an attacker would.
    fn hostile_tar(name: &str, kind: tar::EntryType, link: Option<&str>, data: &[u8]) -> Vec<u8> {
        let mut header = tar::Header::new_gnu();
        {
            let gnu = header.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        }
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        if let Some(link) = link {
            header.set_link_name(link).unwrap();
        }
        header.set_cksum();
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(data);
        bytes.resize(bytes.len().div_ceil(512) * 512 + 1024, 0);
        bytes
    }

    #[test]
    fn entries_leaving_the_root_are_refused() {
        let root = temporary("dotdot");
        let outside = root.join("../escaped.txt");
        let error = extract(
            &hostile_tar("../escaped.txt", tar::EntryType::Regular, None, b"x")[..],
            &root.join("ws"),
        )
        .unwrap_err();
        assert!(error.to_string().contains("`..`"), "{error}");
        assert!(!outside.exists());
        let error = extract(
            &hostile_tar("/tmp/absolute.txt", tar::EntryType::Regular, None, b"x")[..],
            &root.join("ws"),
        )
        .unwrap_err();
        assert!(error.to_string().contains("absolute"), "{error}");
        let error = extract(
            &hostile_tar("dev", tar::EntryType::Char, None, b"")[..],
            &root.join("ws"),
        )
        .unwrap_err();
        assert!(error.to_string().contains("not extracted"), "{error}");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn links_outside_are_neither_extracted_nor_written_through() {
        let root = temporary("links");
        let workspace = root.join("ws");
        let secret_dir = root.join("outside");
        fs::create_dir_all(&secret_dir).unwrap();
        for target in ["/etc/passwd", "../../outside", "a/../../x"] {
            let error = extract(
                &hostile_tar("link", tar::EntryType::Symlink, Some(target), b"")[..],
                &workspace,
            )
            .unwrap_err();
            assert!(
                error.to_string().contains("outside the workspace"),
                "{error}"
            );
            assert!(fs::symlink_metadata(workspace.join("link")).is_err());
        }
        // A link the workspace already holds is never a way out.
        std::os::unix::fs::symlink(&secret_dir, workspace.join("dist")).unwrap();
        let error = extract(
            &hostile_tar("dist/out.txt", tar::EntryType::Regular, None, b"x")[..],
            &workspace,
        )
        .unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert!(!secret_dir.join("out.txt").exists());
        // A link in the place of a file is replaced, not followed.
        fs::remove_file(workspace.join("dist")).unwrap();
        std::os::unix::fs::symlink(secret_dir.join("victim"), workspace.join("f")).unwrap();
        extract(
            &hostile_tar("f", tar::EntryType::Regular, None, b"new")[..],
            &workspace,
        )
        .unwrap();
        assert_eq!(fs::read(workspace.join("f")).unwrap(), b"new");
        assert!(!secret_dir.join("victim").exists());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn collecting_keeps_inner_links_and_refuses_outer_ones() {
        let root = temporary("collect");
        fs::create_dir_all(root.join("dist/sub")).unwrap();
        fs::write(root.join("dist/sub/a.txt"), "a").unwrap();
        std::os::unix::fs::symlink("sub/a.txt", root.join("dist/inner")).unwrap();
        let collected = collect(&root, &["dist".into()], true).unwrap();
        assert_eq!(
            collected.get("dist/inner"),
            Some(&Entry::Link("sub/a.txt".into()))
        );
        assert_eq!(collected.get("dist/sub/a.txt"), Some(&Entry::File));
        std::os::unix::fs::symlink("/etc/passwd", root.join("dist/outer")).unwrap();
        let error = collect(&root, &["dist/*".into()], true).unwrap_err();
        assert!(matches!(error, Error::LinkOutside { .. }), "{error}");
        let error = collect(&root, &["nothing/*.txt".into()], true).unwrap_err();
        assert!(matches!(error, Error::NoMatch { .. }), "{error}");

        // A round trip keeps content, the inner link and the mode.
        fs::remove_file(root.join("dist/outer")).unwrap();
        let collected = collect(&root, &["dist/**".into()], true).unwrap();
        let mut tar = Vec::new();
        let files = write_tar(&root, &collected, &mut tar).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].sha256, hex::encode(Sha256::digest(b"a")));
        let copy = root.join("copy");
        let extracted = extract(&tar[..], &copy).unwrap();
        assert_eq!(extracted.files, 1);
        assert_eq!(fs::read_to_string(copy.join("dist/inner")).unwrap(), "a");
        fs::remove_dir_all(&root).unwrap();
    }
}
