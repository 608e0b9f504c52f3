use std::process::ExitCode;

use anyhow::{Result, bail};
use bankbridge_store::Scope;
use clap::Subcommand;

use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create an API token; it is printed once and stored only as a hash.
    #[command(
        after_help = "Examples:\n  bankbridge token create --scope read --name airtable --expires 90d\n  bankbridge token create --scope agent --location eu-west\n  bankbridge token create --scope card-agent --host office-pi"
    )]
    Create {
        /// read: GET data; write: also sync and add connections; admin: everything;
        /// agent: only what a flow-check agent of one location does (take jobs, report results);
        /// card-agent: only what the card agent of one card host does (take its card jobs, answer them).
        #[arg(long, value_parser = ["read", "write", "admin", "agent", "card-agent"])]
        scope: String,
        /// A name to recognise the token by (unique).
        #[arg(long)]
        name: Option<String>,
        /// The check location an agent token serves, or the card host a
        /// card-agent token serves (required with those scopes): it may take
        /// and answer that location's or host's jobs only.
        #[arg(long, visible_alias = "host")]
        location: Option<String>,
        /// Stop working after this long: 90d, 12h, 30m (default: never).
        #[arg(long, value_parser = super::connection::parse_interval)]
        expires: Option<u64>,
        /// Also print a one-time link that signs a browser in to the
        /// dashboard with this token (works once, for 15 minutes).
        #[arg(long)]
        login: bool,
        /// Where the dashboard is reached, for --login's link (default: the
        /// configured `listen` address, else http://127.0.0.1:8080).
        #[arg(long, requires = "login")]
        url: Option<String>,
    },
    /// List tokens (never their secret).
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id or name.
    Revoke {
        /// The token's id or name (as `token list` shows).
        token: String,
    },
}

pub async fn run(config: &Config, command: TokenCommand) -> Result<ExitCode> {
    let store = config.parts().await?.tokens;
    match command {
        TokenCommand::Create {
            scope,
            name,
            location,
            expires,
            login,
            url,
        } => {
            let scope = Scope::parse(&scope).expect("clap restricts the values");
            if login && matches!(scope, Scope::Agent | Scope::CardAgent) {
                bail!(
                    "an agent token serves an agent and cannot sign in to the dashboard: drop --login"
                );
            }
            match (scope, &location) {
                (Scope::Agent, None) => bail!(
                    "an agent token serves one check location: add --location NAME (as in the flows' [locations])"
                ),
                (Scope::CardAgent, None) => bail!(
                    "a card-agent token serves one card host: add --host NAME (the name the card agent's cards are registered under)"
                ),
                (Scope::Agent | Scope::CardAgent, Some(l)) if l.trim().is_empty() => {
                    bail!("--location (--host) is empty")
                }
                (Scope::Agent | Scope::CardAgent, Some(_)) => {}
                (_, Some(_)) => bail!("--location (--host) is for agent tokens only"),
                (_, None) => {}
            }
            let name = name.unwrap_or_else(|| {
                format!(
                    "{}-{}",
                    scope.as_str(),
                    chrono::Utc::now().format("%Y%m%d%H%M%S")
                )
            });
            let (plain, mut record) = bankbridge_server::auth::new_token(&name, scope);
            record.location = location.map(|l| l.trim().to_owned());
            record.expires_at = match expires {
                Some(secs) => Some(
                    i64::try_from(secs)
                        .ok()
                        .and_then(chrono::TimeDelta::try_seconds)
                        .and_then(|d| record.created_at.checked_add_signed(d))
                        .ok_or_else(|| anyhow::anyhow!("--expires is too far in the future"))?,
                ),
                None => None,
            };
            store.create_token(&record).await?;
            let until = record
                .expires_at
                .map(|t| format!(", expires {}", t.format("%Y-%m-%d %H:%M UTC")))
                .unwrap_or_default();
            eprintln!(
                "token {} ({}{until}), shown once — keep it somewhere safe:",
                record.name,
                scope.as_str()
            );
            println!("{}", plain.expose());
            if login {
                let secret =
                    bankbridge_server::auth::new_login_link(store.as_ref(), &record.id).await?;
                let base = url.unwrap_or_else(|| {
                    format!(
                        "http://{}",
                        config.file.listen.as_deref().unwrap_or("127.0.0.1:8080")
                    )
                });
                eprintln!("one-time dashboard sign-in link (works once, for 15 minutes):");
                println!(
                    "{}/login/link/{}",
                    base.trim_end_matches('/'),
                    secret.expose()
                );
            }
        }
        TokenCommand::List { json } => {
            let tokens = store.list_tokens().await?;
            if json {
                let v: Vec<_> = tokens
                    .iter()
                    .map(|t| serde_json::json!({"id": t.id, "name": t.name, "scope": t.scope.as_str(), "location": t.location, "created_at": t.created_at, "last_used_at": t.last_used_at, "revoked_at": t.revoked_at, "expires_at": t.expires_at}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let fmt = |t: Option<chrono::DateTime<chrono::Utc>>| {
                    t.map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                        .unwrap_or_else(|| "-".into())
                };
                let rows: Vec<Vec<String>> = tokens
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.clone(),
                            t.name.clone(),
                            t.scope.as_str().into(),
                            fmt(Some(t.created_at)),
                            fmt(t.last_used_at),
                            fmt(t.revoked_at),
                            fmt(t.expires_at),
                        ]
                    })
                    .collect();
                super::print_table(
                    &[
                        "ID",
                        "NAME",
                        "SCOPE",
                        "CREATED",
                        "LAST USED",
                        "REVOKED",
                        "EXPIRES",
                    ],
                    &rows,
                );
            }
        }
        TokenCommand::Revoke { token } => {
            if !store.revoke_token(&token, chrono::Utc::now()).await? {
                bail!("no active token with id or name {token:?}");
            }
            println!("revoked {token}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
