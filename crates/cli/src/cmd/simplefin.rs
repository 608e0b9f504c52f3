//! `bankbridge simplefin token create|list|revoke`: SimpleFIN Tokens for
//! budgeting apps that pull from a SimpleFIN server (see
//! `bankbridge_server::simplefin`).
use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Subcommand;

use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum SimplefinCommand {
    /// SimpleFIN Tokens: create (shown once), list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a SimpleFIN Token for an app (Actual Budget, …): it reads only
    /// the accounts named, read-only, and is claimed once.
    #[command(
        after_help = "Examples:\n  bankbridge simplefin token create --name actual --account 1 --account 2 --url https://bankbridge.example:8443\n  bankbridge simplefin token create --name sure --all-accounts"
    )]
    Create {
        /// A name to recognise the token by (unique).
        #[arg(long)]
        name: String,
        /// An account the token may read (its id, as `accounts` lists); repeat for more.
        #[arg(
            long = "account",
            value_name = "ID",
            required_unless_present = "all_accounts"
        )]
        accounts: Vec<i64>,
        /// Every account there is now (accounts added later are not included).
        #[arg(long, conflicts_with = "accounts")]
        all_accounts: bool,
        /// Where the app reaches `serve` (default: the configured `listen`
        /// address, else http://127.0.0.1:8080). Use https beyond loopback.
        #[arg(long)]
        url: Option<String>,
    },
    /// List SimpleFIN tokens (never their secrets).
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id or name: its Access URL gets 403 from then on.
    Revoke {
        /// The token's id or name (as `simplefin token list` shows).
        token: String,
    },
}

pub async fn run(config: &Config, command: SimplefinCommand) -> Result<ExitCode> {
    let SimplefinCommand::Token(command) = command;
    let parts = config.parts().await?;
    let store = parts.outbound;
    match command {
        TokenCommand::Create {
            name,
            accounts,
            all_accounts,
            url,
        } => {
            let accounts = if all_accounts {
                parts
                    .bank
                    .list_accounts(None)
                    .await?
                    .into_iter()
                    .map(|a| a.id)
                    .collect()
            } else {
                accounts
            };
            let root = url.unwrap_or_else(|| {
                format!(
                    "http://{}",
                    config.file.listen.as_deref().unwrap_or("127.0.0.1:8080")
                )
            });
            let made = bankbridge_server::simplefin::create_token(
                store.as_ref(),
                parts.bank.as_ref(),
                &name,
                &accounts,
                &root,
                chrono::Utc::now(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "SimpleFIN Token {} for {} account(s), shown once; paste it into the app, which claims it once:",
                made.token.name,
                made.token.accounts.len()
            );
            println!("{}", made.setup_token);
        }
        TokenCommand::List { json } => {
            let tokens = store.list_simplefin_tokens().await?;
            let fmt = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_else(|| "-".into())
            };
            if json {
                let v: Vec<_> = tokens
                    .iter()
                    .map(|t| serde_json::json!({"id": t.id, "name": t.name, "accounts": t.accounts, "url": t.base_url, "created_at": t.created_at, "claimed_at": t.claimed_at, "last_used_at": t.last_used_at, "revoked_at": t.revoked_at}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let rows: Vec<Vec<String>> = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.clone(),
                            t.name.clone(),
                            t.accounts
                                .iter()
                                .map(i64::to_string)
                                .collect::<Vec<_>>()
                                .join(","),
                            fmt(Some(t.created_at)),
                            fmt(t.claimed_at),
                            fmt(t.last_used_at),
                            fmt(t.revoked_at),
                        ]
                    })
                    .collect();
                super::print_table(
                    &[
                        "ID",
                        "NAME",
                        "ACCOUNTS",
                        "CREATED",
                        "CLAIMED",
                        "LAST USED",
                        "REVOKED",
                    ],
                    &rows,
                );
            }
        }
        TokenCommand::Revoke { token } => {
            if !store
                .revoke_simplefin_token(&token, chrono::Utc::now())
                .await?
            {
                bail!("no SimpleFIN token with id or name {token:?}");
            }
            println!("revoked {token}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
