use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Result, bail};
use bankbridge_store::Connection;
use bankbridge_sync::{SyncSummary, Syncer};
use serde_json::json;

use crate::config::Config;
use crate::ui::SyncProgress;

#[derive(clap::Args, Debug)]
pub struct SyncArgs {
    /// Sync only this connection (name or id); default: all.
    #[arg(long)]
    pub connection: Option<String>,
    /// Print one JSON summary per connection instead of text.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(config: &Config, args: SyncArgs) -> Result<ExitCode> {
    let (store, syncer) = super::open(config).await?;
    let connections = match &args.connection {
        Some(name) => match store.find_connection(name).await? {
            Some(c) => vec![c],
            None => bail!("no connection named {name:?}; see `bankbridge connection list`"),
        },
        None => store.list_connections().await?,
    };
    if connections.is_empty() {
        bail!("no connections yet; add one with `bankbridge connection add`");
    }
    let mut failed = false;
    for connection in &connections {
        let hidden = args.json || !std::io::stderr().is_terminal();
        match sync_one(&syncer, connection, hidden).await {
            Ok(summary) => {
                if args.json {
                    println!("{}", summary_json(&summary, None));
                } else {
                    println!(
                        "{}: {} inserted, {} updated, {} unchanged, {} voided over {} windows in {} accounts",
                        summary.connection,
                        summary.inserted,
                        summary.updated,
                        summary.unchanged,
                        summary.voided,
                        summary.windows,
                        summary.accounts
                    );
                }
            }
            Err(e) => {
                failed = true;
                if args.json {
                    let empty = SyncSummary {
                        connection: connection.name.clone(),
                        ..Default::default()
                    };
                    println!("{}", summary_json(&empty, Some(&e)));
                } else {
                    eprintln!("{}: sync failed: {e}", connection.name);
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Sync one connection with a progress line on stderr.
pub async fn sync_one(
    syncer: &Syncer,
    connection: &Connection,
    hidden: bool,
) -> Result<SyncSummary, bankbridge_sync::SyncError> {
    let progress = SyncProgress::new(&connection.name, hidden);
    let p = progress.clone();
    let result = syncer.sync(connection, &move |e| p.on_event(e)).await;
    match &result {
        Ok(s) => progress.finish(format!(
            "done · {} new, {} updated, {} voided",
            s.inserted, s.updated, s.voided
        )),
        Err(e) => progress.abandon(format!("failed: {e}")),
    }
    result
}

fn summary_json(s: &SyncSummary, error: Option<&bankbridge_sync::SyncError>) -> serde_json::Value {
    let mut v = json!({
        "connection": s.connection,
        "inserted": s.inserted,
        "updated": s.updated,
        "unchanged": s.unchanged,
        "voided": s.voided,
        "windows": s.windows,
        "accounts": s.accounts,
        "status": if error.is_some() { "failed" } else { "ok" },
    });
    if let Some(e) = error {
        v["error"] = json!(e.to_string());
        if matches!(
            e,
            bankbridge_sync::SyncError::Connector(bankbridge_core::ConnectorError::ScaRequired(_))
        ) {
            v["status"] = json!("needs_user");
        }
    }
    v
}
