//! The build context: the checkout (or `with: context:` inside it) as a tar archive, minus
//! what `.dockerignore` excludes. As with `docker build`, the Dockerfile and `.dockerignore`
//! are always sent, even when ignored, because the engine needs them.
//!
//! The archive is built in memory: contexts are source trees, and the engine needs the whole
//! archive before it starts anyway.

use std::path::{Path, PathBuf};

use super::dockerignore::Dockerignore;
use super::error::Error;

pub struct BuildContext {
    pub archive: Vec<u8>,
    pub files: usize,
    /// Bytes of file content sent (before tar framing).
    pub bytes: u64,
    pub excluded: usize,
    pub has_dockerignore: bool,
}

/// [`archive_with`] on a blocking thread: it walks and reads the whole tree.
pub async fn archive_blocking(
    root: &Path,
    dockerfile: &str,
    given: Vec<(String, Vec<u8>)>,
) -> Result<BuildContext, Error> {
    let (dir, name) = (root.to_path_buf(), dockerfile.to_string());
    tokio::task::spawn_blocking(move || archive_with(&dir, &name, &given))
        .await
        .map_err(|e| Error::Context {
            path: root.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })?
}

/// Archives `root` (`dockerfile` is the Dockerfile's path relative to it), with some files'
/// content given instead of read (added when missing): a proposed Dockerfile, or a probe file
/// that stands for an application change, built from the same checkout without writing into
/// it.
pub fn archive_with(
    root: &Path,
    dockerfile: &str,
    given: &[(String, Vec<u8>)],
) -> Result<BuildContext, Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Context { path, source }
    };
    let ignore_path = root.join(".dockerignore");
    let has_dockerignore = ignore_path.is_file();
    let ignore = if has_dockerignore {
        let text = std::fs::read_to_string(&ignore_path).map_err(io(&ignore_path))?;
        Dockerignore::parse(&text).map_err(|message| Error::Context {
            path: ignore_path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, message),
        })?
    } else {
        Dockerignore::empty()
    };
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    let mut context = BuildContext {
        archive: Vec::new(),
        files: 0,
        bytes: 0,
        excluded: 0,
        has_dockerignore,
    };
    let always = [dockerfile.to_string(), ".dockerignore".to_string()];
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let dir = root.join(&relative);
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(io(&dir))?
            .collect::<Result<_, _>>()
            .map_err(io(&dir))?;
        // Sorted, so the same tree always makes the same archive.
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = relative.join(entry.file_name());
            let name = path.to_string_lossy().replace('\\', "/");
            let file_type = entry.file_type().map_err(io(&entry.path()))?;
            let excluded = ignore.excludes(&name) && !always.contains(&name);
            if file_type.is_dir() {
                if excluded && !ignore.has_exceptions() {
                    context.excluded += 1;
                    continue;
                }
                if !excluded {
                    builder
                        .append_dir(&path, entry.path())
                        .map_err(io(&entry.path()))?;
                }
                stack.push(path);
                continue;
            }
            if excluded {
                context.excluded += 1;
                continue;
            }
            if let Some((_, data)) = given.iter().find(|(n, _)| *n == name) {
                append_data(&mut builder, &name, data).map_err(io(&entry.path()))?;
                context.files += 1;
                context.bytes += data.len() as u64;
                continue;
            }
            builder
                .append_path_with_name(entry.path(), &path)
                .map_err(io(&entry.path()))?;
            context.files += 1;
            if file_type.is_file() {
                context.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    if !root.join(dockerfile).is_file() {
        return Err(Error::NoDockerfile(root.join(dockerfile)));
    }
    for (name, data) in given {
        if !root.join(name).is_file() {
            append_data(&mut builder, name, data).map_err(io(root))?;
            context.files += 1;
            context.bytes += data.len() as u64;
        }
    }
    context.archive = builder.into_inner().map_err(io(root))?;
    Ok(context)
}

fn append_data(
    builder: &mut tar::Builder<Vec<u8>>,
    name: &str,
    data: &[u8],
) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    builder.append_data(&mut header, name, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respects_dockerignore_but_keeps_the_dockerfile() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for (path, text) in [
            ("Dockerfile", "FROM scratch\n"),
            (".dockerignore", "Dockerfile\nsecret.env\ntarget\n"),
            ("secret.env", "TOKEN=1"),
            ("target/app", "binary"),
            ("src/main.c", "int main(){}"),
        ] {
            let full = root.join(path);
            std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
            std::fs::write(full, text).expect("write");
        }
        let context = archive_with(root, "Dockerfile", &[]).expect("archive");
        let mut names: Vec<String> = tar::Archive::new(context.archive.as_slice())
            .entries()
            .expect("entries")
            .map(|e| {
                e.expect("entry")
                    .path()
                    .expect("path")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![".dockerignore", "Dockerfile", "src", "src/main.c"]
        );
        assert_eq!(context.excluded, 2);
        assert!(context.has_dockerignore);
    }

    #[test]
    fn missing_dockerfile_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let error = archive_with(dir.path(), "Dockerfile", &[])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("no Dockerfile at"), "{error}");
    }
}
