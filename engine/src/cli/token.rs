//! `cairn token create|list|revoke`: API tokens of `cairn serve --listen`. A new token is
//! printed once (to stdout); the store keeps only its SHA-256.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use cairn_engine::api::{Scope, hash_token, new_token};

use super::EXIT_INVALID;
use super::settings::Settings;

#[derive(clap::Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Make a token and print it once.
    Create {
        /// `read` (everything the API shows) or `write` (also start, cancel, resume runs).
        #[arg(long, value_parser = ["read", "write"])]
        scope: String,
        /// What the token is for (shown by `cairn token list`).
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List live tokens (never the tokens themselves).
    List,
    /// Revoke a token by its id.
    Revoke { id: i64 },
}

pub fn token(home: Option<PathBuf>, args: &TokenArgs) -> Result<ExitCode> {
    let store = Settings::resolve(home, None)?.open_store()?;
    match &args.command {
        TokenCommand::Create { scope, name } => {
            let Some(scope) = Scope::parse(scope) else {
                eprintln!("error: --scope must be read or write, not `{scope}`");
                return Ok(ExitCode::from(EXIT_INVALID));
            };
            let token = new_token();
            let id =
                store.write(|txn| txn.create_token(name, scope.as_str(), &hash_token(&token)))?;
            println!("{token}");
            eprintln!(
                "token {id} ({} scope) created; it is shown only now, keep it somewhere safe",
                scope.as_str()
            );
        }
        TokenCommand::List => {
            for token in store.tokens()? {
                println!(
                    "{:>4}  {:<5}  {}",
                    token.id,
                    token.scope,
                    if token.name.is_empty() {
                        "-"
                    } else {
                        &token.name
                    }
                );
            }
        }
        TokenCommand::Revoke { id } => {
            if !store.write(|txn| txn.revoke_token(*id))? {
                eprintln!("error: there is no live token {id}");
                return Ok(ExitCode::from(EXIT_INVALID));
            }
            eprintln!("token {id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}
