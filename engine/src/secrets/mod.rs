//! Secrets a workflow's steps need (tokens, passwords): stored sealed in the state database
//! (`vault.rs`, XChaCha20-Poly1305 under a key file in `$CAIRN_HOME`), handed to `run:` steps
//! as environment variables only, and masked wherever a step's words are kept (`mask.rs`:
//! logs, outputs, errors) or sent (model prompts). See `ARCHITECTURE.md` ("Secrets").

mod mask;
mod vault;

pub use mask::Masker;
pub use vault::{Error, KEY_FILE, Vault, check_name};
