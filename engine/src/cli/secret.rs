//! `cairn secret set NAME` (the value from stdin), `cairn secret list`, `cairn secret rm NAME`:
//! the secrets `run:` steps are given (`secrets:`, `${{ secrets.NAME }}`), sealed in the state
//! database under `$CAIRN_HOME/secrets.key`. Values are never printed.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{Context, Result};

use cairn_engine::secrets::{Error as SecretError, Vault};

use super::Invalid;
use super::settings::Settings;

#[derive(clap::Args)]
pub struct SecretArgs {
    #[command(subcommand)]
    pub command: SecretCommand,
}

#[derive(clap::Subcommand)]
pub enum SecretCommand {
    /// Store a secret; its value is read from stdin (one trailing newline is dropped).
    Set { name: String },
    /// The names of the stored secrets and when each was set (never their values).
    List,
    /// Delete a secret.
    Rm { name: String },
}

/// Mistakes in what was asked (a bad name, an empty value, an unknown secret) are exit 2.
fn classify(error: SecretError) -> anyhow::Error {
    match error {
        SecretError::InvalidName(_)
        | SecretError::Missing(_)
        | SecretError::Empty
        | SecretError::Nul
        | SecretError::TooLong(_) => Invalid(error.to_string()).into(),
        other => other.into(),
    }
}

pub fn secret(home: Option<PathBuf>, args: &SecretArgs) -> Result<()> {
    let store = Settings::resolve(home, None)?.open_store()?;
    let vault = Vault::new(&store);
    match &args.command {
        SecretCommand::Set { name } => {
            cairn_engine::secrets::check_name(name).map_err(classify)?;
            let mut value = String::new();
            std::io::stdin()
                .take(64 * 1024 + 2)
                .read_to_string(&mut value)
                .context("failed to read the secret's value from stdin (it must be UTF-8 text)")?;
            let value = value
                .strip_suffix("\r\n")
                .or_else(|| value.strip_suffix('\n'))
                .unwrap_or(&value);
            vault.set(name, value).map_err(classify)?;
            eprintln!("secret `{name}` stored ({} bytes, sealed)", value.len());
        }
        SecretCommand::List => {
            let secrets = vault.list().map_err(classify)?;
            if secrets.is_empty() {
                eprintln!("no secrets stored; `cairn secret set NAME` stores one");
            }
            for (name, updated_at) in secrets {
                let when = chrono::DateTime::from_timestamp_millis(updated_at)
                    .map(|at| at.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_default();
                println!("{name}\t{when}");
            }
        }
        SecretCommand::Rm { name } => {
            if !vault.remove(name).map_err(classify)? {
                return Err(Invalid(format!("no secret `{name}`")).into());
            }
            eprintln!("secret `{name}` removed");
        }
    }
    Ok(())
}
