//! Sealing and opening secrets. The key is 32 random bytes in `$CAIRN_HOME/secrets.key`
//! (mode 0600), made by the first `cairn secret set`; a copy of the database alone opens
//! nothing. Each value is sealed with a fresh random 24-byte nonce, with the secret's name as
//! associated data.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore as _;

use crate::store::Store;

/// The key file's name inside `$CAIRN_HOME`.
pub const KEY_FILE: &str = "secrets.key";
const KEY_BYTES: usize = 32;
const NONCE_BYTES: usize = 24;
/// A secret is a token or a password, not a file: bounded so a mistake (a binary piped in)
/// is refused rather than stored.
const MAX_VALUE_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "invalid secret name `{0}`: use letters, digits and `_`, not starting with a digit (it becomes an environment variable)"
    )]
    InvalidName(String),
    #[error(
        "secret `{0}` is not set; set it with `cairn secret set {0}` (the value is read from stdin)"
    )]
    Missing(String),
    #[error("the value of a secret must not be empty")]
    Empty,
    #[error("the value of a secret must not hold a NUL byte (it becomes an environment variable)")]
    Nul,
    #[error("the value of a secret must be at most {MAX_VALUE_BYTES} bytes, found {0}")]
    TooLong(usize),
    #[error("failed to read the secrets key {path}: {source}")]
    ReadKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "secrets are stored but their key {path} is missing: restore it from a backup of $CAIRN_HOME, or remove the secrets (`cairn secret rm NAME`) and set them again"
    )]
    KeyMissing { path: PathBuf },
    #[error("the secrets key {path} is damaged: expected {KEY_BYTES} bytes, found {found}")]
    BadKey { path: PathBuf, found: usize },
    #[error("failed to create the secrets key {path}: {source}")]
    CreateKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "secret `{name}` does not open with the key {path}: the key is not the one it was sealed with, or the stored row is damaged"
    )]
    Open { name: String, path: PathBuf },
    #[error("failed to seal secret `{0}`")]
    Seal(String),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// `name` as a secret name: an environment variable name.
pub fn check_name(name: &str) -> Result<(), Error> {
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_owned()))
    }
}

/// The secrets of one `$CAIRN_HOME`: the store's rows and the key file beside the database.
pub struct Vault {
    store: Store,
    key_path: PathBuf,
}

impl Vault {
    pub fn new(store: &Store) -> Vault {
        let home = store.path().parent().unwrap_or(Path::new("."));
        Vault {
            store: store.clone(),
            key_path: home.join(KEY_FILE),
        }
    }

    pub fn key_path(&self) -> &Path {
        &self.key_path
    }

    pub fn set(&self, name: &str, value: &str) -> Result<(), Error> {
        check_name(name)?;
        if value.is_empty() {
            return Err(Error::Empty);
        }
        if value.contains('\0') {
            return Err(Error::Nul);
        }
        if value.len() > MAX_VALUE_BYTES {
            return Err(Error::TooLong(value.len()));
        }
        let cipher = self.cipher(true)?;
        let mut nonce = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| Error::Seal(name.to_owned()))?;
        self.store.put_secret(name, &nonce, &sealed)?;
        Ok(())
    }

    /// Whether there was a secret of that name.
    pub fn remove(&self, name: &str) -> Result<bool, Error> {
        check_name(name)?;
        Ok(self.store.delete_secret(name)?)
    }

    /// Names and when each was last set (ms since the epoch); never values.
    pub fn list(&self) -> Result<Vec<(String, i64)>, Error> {
        Ok(self
            .store
            .secrets()?
            .into_iter()
            .map(|secret| (secret.name, secret.updated_at))
            .collect())
    }

    pub fn get(&self, name: &str) -> Result<String, Error> {
        let sealed = self
            .store
            .secret(name)?
            .ok_or_else(|| Error::Missing(name.to_owned()))?;
        self.open(&sealed)
    }

    /// Every secret's value (for masking and redaction).
    pub fn values(&self) -> Result<Vec<String>, Error> {
        let sealed = self.store.secrets()?;
        if sealed.is_empty() {
            return Ok(Vec::new());
        }
        sealed.iter().map(|secret| self.open(secret)).collect()
    }

    fn open(&self, sealed: &crate::store::SealedSecret) -> Result<String, Error> {
        let cipher = self.cipher(false)?;
        let failed = || Error::Open {
            name: sealed.name.clone(),
            path: self.key_path.clone(),
        };
        if sealed.nonce.len() != NONCE_BYTES {
            return Err(failed());
        }
        let plain = cipher
            .decrypt(
                XNonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: sealed.name.as_bytes(),
                },
            )
            .map_err(|_| failed())?;
        String::from_utf8(plain).map_err(|_| failed())
    }

    /// The cipher under the key file, which is made (0600, never overwritten) when `create`.
    fn cipher(&self, create: bool) -> Result<XChaCha20Poly1305, Error> {
        let key = match std::fs::read(&self.key_path) {
            Ok(key) => key,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound && create => {
                self.create_key()?
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::KeyMissing {
                    path: self.key_path.clone(),
                });
            }
            Err(source) => {
                return Err(Error::ReadKey {
                    path: self.key_path.clone(),
                    source,
                });
            }
        };
        XChaCha20Poly1305::new_from_slice(&key).map_err(|_| Error::BadKey {
            path: self.key_path.clone(),
            found: key.len(),
        })
    }

    fn create_key(&self) -> Result<Vec<u8>, Error> {
        let mut key = vec![0u8; KEY_BYTES];
        rand::rng().fill_bytes(&mut key);
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.key_path)
            .and_then(|mut file| {
                file.write_all(&key)?;
                file.sync_all()
            });
        match created {
            Ok(()) => Ok(key),
            // Another process made it first: use theirs.
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::read(&self.key_path).map_err(|source| Error::ReadKey {
                    path: self.key_path.clone(),
                    source,
                })
            }
            Err(source) => Err(Error::CreateKey {
                path: self.key_path.clone(),
                source,
            }),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_refuses_a_wrong_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("cairn.db")).unwrap();
        let vault = Vault::new(&store);
        vault.set("API_TOKEN", "hunter2-value").unwrap();
        assert_eq!(vault.get("API_TOKEN").unwrap(), "hunter2-value");
        let row = store.secret("API_TOKEN").unwrap().unwrap();
        assert!(!row.ciphertext.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(vault.list().unwrap()[0].0, "API_TOKEN");
        assert!(matches!(vault.get("OTHER"), Err(Error::Missing(_))));
        assert!(matches!(vault.set("1BAD", "x"), Err(Error::InvalidName(_))));
        assert!(matches!(vault.set("EMPTY", ""), Err(Error::Empty)));
        std::fs::write(vault.key_path(), [7u8; KEY_BYTES]).unwrap();
        let error = vault.get("API_TOKEN").unwrap_err().to_string();
        assert!(error.contains("does not open with the key"), "{error}");
        std::fs::remove_file(vault.key_path()).unwrap();
        assert!(matches!(
            vault.get("API_TOKEN"),
            Err(Error::KeyMissing { .. })
        ));
        assert!(vault.remove("API_TOKEN").unwrap());
        assert!(!vault.remove("API_TOKEN").unwrap());
    }
}
