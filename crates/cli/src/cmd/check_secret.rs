//! `bankbridge check secret set|list|delete`: the secrets flows name with
//! `{ secret = "name" }`, sealed with this data directory's master key in
//! its database (the same store `serve` reads). Values are never printed.
use std::process::ExitCode;

use anyhow::{Result, bail};
use bankbridge_server::check_secrets::CheckSecrets;
use clap::Subcommand;

use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum SecretCommand {
    /// Store (or replace) a secret; the value is read from a prompt or standard input.
    #[command(
        after_help = "Example: echo \"$XS2A_TOKEN\" | bankbridge check secret set xs2a-api-token --stdin"
    )]
    Set {
        /// 1 to 100 of A-Z a-z 0-9 _ - .
        name: String,
        /// Read the value from standard input (first line) instead of a prompt.
        #[arg(long)]
        stdin: bool,
    },
    /// List the stored secrets' names (never their values).
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete a secret.
    Delete {
        /// The secret's name.
        name: String,
    },
}

pub async fn run(config: &Config, command: SecretCommand) -> Result<ExitCode> {
    let (key, store) = config.keyed_store().await?;
    let secrets = CheckSecrets::new(store, key);
    match command {
        SecretCommand::Set { name, stdin } => {
            if !bankbridge_store::checks::valid_secret_name(&name) {
                bail!("secret name {name:?}: use 1 to 100 of A-Z a-z 0-9 _ - .");
            }
            let value = super::connection::read_password(stdin, &format!("value of {name}: "))?;
            let (created, _) = secrets.put(&name, &value).await?;
            eprintln!(
                "secret {name} {}",
                if created { "stored" } else { "replaced" }
            );
        }
        SecretCommand::List { json } => {
            let list = secrets.list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if list.is_empty() {
                eprintln!("no secrets stored");
            } else {
                println!("{:<40} UPDATED", "NAME");
                for s in list {
                    println!(
                        "{:<40} {}",
                        s.name,
                        s.updated_at.format("%Y-%m-%d %H:%M:%S UTC")
                    );
                }
            }
        }
        SecretCommand::Delete { name } => {
            if !secrets.delete(&name).await? {
                bail!("no secret {name:?}");
            }
            eprintln!("secret {name} deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}
