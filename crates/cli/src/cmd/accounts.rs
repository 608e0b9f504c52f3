//! `bankbridge accounts`: what a person looks for first, each account with
//! its IBAN, currency, balance now and when its connection last synced.
use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::config::Config;

#[derive(clap::Args, Debug)]
pub struct AccountsArgs {
    /// Only the accounts of this connection (name or id).
    #[arg(long)]
    pub connection: Option<String>,
    /// One JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config: &Config, args: AccountsArgs) -> Result<ExitCode> {
    let store = config.parts().await?;
    let connections = store.connections.list_connections().await?;
    let only = match &args.connection {
        Some(name) => match store.connections.find_connection(name).await? {
            Some(c) => Some(c.id),
            None => bail!("no connection named {name:?}; see `bankbridge connection list`"),
        },
        None => None,
    };
    let mut items = Vec::new();
    for account in store.bank.list_accounts(only).await? {
        let balances = store.bank.list_balances(account.id).await?;
        let balance = bankbridge_store::current_balance(&balances).cloned();
        let connection = connections.iter().find(|c| c.id == account.connection_id);
        items.push((account, balance, connection));
    }
    if args.json {
        let json: Vec<_> = items
            .iter()
            .map(|(a, b, c)| {
                let mut v = serde_json::to_value(a).unwrap_or_default();
                v["balance"] = serde_json::to_value(b).unwrap_or_default();
                v["connection"] = c.map(|c| c.name.clone()).into();
                v["last_sync_at"] =
                    serde_json::to_value(c.and_then(|c| c.last_sync_at)).unwrap_or_default();
                v
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|(a, b, c)| {
            vec![
                a.id.to_string(),
                c.map(|c| c.name.clone()).unwrap_or_default(),
                super::truncate(&a.display_name(), 28),
                a.iban
                    .as_ref()
                    .map(|i| i.as_str().to_owned())
                    .unwrap_or_default(),
                a.currency.to_string(),
                b.as_ref()
                    .map(|b| b.balance.amount.to_string())
                    .unwrap_or_else(|| "-".into()),
                b.as_ref()
                    .map(|b| b.balance.reference_date.to_string())
                    .unwrap_or_else(|| "-".into()),
                c.and_then(|c| c.last_sync_at)
                    .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
                    .unwrap_or_else(|| "never".into()),
            ]
        })
        .collect();
    if rows.is_empty() {
        eprintln!(
            "no accounts yet: add a connection and sync it (`bankbridge connection add --help`)"
        );
        return Ok(ExitCode::SUCCESS);
    }
    super::print_table_aligned(
        &[
            "ID",
            "CONNECTION",
            "NAME",
            "IBAN",
            "CCY",
            "BALANCE",
            "AS OF",
            "LAST SYNC",
        ],
        &rows,
        &[0, 5],
    );
    Ok(ExitCode::SUCCESS)
}
